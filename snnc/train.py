"""Training, evaluation and the checkpoint file (a plain dict of tensors and Python values).

A checkpoint is loadable with torch.load(path, weights_only=True): no pickled classes, so loading
one never runs code from the file.
"""
import io
import math
import pickle
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

import snnc
from snnc.data import InputSet, InputSpec
from snnc.encoding import network_input
from snnc.errors import InputError
from snnc.export_dir import check_file_output, write_file
from snnc.frontends.checkpoint import PIXEL_ENCODING
from snnc.models import build, validate_recipe

CHECKPOINT_FORMAT = "snnc-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = ("format", "format_version", "recipe", "state_dict", "training")
LOSSES = ("sdt", "tet", "tet-s", "lts")
LABEL_SMOOTHING = 0.1
EVAL_BATCH = 250


def sequence_loss(name, y, labels, tet_lambda=0.0, tet_target=1.0):
    """Training objective over the per-step readout values y [T, B, classes].

    sdt: CE(mean_t y[t]); tet: mean_t CE(y[t]) (+ tet_lambda * mean_t MSE(y[t], tet_target));
    tet-s: tet with label smoothing LABEL_SMOOTHING in each per-step CE; lts: CE(y[T]).
    """
    if name == "sdt":
        return F.cross_entropy(y.mean(dim=0), labels)
    if name == "lts":
        return F.cross_entropy(y[-1], labels)
    if name not in ("tet", "tet-s"):
        raise InputError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    smoothing = LABEL_SMOOTHING if name == "tet-s" else 0.0
    steps = y.shape[0]
    per_step = F.cross_entropy(y.flatten(0, 1), labels.repeat(steps), label_smoothing=smoothing)
    if tet_lambda:
        return per_step + tet_lambda * F.mse_loss(y, torch.full_like(y, tet_target))
    return per_step


def random_shift(x, max_shift, generator):
    """Translate each sample of x [T, B, C, H, W] by up to max_shift pixels along each axis (the
    same at every step), zero-filled.

    Augmentation: mnist5k has only 4000 training digits, which a conv SNN otherwise memorises.
    """
    if max_shift == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[1], 2), generator=generator).tolist()
    return torch.stack([padded[:, i, :, dy:dy + height, dx:dx + width]
                        for i, (dy, dx) in enumerate(offsets)], dim=1)


def input_spec(recipe) -> InputSpec:
    """What a recipe's network takes: its input shape, T and classes, 8-bit pixels (the encoding
    its checkpoint compiles with)."""
    return InputSpec(tuple(recipe["input_shape"]), int(recipe["T"]), dict(PIXEL_ENCODING),
                     int(recipe["num_classes"]))


def labelled(inputs: InputSet, command: str) -> InputSet:
    """`inputs`, refused in one line when they carry no labels (random inputs)."""
    if inputs.labels is None:
        raise InputError(f"{command} needs data with labels; {inputs.origin} has none")
    return inputs


def model_input(model, inputs: InputSet, units) -> torch.Tensor:
    """Input units [T, B, *shape] as the float model takes them: units x encoding scale."""
    values = network_input(False, inputs.spec.encoding, units)
    return torch.from_numpy(values).to(next(model.parameters()).dtype)


def _batch_units(inputs: InputSet, indices) -> np.ndarray:
    """Units [T, b, *shape] of the samples `indices` (any order), read one sample at a time so that
    memory holds one batch."""
    return np.concatenate([inputs.units(i, i + 1) for i in indices], axis=1)


@torch.no_grad()
def evaluate(model, inputs: InputSet):
    """Fraction of `inputs` (with labels) classified as their labels by the model's readout,
    EVAL_BATCH samples at a time."""
    labelled(inputs, "evaluation")
    model.eval()
    correct = 0
    for _, units, labels in inputs.chunks(EVAL_BATCH):
        scores = model.readout(model(model_input(model, inputs, units)))
        correct += (scores.argmax(dim=1) == torch.from_numpy(labels)).sum().item()
    return correct / inputs.count


def train(recipe, train_set: InputSet, test_set: Optional[InputSet], loss, epochs, seed=0, lr=1e-3,
          batch_size=64, shift=0, tet_lambda=0.0, threads=2, on_batch=None, on_epoch=None):
    """Train a recipe's network with `fit` (its arguments) on `train_set` (opened for
    input_spec(recipe)); deterministic by seed and thread count. Returns the model (eval mode) and
    its final test accuracy (None without a test set)."""
    recipe = validate_recipe(recipe)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return fit(build(recipe), train_set, test_set, loss, epochs, seed=seed, lr=lr, batch_size=batch_size,
               shift=shift, tet_lambda=tet_lambda, threads=threads, on_batch=on_batch, on_epoch=on_epoch)


def fit(model, train_set: InputSet, test_set: Optional[InputSet], loss, epochs, seed=0, lr=1e-3,
        batch_size=64, shift=0, tet_lambda=0.0, threads=2, on_batch=None, on_epoch=None):
    """Train `model` (a multi-step module: inputs [T, B, ...] -> per-step readout values [T, B,
    classes], with a `readout(y)` method giving class scores) with Adam and a cosine learning-rate
    schedule on `train_set` (with labels); deterministic by seed and thread count (more threads
    than free cores slows torch down badly on a shared machine).

    test_set: measured after each epoch (None: no test accuracy). shift: random translation of the
    training inputs, in pixels (0: none). tet_lambda: weight of TET's MSE term (tet and tet-s only).
    on_batch() is called after each optimiser step (progress bars); on_epoch(epoch, mean_loss,
    test_accuracy or None) after each epoch. Returns the model (eval mode) and its final test
    accuracy (None without a test set).
    """
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    labelled(train_set, "training")
    if test_set is not None:
        labelled(test_set, "testing")
    torch.set_num_threads(threads)
    labels = torch.from_numpy(train_set.labels)
    batches_per_epoch = math.ceil(len(labels) / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches_per_epoch)
    shuffler = torch.Generator().manual_seed(seed)
    accuracy = None
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=shuffler)
        total = 0.0
        for start in range(0, len(labels), batch_size):
            batch = order[start:start + batch_size]
            x = model_input(model, train_set, _batch_units(train_set, batch.tolist()))
            y = model(random_shift(x, shift, shuffler))
            objective = sequence_loss(loss, y, labels[batch], tet_lambda=tet_lambda)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            schedule.step()
            total += objective.item() * len(batch)
            if on_batch:
                on_batch()
        accuracy = None if test_set is None else evaluate(model, test_set)
        if on_epoch:
            on_epoch(epoch, total / len(labels), accuracy)
    model.eval()
    return model, accuracy


def is_checkpoint(path) -> bool:
    """Whether `path` holds an snnc checkpoint (what `train --force` may overwrite)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # anything torch cannot read as weights is not ours
        return False
    return isinstance(contents, dict) and contents.get("format") == CHECKPOINT_FORMAT


def check_checkpoint_output(path, force: bool) -> None:
    """Fail before training when the checkpoint could not be written at the end."""
    check_file_output(path, force, replaceable=is_checkpoint, what="checkpoint")


def save_checkpoint(path, model, training, force: bool = False):
    """Write the plain-dict checkpoint (format snnc-checkpoint, version 1), atomically; with
    `force` an existing snnc checkpoint (and nothing else) is replaced."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "recipe": model.recipe,
        "state_dict": {key: tensor.detach().clone() for key, tensor in model.state_dict().items()},
        "training": {**training, "snnc_version": snnc.__version__},
    }
    buffer = io.BytesIO()  # torch's writer fails with an unhelpful RuntimeError on a full disk
    torch.save(checkpoint, buffer)
    write_file(path, lambda handle: handle.write(buffer.getvalue()), force=force,
               replaceable=is_checkpoint, what="checkpoint")


def _pickled_globals(path):
    """The Python classes and functions a torch file's pickle names beyond the weights-only set,
    found by reading its opcodes (nothing is executed); [] when it is not a torch zip file."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a torch zip archive, or one without a readable pickle
        return []


def _read_checkpoint_file(path):
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise InputError(f"checkpoint is a directory, not a file: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler refused an instruction
        names = _pickled_globals(path)
        if names:
            raise InputError(f"checkpoint {path} holds pickled Python objects ({', '.join(names[:3])}); "
                             "snnc only loads weights-only checkpoints (plain dicts of tensors)") from None
        raise InputError(f"checkpoint {path} is not a readable torch file: its pickle data is corrupt "
                         "or not weights-only") from None
    except Exception as error:  # torch raises many types for corrupt files (zip, EOF, runtime, ...)
        text = str(error).strip()
        detail = text.splitlines()[0] if text else type(error).__name__
        raise InputError(f"checkpoint {path} is not a readable torch file: {detail}") from None


def _check_state_dict(path, state_dict, expected):
    """The checkpoint's tensors against the names, shapes and dtypes its recipe needs (`expected`,
    a state dict of the recipe's model built on torch's meta device: no memory)."""
    if not isinstance(state_dict, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state_dict.items()):
        raise InputError(f"checkpoint {path}: state_dict must map names to tensors")
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        first = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {extra[0]}"
        raise InputError(f"checkpoint {path}: state_dict does not match its recipe: {first} "
                         f"({len(missing)} missing, {len(extra)} unexpected)")
    for key, tensor in state_dict.items():
        if tensor.shape != expected[key].shape:
            raise InputError(f"checkpoint {path}: tensor {key} has shape {list(tensor.shape)}, "
                             f"its recipe needs {list(expected[key].shape)}")
        if tensor.dtype != expected[key].dtype:
            raise InputError(f"checkpoint {path}: tensor {key} has dtype {tensor.dtype}, its recipe "
                             f"needs {expected[key].dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"checkpoint {path}: tensor {key} contains NaN or Inf")
        if key.endswith("running_var") and (tensor < 0).any():
            raise InputError(f"checkpoint {path}: tensor {key} holds a negative variance")


def _check_training(path, training):
    if not isinstance(training, dict):
        raise InputError(f"checkpoint {path}: 'training' must be a mapping, got {type(training).__name__}")
    if "data" in training and not isinstance(training["data"], str):
        raise InputError(f"checkpoint {path}: 'training.data' must be a data set name, "
                         f"got {type(training['data']).__name__}")


def load_checkpoint(path):
    """(model in eval mode, checkpoint dict) from a checkpoint file; InputError if it is unusable."""
    path = Path(path)
    checkpoint = _read_checkpoint_file(path)
    if not isinstance(checkpoint, dict):
        raise InputError(f"checkpoint {path}: expected a dict, got {type(checkpoint).__name__}")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise InputError(f"checkpoint {path}: missing key(s) {', '.join(missing)}")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {path}: format is {checkpoint['format']!r}, "
                         f"expected {CHECKPOINT_FORMAT!r}")
    if checkpoint["format_version"] != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path}: format_version {checkpoint['format_version']!r} "
                         f"is not supported (this snnc reads {CHECKPOINT_VERSION})")
    _check_training(path, checkpoint["training"])
    recipe = validate_recipe(checkpoint["recipe"], source=f"in checkpoint {path}")
    with torch.device("meta"):
        expected = build(recipe).state_dict()
    _check_state_dict(path, checkpoint["state_dict"], expected)
    model = build(recipe)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise InputError(f"checkpoint {path}: state_dict does not match its recipe: "
                         f"{' '.join(str(error).split())}") from None
    model.eval()
    return model, checkpoint
