"""Data files for tests (docs/data.md): specs of two network inputs, images, and a table of bad
files, each with the fragment its one-line error must contain."""
import io
import pickle
import zipfile

import numpy as np

from snnc.data import InputSpec

DIRECT = {"kind": "direct", "scale": 1 / 255, "max": 255, "bits": 8}
SPIKES = {"kind": "spikes", "scale": 1.0, "max": 1, "bits": 1, "threshold": 128}
MNIST = InputSpec((1, 28, 28), 4, DIRECT, 10)
NMNIST = InputSpec((2, 34, 34), 5, SPIKES, 10)
EVENT_DTYPE = [("sample", "i4"), ("t", "i8"), ("x", "i2"), ("y", "i2"), ("p", "i1")]


def images(count, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count,) + shape, dtype=np.uint8)


def _events(sample=(0, 0), x=(1, 2)):
    events = np.zeros(2, EVENT_DTYPE)
    events["sample"], events["x"], events["t"] = sample, x, [0, 10]
    return events


def _truncated_npz(path):
    np.savez(path, inputs=images(4))
    blob = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        member = archive.read("inputs.npy")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("inputs.npy", member[:-100])
    return out.getvalue()


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


BAD_FILES = {
    "shape": (lambda p: write_npz(p, inputs=images(3, (3, 32, 32))), "shaped [3, 32, 32], the network's input is [1, 28, 28]"),
    "channels last": (lambda p: write_npz(p, inputs=images(3, (28, 28, 3))), "shaped [28, 28, 3]"),
    "steps": (lambda p: write_npz(p, inputs=np.zeros((3, 6, 1, 28, 28), np.uint8)), "6 steps per sample, the network runs T=4"),
    "dtype": (lambda p: write_npz(p, inputs=np.full((2, 1, 28, 28), "a")), "holds <U1"),
    "complex": (lambda p: write_npz(p, inputs=np.zeros((2, 1, 28, 28), np.complex64)), "holds complex64"),
    "nan": (lambda p: write_npz(p, inputs=np.where(np.arange(784 * 2).reshape(2, 1, 28, 28) == 900, np.nan, 1.0)),
            "sample 1 holds nan"),
    "fraction": (lambda p: write_npz(p, inputs=np.full((2, 1, 28, 28), 0.5)), "not a whole number"),
    "negative": (lambda p: write_npz(p, inputs=np.full((2, 1, 28, 28), -3, np.int16)), "holds -3; the network takes 0..255"),
    "too large": (lambda p: write_npz(p, inputs=np.full((2, 1, 28, 28), 256, np.int16)), "holds 256; the network takes 0..255"),
    "step range": (lambda p: write_npz(p, inputs=np.full((2, 4, 1, 28, 28), 300, np.int16)), "holds 300"),
    "no inputs": (lambda p: write_npz(p, labels=np.arange(3)), "no 'inputs' or 'events' array"),
    "both": (lambda p: write_npz(p, inputs=images(1), events=np.zeros(1, EVENT_DTYPE)), "holds both"),
    "labels length": (lambda p: write_npz(p, inputs=images(3), labels=np.arange(2)), "'labels' shaped [2], expected [3]"),
    "labels float": (lambda p: write_npz(p, inputs=images(3), labels=np.ones(3)), "'labels' must be integers"),
    "labels class": (lambda p: write_npz(p, inputs=images(3), labels=np.array([0, 10, 1])), "label 10 of sample 1"),
    "pickle": (lambda p: write_npz(p, inputs=np.array([{"a": 1}, None], dtype=object)), "a pickle"),
    "empty": (lambda p: (p.write_bytes(b""), str(p))[1], "the file is empty"),
    "not zip": (lambda p: (p.write_bytes(pickle.dumps({"inputs": 1})), str(p))[1], "not an .npz file"),
    "fortran": (lambda p: write_npz(p, inputs=np.asfortranarray(images(3).reshape(3, 784))), "Fortran order"),
    "truncated": (lambda p: (p.write_bytes(_truncated_npz(p)), str(p))[1], "truncated"),
    "unsorted events": (lambda p: write_npz(p, events=_events(sample=[1, 0]), sensor_size=np.array([34, 34, 2])),
                        "sorted by sample"),
    "event outside": (lambda p: write_npz(p, events=_events(x=[3, 40]), sensor_size=np.array([34, 34, 2])),
                      "x = 40, outside 0..33"),
    "no sensor size": (lambda p: write_npz(p, events=_events()), "need 'sensor_size'"),
    "event fields": (lambda p: write_npz(p, events=np.zeros(2, [("t", "i8"), ("x", "i2")]), sensor_size=np.array([34, 34, 2])),
                     "missing sample, p"),
    "event labels": (lambda p: write_npz(p, events=_events(sample=[0, 2]), sensor_size=np.array([34, 34, 2]),
                                         labels=np.array([1, 2])), "events of sample 2, but 'labels' has 2"),
}
