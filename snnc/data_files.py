"""The user's data files (.npz, .h5/.hdf5) as InputSets, read in chunks (docs/data.md).

A file holds `inputs` (static frames [N, *shape] or per-step units [N, T, *shape]) or `events`
(a structured array with integer fields sample, t, x, p and y for 2-D sensors, plus `sensor_size`),
and optionally `labels` [N]. Arrays are read a chunk of samples at a time: an .npz member straight
from its zip stream (never unpickled: object arrays are refused from the header), an HDF5 dataset
by slicing. Every value is checked once, chunk by chunk, before any work starts.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from snnc import encoding as units_of
from snnc.data import (CHECK_CHUNK_BYTES, InputSet, InputSpec, check_labels, check_layout, fits_layout, frames_set,
                       sample_count)
from snnc.errors import InputError

NPZ_SUFFIXES = (".npz",)
HDF5_SUFFIXES = (".h5", ".hdf5")
EVENT_FIELDS = ("sample", "t", "x", "p")
MAX_HEADER_BYTES = 10_000


class _NpzArray:
    """One array of an .npz, read row by row from its zip member without loading it whole."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, name: str):
        self.where = f"{path}: '{name}'"
        self._archive, self._member = archive, name + ".npy"
        with self._open() as stream:
            self.shape, fortran, self.dtype = self._header(stream)
        if fortran and len(self.shape) > 1:
            raise InputError(f"{self.where} is stored in Fortran order; save it with "
                             f"numpy.ascontiguousarray first")
        self._stream, self._position = None, 0

    def _open(self):
        return self._archive.open(self._member)

    def _header(self, stream):
        try:
            version = np.lib.format.read_magic(stream)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(stream, max_header_size=MAX_HEADER_BYTES)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise InputError(f"{self.where} is not a numpy array ({error})")
        if dtype.hasobject:
            raise InputError(f"{self.where} holds Python objects (a pickle), which snnc never loads")
        self._data_offset = stream.tell()
        return tuple(int(d) for d in shape), fortran, dtype

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0] if self.shape else 0)
        if self._stream is None or start < self._position:
            if self._stream is not None:
                self._stream.close()
            self._stream = self._open()
            self._header(self._stream)
            self._position = 0
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        if start > self._position:
            self._skip((start - self._position) * row_bytes)
        count = max(0, stop - start)
        data = self._stream.read(count * row_bytes)
        if len(data) != count * row_bytes:
            raise InputError(f"{self.where} is truncated")
        self._position = stop
        return np.frombuffer(data, dtype=self.dtype).reshape((count,) + self.shape[1:])

    def _skip(self, size: int) -> None:
        while size > 0:
            data = self._stream.read(min(size, CHECK_CHUNK_BYTES))
            if not data:
                raise InputError(f"{self.where} is truncated")
            size -= len(data)

    def read_all(self) -> np.ndarray:
        return self[0:self.shape[0]] if self.shape else self._scalar()

    def _scalar(self) -> np.ndarray:
        with self._open() as stream:
            self._header(stream)
            return np.frombuffer(stream.read(self.dtype.itemsize), dtype=self.dtype).reshape(())


class _File:
    """The arrays of one data file by name: `get(name)` -> an array-like sliceable by rows (with
    shape and dtype), or None when absent."""

    def __init__(self, path: Path):
        self.path = path
        suffix = path.suffix.lower()
        if not path.exists():
            from snnc.data import DATASETS

            raise InputError(f"{path}: no such data file (built-in data sets: {', '.join(DATASETS)}; "
                             f"or random[:N[:SEED]])")
        if not path.is_file():
            raise InputError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty")
        try:
            if suffix in NPZ_SUFFIXES:
                self._archive = zipfile.ZipFile(path)
                self._names = {name[:-4] for name in self._archive.namelist() if name.endswith(".npy")}
                self._hdf5 = None
            elif suffix in HDF5_SUFFIXES:
                import h5py

                self._hdf5 = h5py.File(path, "r")
                self._archive = None
            else:
                raise InputError(f"{path}: data files are .npz, .h5 or .hdf5 (docs/data.md); a "
                                 f"built-in data set is one of the names snnc lists")
        except zipfile.BadZipFile:
            raise InputError(f"{path}: not an .npz file (not a zip archive)")
        except OSError as error:
            raise InputError(f"{path}: not an HDF5 file ({error})")

    def get(self, name: str):
        if self._archive is not None:
            return _NpzArray(self.path, self._archive, name) if name in self._names else None
        if name not in self._hdf5:
            return None
        dataset = self._hdf5[name]
        import h5py

        if not isinstance(dataset, h5py.Dataset):
            raise InputError(f"{self.path}: '{name}' is a group, not an array")
        return dataset

    def read_all(self, name: str) -> Optional[np.ndarray]:
        array = self.get(name)
        if array is None:
            return None
        return array.read_all() if isinstance(array, _NpzArray) else np.asarray(array[()])


def rows_per_read(array) -> int:
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:]))
    return max(1, CHECK_CHUNK_BYTES // max(1, row_bytes))


def _check_values(where: str, array, count: int, low: int, top: int) -> None:
    """Every value of rows 0..count-1 is a whole number in low..top (read in chunks)."""
    kind = array.dtype.kind
    if kind not in "biuf" or array.dtype.names is not None:
        raise InputError(f"{where} holds {array.dtype}; snnc takes integers (or whole floats)")
    step = rows_per_read(array)
    for start in range(0, count, step):
        block = np.asarray(array[start:min(count, start + step)])
        if kind == "f":
            bad = ~np.isfinite(block)
            if bad.any():
                raise InputError(f"{where}: sample {start + int(np.argwhere(bad)[0][0])} holds "
                                 f"{block[bad][0]}; inputs must be finite whole numbers")
            fractional = block != np.round(block)
            if fractional.any():
                raise InputError(f"{where}: sample {start + int(np.argwhere(fractional)[0][0])} holds "
                                 f"{block[fractional][0]}, which is not a whole number")
        outside = (block < low) | (block > top)
        if outside.any():
            raise InputError(f"{where}: sample {start + int(np.argwhere(outside)[0][0])} holds "
                             f"{block[outside][0]}; the network takes {low}..{top} (docs/data.md, 'Values')")


def labels_of(source: _File, count_in_file: int, samples: Optional[int], spec: InputSpec):
    """(how many samples are used, their labels or None), the file's 'labels' checked."""
    labels = source.get("labels")
    if labels is None:
        return sample_count(count_in_file, samples), None
    where = f"{source.path}: 'labels'"
    if len(labels.shape) != 1 or labels.shape[0] != count_in_file:
        raise InputError(f"{where} shaped {list(labels.shape)}, expected [{count_in_file}] (one per sample)")
    if labels.dtype.kind not in "iub" or labels.dtype.names is not None:
        raise InputError(f"{where} must be integers, got {labels.dtype}")
    count = sample_count(count_in_file, samples)
    values = np.asarray(labels[0:count]).astype(np.int64)
    check_labels(where, values, count, spec)
    return count, values


def _inputs_set(source: _File, inputs, spec: InputSpec, samples: Optional[int]) -> InputSet:
    where = f"{source.path}: 'inputs'"
    shape = tuple(inputs.shape)
    if len(shape) < 2:
        raise InputError(f"{where} shaped {list(shape)}: expected [N, *input] frames or [N, T, *input] steps")
    frames_fit = fits_layout(shape[1:], spec.shape)
    steps_fit = len(shape) >= 3 and fits_layout(shape[2:], spec.shape)
    if steps_fit and shape[1] != spec.T and not frames_fit:
        raise InputError(f"{where} shaped {list(shape)} holds {shape[1]} steps per sample, the network runs "
                         f"T={spec.T}")
    if not frames_fit and not steps_fit:
        check_layout(where, "has samples", shape[1:], spec)
    count, labels = labels_of(source, shape[0], samples, spec)
    origin = str(source.path)
    if frames_fit:
        _check_values(where, inputs, count, units_of.frame_min(spec.encoding), units_of.frame_max(spec.encoding))
        return frames_set(origin, spec, count, labels, lambda start, stop: _integers(inputs[start:stop]))
    _check_values(where, inputs, count, units_of.unit_min(spec.encoding), units_of.unit_max(spec.encoding))

    def read_units(start, stop):
        steps = _integers(inputs[start:stop]).reshape((stop - start, spec.T) + spec.shape)
        return np.ascontiguousarray(steps.swapaxes(0, 1))

    return InputSet(origin, "steps", spec, count, labels, read_units)


def _integers(block) -> np.ndarray:
    return np.asarray(block).astype(np.int64)


def open_file(path: Path, spec: InputSpec, samples: Optional[int]) -> InputSet:
    """An InputSet from a data file, every value checked against `spec` first."""
    source = _File(path)
    inputs, events = source.get("inputs"), source.get("events")
    if inputs is not None and events is not None:
        raise InputError(f"{path}: holds both 'inputs' and 'events'; a data file holds one of them")
    if inputs is not None:
        return _inputs_set(source, inputs, spec, samples)
    if events is not None:
        from snnc.events import events_set

        return events_set(source, events, spec, samples)
    raise InputError(f"{path}: no 'inputs' or 'events' array (docs/data.md)")
