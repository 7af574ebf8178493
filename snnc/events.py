"""Event streams (DVS, N-MNIST, cochlea spikes) binned into the network's T steps (docs/data.md).

The binning is tonic's ToFrame(n_time_bins=T): per sample, with t0 and t1 its first and last event
times, the window is (t1 - t0) // T (integer division) and step i counts the events with
t0 + i*window <= t < t0 + (i+1)*window, per polarity and pixel; events at or after t0 + T*window
(the remainder, the last event among them) are dropped, and a sample shorter than T time units
(window 0) gives empty frames, as tonic does. A sensor with one polarity ignores p. Counts are
clipped to the largest unit the input takes (1 for spikes, 255 for 8-bit graded input).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from snnc import encoding as units_of
from snnc.data import InputSet, InputSpec, check_layout
from snnc.data_files import labels_of, rows_per_read
from snnc.errors import InputError


def _sensor(source, two_d: bool) -> tuple[int, int, int]:
    """sensor_size as tonic writes it, (W, H, P) (H = 1 for a 1-D sensor; (X, P) is accepted too)."""
    where = f"{source.path}: 'sensor_size'"
    size = source.read_all("sensor_size")
    if size is None:
        raise InputError(f"{source.path}: events need 'sensor_size' (W, H, P) as tonic gives it")
    size = np.asarray(size).reshape(-1)
    if size.dtype.kind not in "iu" or len(size) not in (2, 3) or (size < 1).any():
        raise InputError(f"{where} must be 2 or 3 positive integers (W, H, P), got {size.tolist()}")
    if len(size) == 2:
        if two_d:
            raise InputError(f"{where}: events with a 'y' field need (W, H, P), got {size.tolist()}")
        size = np.array([size[0], 1, size[1]])
    if not two_d and size[1] != 1:
        raise InputError(f"{where}: events without a 'y' field need H = 1, got {size.tolist()}")
    return int(size[0]), int(size[1]), int(size[2])


def _fields(where: str, events) -> tuple[bool, tuple[str, ...]]:
    names = events.dtype.names or ()
    needed = ("sample", "t", "x", "p")
    missing = [name for name in needed if name not in names]
    if missing:
        raise InputError(f"{where} must be a structured array with integer fields sample, t, x, p "
                         f"(and y for 2-D sensors); missing {', '.join(missing)}")
    two_d = "y" in names
    fields = needed + (("y",) if two_d else ())
    wrong = [name for name in fields if events.dtype[name].kind not in "iu"]
    if wrong or len(events.shape) != 1:
        raise InputError(f"{where}: fields {', '.join(wrong or fields)} must be integers in a 1-D array")
    return two_d, fields


def _columns(block, fields) -> dict[str, np.ndarray]:
    return {name: np.asarray(block[name]).astype(np.int64) for name in fields}


def events_set(source, events, spec: InputSpec, samples: Optional[int]) -> InputSet:
    """An InputSet of event streams; every event checked, and each sample's rows located, first."""
    where = f"{source.path}: 'events'"
    two_d, fields = _fields(where, events)
    width, height, polarities = _sensor(source, two_d)
    frame_shape = (polarities, height, width) if two_d else (polarities, width)
    check_layout(where, "bin into frames", frame_shape, spec)
    labels_array = source.get("labels")
    total = int(events.shape[0])
    step = rows_per_read(events)
    # one pass: every field in range, samples in non-decreasing order; events per sample
    per_sample = np.zeros(0, dtype=np.int64)
    previous = -1
    limits = {"x": width, "y": height, "p": polarities}
    for start in range(0, total, step):
        columns = _columns(events[start:min(total, start + step)], fields)
        sample = columns["sample"]
        if sample.size and (sample[0] < previous or (np.diff(sample) < 0).any()):
            raise InputError(f"{where} must be sorted by sample (numpy.sort(events, order=['sample', 't']))")
        if (sample < 0).any():
            raise InputError(f"{where}: sample numbers must be >= 0, got {int(sample.min())}")
        for name, limit in limits.items():
            if name not in columns or (name == "p" and polarities == 1):
                continue
            outside = (columns[name] < 0) | (columns[name] >= limit)
            if outside.any():
                raise InputError(f"{where}: event {start + int(np.argmax(outside))} has {name} = "
                                 f"{int(columns[name][outside][0])}, outside 0..{limit - 1} of sensor_size")
        if sample.size:
            previous = int(sample[-1])
            counts = np.bincount(sample)
            if len(counts) > len(per_sample):
                per_sample = np.pad(per_sample, (0, len(counts) - len(per_sample)))
            per_sample[:len(counts)] += counts
    in_file = len(per_sample) if labels_array is None or not labels_array.shape else int(labels_array.shape[0])
    if len(per_sample) > in_file:
        raise InputError(f"{where}: events of sample {len(per_sample) - 1}, but 'labels' has {in_file} entries")
    count, labels = labels_of(source, in_file, samples, spec)
    offsets = np.zeros(count + 1, dtype=np.int64)
    known = per_sample[:count]
    offsets[1:len(known) + 1] = np.cumsum(known)
    offsets[len(known) + 1:] = offsets[len(known)]
    top = units_of.unit_max(spec.encoding)

    def read_units(start, stop):
        columns = _columns(events[int(offsets[start]):int(offsets[stop])], fields)
        frames = bin_events(columns, start, stop - start, spec.T, frame_shape, top)
        return frames.reshape((spec.T, stop - start) + spec.shape)

    return InputSet(str(source.path), "events", spec, count, labels, read_units)


def bin_events(columns: dict[str, np.ndarray], first: int, count: int, steps: int, frame_shape, top: int) -> np.ndarray:
    """Counts per step, polarity and pixel [steps, count, *frame_shape] of samples first..first+count-1
    (columns sorted by sample), clipped to `top`."""
    frames = np.zeros((steps, count) + tuple(frame_shape), dtype=np.int64)
    local = columns["sample"] - first
    if local.size == 0:
        return frames
    t = columns["t"]
    t0 = np.full(count, np.iinfo(np.int64).max)
    t1 = np.full(count, np.iinfo(np.int64).min)
    np.minimum.at(t0, local, t)
    np.maximum.at(t1, local, t)
    window = np.where(t1 >= t0, (t1 - t0) // steps, 0)
    event_window = window[local]
    kept = event_window > 0
    bins = np.zeros_like(t)
    bins[kept] = (t[kept] - t0[local[kept]]) // event_window[kept]
    kept &= bins < steps
    polarity = columns["p"] if frame_shape[0] > 1 else np.zeros_like(t)
    index = (bins[kept], local[kept], polarity[kept]) + \
        ((columns["y"][kept], columns["x"][kept]) if len(frame_shape) == 3 else (columns["x"][kept],))
    np.add.at(frames, index, 1)
    return np.minimum(frames, top)
