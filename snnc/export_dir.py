"""The export directory as a format: manifest, artifact writers, atomic writing and checked reading.

Everything that reads an export (backends, verify, energy, inspect, simulate) goes through
`ExportDir`, which refuses a file the manifest does not list, a listed path that leaves the
directory or is not a regular file, and a file whose SHA-256 differs. Everything snnc writes goes
through `stage_directory` (a directory) or `write_file` (one file): the output appears whole or
not at all, a full disk is an OutputError, and nothing that snnc did not write is ever replaced.

This module sits below every reader: it imports only the IR, the targets and the errors.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional

from snnc import ir
from snnc.errors import InputError, OutputError
from snnc.targets import Target, load_target

MANIFEST = "manifest.json"
FORMAT = "snnc-export"
FORMAT_VERSION = 2
FLOAT_DIR = "float"
TARGET_FILE = "target.yaml"
REQUIRED_FILES = ("network.json", "network.npz", TARGET_FILE)
MAX_MANIFEST_BYTES = 1 << 20
_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STAGING_SUFFIX = ".partial-XXXXXXXX"
_NAME_MAX = 255


# --- artifact writers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactWriter:
    """One backend's contribution to an export: write(compiled, directory, options) -> the paths
    written, relative to `directory`. `order` places cheap design-rule checks (the core mapping)
    before expensive files."""

    label: str
    order: int
    write: Callable


_WRITERS: dict[str, ArtifactWriter] = {}


def artifact_writer(label: str, order: int):
    """Decorator by which a backend or exporter registers the files it adds to every export."""

    def register(write: Callable) -> Callable:
        _WRITERS[label] = ArtifactWriter(label, order, write)
        return write

    return register


def artifact_writers() -> list[ArtifactWriter]:
    return sorted(_WRITERS.values(), key=lambda writer: (writer.order, writer.label))


# --- hashing ------------------------------------------------------------------------------------

def sha256(path) -> str:
    """SHA-256 of a file, read in chunks (a listed file of any size costs no memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- writing ------------------------------------------------------------------------------------

def _os_failure(path, error: OSError) -> OutputError:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device"
    return OutputError(f"cannot write {path}: {reason}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file built in memory into a staging directory; a failure (a full disk) is one
    OutputError and leaves no partial file."""
    try:
        Path(path).write_bytes(data)
    except OSError as error:
        Path(path).unlink(missing_ok=True)
        raise _os_failure(path, error) from None


def check_output_path(path) -> Path:
    """The output path as given, refused when it names no new entry of its own: the empty path,
    '.', '..', the root, the current directory or one above it, or a name too long to stage."""
    text = os.fspath(path)
    if not text.strip():
        raise OutputError("the output path is empty")
    candidate = Path(text)
    if candidate.name in ("", ".", ".."):
        raise OutputError(f"{text}: not a name snnc can create or replace")
    absolute = Path(os.path.abspath(candidate))
    cwd = Path.cwd().resolve()
    real = absolute.parent.resolve() / absolute.name
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{text}: is the current directory or one above it")
    if len(candidate.name.encode()) + len(_STAGING_SUFFIX) + 1 > _NAME_MAX:
        raise OutputError(f"{text[:40]}...: the name is longer than this file system allows")
    return candidate


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_noreplace(source: Path, destination: Path) -> None:
    """Rename that fails with FileExistsError instead of replacing what is at `destination`
    (Linux renameat2; elsewhere a check just before the rename)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination),
                     _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(destination))
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination))
    os.rename(source, destination)


def _read_manifest(directory: Path) -> Optional[dict]:
    """The manifest of a directory, or None when it has no readable snnc manifest."""
    path = directory / MANIFEST
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def _check_replaceable_export(path: Path) -> None:
    """Raise OutputError unless `path` is a real directory holding an snnc export and nothing else
    (--force replaces that, never user data)."""
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; --force replaces only an snnc export directory")
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory; --force replaces only an snnc export")
    manifest = _read_manifest(path)
    files = manifest.get("files") if manifest else None
    if not isinstance(files, dict):
        raise OutputError(f"{path} is not an snnc export directory; --force replaces only those")
    listed = {PurePosixPath(name) for name in files if isinstance(name, str)} | {PurePosixPath(MANIFEST)}
    parents = {parent for name in listed for parent in name.parents}
    for entry in sorted(path.rglob("*")):
        relative = PurePosixPath(entry.relative_to(path).as_posix())
        if relative in listed and entry.is_file() and not entry.is_symlink():
            continue
        if relative in parents and entry.is_dir() and not entry.is_symlink():
            continue
        raise OutputError(f"{path} holds '{relative}', which is not part of its export; "
                          f"--force will not delete it")


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (deepest last)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir()
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def check_directory_output(outdir, force: bool = False) -> Path:
    """The checks `stage_directory` makes, for a command to make them before any work."""
    outdir = check_output_path(outdir)
    if os.path.lexists(outdir):
        if not force:
            raise OutputError(f"{outdir} already exists (use --force to replace an snnc export)")
        _check_replaceable_export(outdir)
    return outdir


@contextmanager
def stage_directory(outdir, force: bool = False) -> Iterator[Path]:
    """A fresh hidden directory next to `outdir` to write into; renamed to `outdir` when the block
    ends without error, removed otherwise. Missing parents are created (and removed again on
    failure). With `force` an existing snnc export at `outdir` is replaced; nothing else ever is,
    and something that appears at `outdir` meanwhile is left untouched."""
    outdir = check_directory_output(outdir, force)
    try:
        created = _make_parents(outdir.parent)
    except OSError as error:
        raise _os_failure(outdir, error)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=outdir.parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 is for the staging phase only
        yield staging
        _commit(staging, outdir, force)
        created = []
    except OSError as error:
        raise _os_failure(outdir, error)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)


def _commit(staging: Path, outdir: Path, force: bool) -> None:
    if not os.path.lexists(outdir):
        try:
            _rename_noreplace(staging, outdir)
        except FileExistsError:
            raise OutputError(f"{outdir} appeared while snnc was writing it; it was left untouched")
        return
    if not force:
        raise OutputError(f"{outdir} appeared while snnc was writing it; it was left untouched")
    _check_replaceable_export(outdir)
    trash = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=outdir.parent))
    previous = trash / "export"
    os.rename(outdir, previous)
    try:
        _check_replaceable_export(previous)  # what was moved is still the export that was checked
        _rename_noreplace(staging, outdir)
    except (OutputError, FileExistsError):
        try:
            _rename_noreplace(previous, outdir)
            trash.rmdir()
        except OSError:
            raise OutputError(f"{outdir} changed while snnc was replacing it; the previous "
                              f"content is kept in {previous}")
        raise OutputError(f"{outdir} changed while snnc was replacing it; it was left untouched")
    shutil.rmtree(trash, ignore_errors=True)


def check_file_output(path, force: bool = False, replaceable: Optional[Callable[[Path], bool]] = None,
                      what: str = "file") -> Path:
    """The checks `write_file` makes, for a command to make them before any work: an existing
    `path` may be replaced only with `force`, only when it is a regular file (never a directory
    or a symbolic link) and only when `replaceable(path)` says it is one of snnc's (when given);
    the parent directory must exist."""
    path = check_output_path(path)
    if os.path.lexists(path):
        if not force:
            raise OutputError(f"{path} already exists (use --force to overwrite an snnc {what})")
        if path.is_symlink() or not path.is_file():
            raise OutputError(f"{path} exists and is not a regular file; --force replaces only an snnc {what}")
        if replaceable is not None and not replaceable(path):
            raise OutputError(f"{path} is not an snnc {what}; it is never overwritten")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def write_file(path, write: Callable, force: bool = False,
               replaceable: Optional[Callable[[Path], bool]] = None, what: str = "file") -> Path:
    """Write one file atomically (after `check_file_output`): `write(handle)` fills a hidden
    temporary file next to `path`, which then takes the name."""
    path = check_file_output(path, force, replaceable, what)
    temporary = None
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
        temporary = Path(name)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 is for the staging phase only
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if force and os.path.lexists(path):
            os.replace(temporary, path)
        else:
            try:
                _rename_noreplace(temporary, path)
            except FileExistsError:
                raise OutputError(f"{path} appeared while snnc was writing it; it was left untouched")
        temporary = None
    except OSError as error:
        raise _os_failure(path, error)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    return path


def write_json(path: Path, obj) -> None:
    """Sorted, indented JSON with a final newline: the bytes depend only on `obj`."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_manifest(staging: Path, fields: dict, files: list[str]) -> None:
    """manifest.json: `fields` plus the SHA-256 of every file written (each must exist)."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields,
                "files": {name: sha256(staging / name) for name in sorted(files)}}
    write_json(staging / MANIFEST, manifest)


# --- reading ------------------------------------------------------------------------------------

def _listed_path(root: Path, name) -> PurePosixPath:
    """A manifest entry as a relative path that stays inside the export, or InputError."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise InputError(f"{root}: manifest lists an invalid file name {name!r}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or any(part in ("", ".", "..") for part in relative.parts) \
            or relative.as_posix() != name:
        raise InputError(f"{root}: manifest lists '{name}', which is not a plain path inside the export")
    return relative


class ExportDir:
    """A checked export directory: every listed file hashed once, every read through `path`."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, outdir) -> "ExportDir":
        root = Path(outdir)
        if not root.is_dir():
            raise InputError(f"{outdir} is not an export directory")
        manifest = _read_manifest(root)
        if manifest is None:
            raise InputError(f"{outdir}: missing or unreadable {MANIFEST} (not an snnc export)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{outdir}: export format version {manifest.get('format_version')!r} "
                             f"is not {FORMAT_VERSION}; export it again with this snnc")
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise InputError(f"{outdir}: {MANIFEST} 'files' must map file names to SHA-256 digests")
        for key in ("target", "network"):
            if not isinstance(manifest.get(key), str):
                raise InputError(f"{outdir}: {MANIFEST} has no '{key}'")
        for name in REQUIRED_FILES:
            if name not in files:
                raise InputError(f"{outdir}: {MANIFEST} does not list {name}")
        real_root = root.resolve()
        for name, digest in files.items():
            relative = _listed_path(root, name)
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise InputError(f"{outdir}: {MANIFEST} has no valid SHA-256 for {name}")
            path = root / relative
            try:
                mode = path.lstat().st_mode
            except OSError:
                raise InputError(f"{outdir}: {name} is missing")
            if not stat.S_ISREG(mode) or real_root not in path.resolve().parents:
                raise InputError(f"{outdir}: {name} is not a regular file inside the export")
            if sha256(path) != digest:
                raise InputError(f"{outdir}: {name} was modified (SHA-256 mismatch)")
        return cls(root, manifest)

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def path(self, name: str) -> Path:
        """The path of a listed (and so checked) file; InputError for anything else."""
        if not self.has(name):
            raise InputError(f"{self.root}: {name} is not part of this export (not in {MANIFEST})")
        return self.root / name

    def read_json(self, name: str):
        try:
            return json.loads(self.path(name).read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{self.root}: {name} is not valid JSON ({error})")

    @cached_property
    def network(self) -> ir.Network:
        """The quantized network (network.json + network.npz)."""
        self.path("network.json"), self.path("network.npz")
        return ir.load(self.root)

    @cached_property
    def float_network(self) -> Optional[ir.Network]:
        """The folded float network, or None for a source that had no float form (netx)."""
        names = (f"{FLOAT_DIR}/network.json", f"{FLOAT_DIR}/network.npz")
        if not any(self.has(name) for name in names):
            return None
        for name in names:
            self.path(name)
        return ir.load(self.root / FLOAT_DIR)

    @cached_property
    def target(self) -> Target:
        """The target the network was compiled for, as copied into the export."""
        return load_target(self.path(TARGET_FILE))

    def target_or(self, name: Optional[str]) -> Target:
        """`name` when given (a later command's --target), else the export's own target."""
        return load_target(name) if name else self.target
