"""--data sources (docs/data.md): files, events against tonic, random, the layout rule, bad files."""
import tracemalloc

import h5py
import numpy as np
import pytest
from tonic.transforms import ToFrame

from snnc import data, data_files
from snnc.data import InputSpec, fits_layout, open_inputs
from snnc.errors import InputError

from datafiles import BAD_FILES, DIRECT, EVENT_DTYPE, MNIST, NMNIST, SPIKES, images



def whole(inputs, size):
    return np.concatenate([units for _, units, _ in inputs.chunks(size)], axis=1)


def test_npz_frames_are_presented_at_every_step_in_chunks(tmp_path):
    frames, labels = images(7), np.arange(7) % 10
    np.savez(tmp_path / "f.npz", inputs=frames, labels=labels)
    inputs = open_inputs(str(tmp_path / "f.npz"), MNIST)
    assert (inputs.kind, inputs.count, inputs.origin) == ("frames", 7, str(tmp_path / "f.npz"))
    units = whole(inputs, 3)
    assert units.shape == (4, 7, 1, 28, 28) and units.dtype == np.int64
    for step in range(4):
        assert np.array_equal(units[step], frames)
    assert np.array_equal(inputs.labels, labels)
    assert np.array_equal(inputs.units(5, 7)[0], frames[5:7])


def test_flat_compressed_frames_fit_an_image_input_and_samples_cut(tmp_path):
    frames = images(6)
    np.savez_compressed(tmp_path / "flat.npz", inputs=frames.reshape(6, 784))
    inputs = open_inputs(str(tmp_path / "flat.npz"), MNIST, samples=4)
    assert inputs.count == 4 and inputs.labels is None
    assert np.array_equal(inputs.units()[2], frames[:4])


def test_hdf5_per_step_units_are_taken_as_they_are(tmp_path):
    steps = np.random.default_rng(1).integers(0, 256, (5, 4, 784))
    with h5py.File(tmp_path / "s.h5", "w") as handle:
        handle["inputs"] = steps
        handle["labels"] = np.array([1, 2, 3, 4, 5])
    inputs = open_inputs(str(tmp_path / "s.h5"), MNIST)
    assert inputs.kind == "steps"
    units = whole(inputs, 2)
    assert np.array_equal(units[:, 3].reshape(4, 784), steps[3])
    assert np.array_equal(units[2, 1].reshape(784), steps[1, 2])


def test_spike_encoded_frames_are_thresholded_at_128():
    net_spec = InputSpec((4,), 2, SPIKES, 2)
    frames = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    inputs = data.frames_set("x", net_spec, 1, None, lambda start, stop: frames[start:stop])
    assert inputs.units().tolist() == [[[0, 0, 1, 1]], [[0, 0, 1, 1]]]


@pytest.mark.parametrize("sample_shape, input_shape, fits", [
    ((784,), (1, 28, 28), True), ((1, 28, 28), (784,), True), ((28, 28), (1, 28, 28), True),
    ((1, 700), (700,), True), ((32, 32, 3), (3, 32, 32), False), ((28, 28), (1, 14, 56), False),
    ((783,), (1, 28, 28), False), ((2, 34, 34), (1, 28, 28), False)])
def test_layout_rule(sample_shape, input_shape, fits):
    assert fits_layout(sample_shape, input_shape) is fits


def random_events(rng, samples, sensor, two_d=True, per_sample=60):
    width, height, polarities = sensor
    rows = []
    for sample in range(samples):
        count = int(rng.integers(0, per_sample))
        if sample == 1:
            count = 0   # a sample without events
        event = np.zeros(count, EVENT_DTYPE)
        event["sample"], event["t"] = sample, rng.integers(0, 10_000, count)
        event["x"], event["y"] = rng.integers(0, width, count), rng.integers(0, height, count)
        event["p"] = rng.integers(0, polarities, count)
        rows.append(event)
    events = np.concatenate(rows)
    if not two_d:
        events = events[["sample", "t", "x", "p"]]
    return events


def tonic_frames(events, sensor, steps, two_d=True):
    """tonic's own ToFrame(n_time_bins) on one sample's events (sorted by t, as tonic needs)."""
    fields = [("x", "i8"), ("y", "i8"), ("t", "i8"), ("p", "i8")] if two_d else [("x", "i8"), ("t", "i8"), ("p", "i8")]
    order = np.argsort(events["t"], kind="stable")
    converted = np.zeros(len(events), fields)
    for name, _ in fields:
        converted[name] = events[name][order]
    return ToFrame(sensor_size=sensor, n_time_bins=steps)(converted)


@pytest.mark.parametrize("spec, top", [(NMNIST, 1), (InputSpec((2, 34, 34), 5, DIRECT, 10), 255)])
def test_events_bin_like_tonic_to_frame(tmp_path, spec, top):
    rng = np.random.default_rng(3)
    events = random_events(rng, 6, (34, 34, 2))
    events[:5]["x"] = 7   # several events on one pixel: counts above 1
    events[:5]["y"], events[:5]["p"] = 3, 0
    np.savez(tmp_path / "e.npz", events=events, sensor_size=np.array([34, 34, 2]), labels=np.arange(6))
    inputs = open_inputs(str(tmp_path / "e.npz"), spec)
    units = whole(inputs, 4)
    assert units.shape == (5, 6, 2, 34, 34) and inputs.kind == "events"
    for sample in range(6):
        mine = events[events["sample"] == sample]
        expected = tonic_frames(mine, (34, 34, 2), 5) if len(mine) else np.zeros((5, 2, 34, 34))
        assert np.array_equal(units[:, sample], np.minimum(expected, top)), sample
    assert (units.max() == 1) == (top == 1)   # clipped to one spike, or counts above 1


def test_one_dimensional_events_bin_like_tonic_and_fit_a_flat_input(tmp_path):
    rng = np.random.default_rng(4)
    events = random_events(rng, 3, (700, 1, 1), two_d=False, per_sample=400)
    with h5py.File(tmp_path / "shd.h5", "w") as handle:
        handle["events"] = events
        handle["sensor_size"] = np.array([700, 1, 1])
    spec = InputSpec((700,), 8, DIRECT, 20)
    units = open_inputs(str(tmp_path / "shd.h5"), spec).units()
    for sample in (0, 2):
        expected = tonic_frames(events[events["sample"] == sample], (700, 1, 1), 8, two_d=False)
        assert np.array_equal(units[:, sample], expected.reshape(8, 700))


def test_random_inputs_are_reproducible_and_cover_the_range():
    first = open_inputs("random:20:5", MNIST)
    assert first.origin == "random:20:5" and first.labels is None and first.count == 20
    units = first.units()
    assert np.array_equal(units, whole(open_inputs("random:20:5", MNIST), 7))
    assert np.array_equal(units[:, :3], open_inputs("random:3:5", MNIST).units())
    assert units.min() == 0 and units.max() == 255 and np.array_equal(units[0], units[3])
    assert not np.array_equal(units, open_inputs("random:20:6", MNIST).units())
    spikes = open_inputs("random", NMNIST).units()
    assert spikes.shape[1] == data.RANDOM_DEFAULT_COUNT and set(np.unique(spikes)) == {0, 1}
    assert not np.array_equal(spikes[0], spikes[1])   # fresh spikes at every step
    assert 0.45 < spikes.mean() < 0.55


def test_a_large_npz_is_read_in_chunks(tmp_path, monkeypatch):
    frames = images(2000)   # 1.5 MB
    np.savez(tmp_path / "big.npz", inputs=frames)
    monkeypatch.setattr(data_files, "CHECK_CHUNK_BYTES", 16 * 784)
    tracemalloc.start()
    inputs = open_inputs(str(tmp_path / "big.npz"), MNIST)
    last = inputs.units(1990, 2000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.array_equal(last[0], frames[1990:])
    assert peak < frames.nbytes / 8


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_files_are_one_line_errors(tmp_path, case):
    make, message = BAD_FILES[case]
    spec = NMNIST if "event" in case or case == "no sensor size" else MNIST
    path = make(tmp_path / "bad.npz")
    with pytest.raises(InputError) as error:
        inputs = open_inputs(path, spec)
        inputs.units()
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("random:0", "random:N"), ("random:x", "random:N"), ("random:1:2:3", "random:N"), ("random:5:-1", "SEED >= 0"),
    ("none", "only for export"), ("nosuch.npz", "no such data file"), ("mnist5k.csv", "no such data file"),
    ("", "must name")])
def test_bad_data_names(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        open_inputs(text, MNIST)


def test_unknown_suffix_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="data files are .npz, .h5 or .hdf5"):
        open_inputs(str(tmp_path / "x.csv"), MNIST)


def test_builtin_data_set_that_does_not_fit_names_both_shapes():
    with pytest.raises(InputError, match=r"data set mnist5k: has inputs shaped \[1, 28, 28\], the network's input is \[3, 32, 32\]"):
        open_inputs("mnist5k", InputSpec((3, 32, 32), 4, DIRECT, 10))


def test_mnist5k_in_cifar_shape_is_each_digit_padded_and_repeated_over_three_channels():
    cifar = InputSpec((3, 32, 32), 2, DIRECT, 10)
    shaped = open_inputs("mnist5k-3x32x32", cifar, samples=5, split="train")
    digits = open_inputs("mnist5k", InputSpec((1, 28, 28), 2, DIRECT, 10), samples=5, split="train")
    frames, originals = whole(shaped, 5)[0], whole(digits, 5)[0]
    assert frames.shape == (5, 3, 32, 32)
    for channel in range(3):
        assert np.array_equal(frames[:, channel, 2:30, 2:30], originals[:, 0])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not frames[:, :, border].any()
    assert np.array_equal(shaped.labels, digits.labels) and shaped.count == 5
    assert open_inputs("mnist5k-3x32x32", cifar).count == 1000   # the test split
