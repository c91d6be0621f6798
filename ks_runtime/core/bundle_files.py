"""A bundle's files on disk: what a manifest names stays inside the bundle, nothing is reached through a link, and
a file is read once, checked against its sha256, and used as exactly those bytes (docs/bundle-format.md, "Contract").

- `bundle_path` is the one inside-the-bundle check every path of a manifest goes through (files, graphs, variants,
  check frames, Triton configs and models, TensorRT recipe and engines, the engine record's entries).
- `read_verified` opens a file one path component at a time under directory descriptors with O_NOFOLLOW, so no
  link, not even one swapped in after a check, leads out of the bundle; it reads the bytes once, checks their
  sha256 and, for an ONNX graph, that no tensor keeps its data outside the file. Callers hand those bytes on
  (onnxruntime's InferenceSession takes bytes, TensorRT deserialises bytes), never the path.
- `check_tree` accounts for every entry under the bundle: no links, no special files, and every file hashed in the
  manifest, or an engine built on the device and recorded with its sha256 in `trt/engines.sha256` by
  `trt/build_engines.sh`, or one of the device's build caches (TensorRT timing caches, onnxruntime's TensorRT
  engine cache), which nothing in the runtime loads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from ks_runtime.core.errors import BundleError
from ks_runtime.core.onnx_external import external_tensor

MANIFEST = "manifest.json"
TRT_DIR = "trt"  # TensorRT: the trtexec recipe, engines (*.plan) and timing caches; manifest field 'tensorrt'
# Engines the recipe builds on the device after export: `sha256sum` lines, "<sha256>  trt/<engine>.plan", the last
# line of a file winning (a rebuild appends). Not hashed by the manifest: the device wrote it.
ENGINE_RECORD = f"{TRT_DIR}/engines.sha256"
_RECORDED = re.compile(r"trt/[^/]+\.plan")  # what the record may vouch for: engines, nothing else
_DEVICE_CACHES = re.compile(r"trt/timing\.[^/]+\.cache|trt/ort-cache/.+")  # build inputs, never loaded to run
_RECORD_LINE = re.compile(r"(?P<sha256>[0-9a-f]{64}) [ *](?P<file>.+)")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in a bundle must not hang the open
_BINARY = getattr(os, "O_BINARY", 0)
_AT = bool(_NOFOLLOW) and os.open in os.supports_dir_fd  # POSIX; elsewhere each component is lstat-checked


def bundle_path(root: Path, name: object, field: str) -> Path:
    """root / `name`, where `name` is the value of manifest field `field`: a relative POSIX path with no '..', '.',
    empty part, backslash or drive. BundleError naming the bundle's manifest and the field otherwise. Lexical:
    links are refused when a file is opened (`read_verified`) and when the bundle is walked (`check_tree`)."""
    where = Path(root) / MANIFEST
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: field {field!r} must be a path inside the bundle, got {name!r}")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0] or {"", ".", ".."} & set(parts):
        raise BundleError(
            f"{where}: field {field!r} is {name[:200]!r}, which is not a plain relative path inside the bundle "
            f"(no '..', no absolute path): every path a manifest names stays inside its bundle"
        )
    return Path(root).joinpath(*parts)


def _refusal(root: Path, parts: list[str], depth: int, error: OSError, field: str) -> BundleError:
    """Why component `depth` of a bundle path could not be opened, naming the path and the field."""
    path = Path(root).joinpath(*parts[: depth + 1])
    try:
        linked = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        linked = False
    if linked or error.errno == errno.ELOOP:
        return BundleError(
            f"{path}: a symbolic link (field {field!r} of {MANIFEST}): a bundle's files must be in it, not "
            f"linked to; copy the file into the bundle"
        )
    if error.errno == errno.ENOENT:
        return BundleError(f"{path}: missing, but named by field {field!r} of {MANIFEST}")
    return BundleError(f"{path}: cannot be opened ({error.strerror}; field {field!r} of {MANIFEST})")


def _open_inside(root: Path, name: str, field: str) -> int:
    """A read-only descriptor of bundle file `name`, reached without following any link below `root`."""
    parts = name.split("/")
    if not _AT:
        for depth in range(len(parts)):
            path = Path(root).joinpath(*parts[: depth + 1])
            if path.is_symlink():
                raise _refusal(root, parts, depth, OSError(errno.ELOOP, "link"), field)
        try:
            return os.open(Path(root).joinpath(*parts), os.O_RDONLY | _BINARY)
        except OSError as error:
            raise _refusal(root, parts, len(parts) - 1, error, field) from None
    directory = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            flags = os.O_RDONLY | _NOFOLLOW | (_NONBLOCK if last else _DIRECTORY)
            try:
                opened = os.open(part, flags, dir_fd=directory)
            except OSError as error:
                raise _refusal(root, parts, depth, error, field) from None
            os.close(directory)
            directory = opened
        opened, directory = directory, -1
        return opened
    finally:
        if directory >= 0:
            os.close(directory)


def read_inside(root: Path, name: str, field: str) -> bytes:
    """The bytes of bundle file `name` (named by `field`), reached without following a link; not hash-checked:
    for the manifest itself and the engine record. Everything the manifest hashes goes through `read_verified`."""
    path = bundle_path(root, name, field)
    with os.fdopen(_open_inside(root, name, field), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BundleError(f"{path}: not a regular file (field {field!r} of {MANIFEST})")
        return handle.read()


def read_verified(root: Path, name: str, sha256: str, field: str | None = None, source: str | None = None) -> bytes:
    """The bytes of bundle file `name`, read once, whose sha256 must be `sha256` (recorded in `source`, default the
    manifest's field 'files.<name>'); an ONNX graph must keep every tensor inside itself. `field` names the manifest
    field that gave the path (default 'files.<name>'). Use the bytes returned, never the path again."""
    field = field or f"files.{name}"
    source = source or f"field 'files.{name}' of {MANIFEST}"
    path = bundle_path(root, name, field)
    data = read_inside(root, name, field)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}... does not match {source} ({str(sha256)[:12]}...): the file was changed "
            f"or truncated after it was hashed"
        )
    if name.endswith(".onnx"):
        _refuse_external_data(path, data)
    return data


def _refuse_external_data(path: Path, data: bytes) -> None:
    try:
        found = external_tensor(data)
    except ValueError as error:
        raise BundleError(f"{path}: not an ONNX file (its protobuf is truncated or malformed: {error})") from None
    if found is not None:
        tensor, location = found
        raise BundleError(
            f"{path}: tensor {tensor!r} keeps its data outside the graph (ONNX external data, location "
            f"{location!r}), where the bundle's sha256 does not cover it; a bundle's graphs carry their weights "
            f"inside them (re-export the bundle)"
        )


def read_engine_record(root: Path) -> dict[str, str]:
    """trt/engines.sha256 (engines built on the device by the recipe): {path: sha256}, {} when there is none."""
    if not os.path.lexists(Path(root) / ENGINE_RECORD):
        return {}
    text = read_inside(root, ENGINE_RECORD, ENGINE_RECORD).decode("utf-8", "replace")
    record = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _RECORD_LINE.fullmatch(line.strip())
        where = f"{ENGINE_RECORD}, line {number}"
        if match is None or not _RECORDED.fullmatch(match["file"]):
            raise BundleError(
                f"{Path(root) / ENGINE_RECORD}: line {number} is not '<sha256>  trt/<engine>.plan' (what "
                f"{TRT_DIR}/build_engines.sh appends after each build)"
            )
        bundle_path(root, match["file"], where)
        record[match["file"]] = match["sha256"]
    return record


def check_tree(root: Path, files: Mapping[str, str]) -> None:
    """Every entry under the bundle is a folder or a regular file, none a link; every file is the manifest, a dot
    file (never hashed, never loaded), hashed in `files`, a device cache, or an engine recorded in the engine record
    with the sha256 its bytes have. BundleError naming the first entry that is not."""
    root = Path(root)
    record = read_engine_record(root)
    for folder, folders, names in os.walk(root):  # links to folders are listed, not followed, and refused below
        for entry in sorted(folders) + sorted(names):
            path = Path(folder, entry)
            relative = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(
                    f"{path}: a symbolic link in the bundle: a bundle's files must be in it, not linked to; "
                    f"copy the file or folder into the bundle"
                )
            if stat.S_ISDIR(mode) or relative in files or relative in record:
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(f"{path}: not a regular file or folder; a bundle holds only files and folders")
            if relative in (MANIFEST, ENGINE_RECORD) or entry.startswith(".") or _DEVICE_CACHES.fullmatch(relative):
                continue
            raise BundleError(
                f"{path}: in the bundle but not hashed in field 'files' of {MANIFEST} (nor recorded in "
                f"{ENGINE_RECORD}, where {TRT_DIR}/build_engines.sh records the engines it builds): a bundle holds "
                f"only files it can verify; remove the file or re-export the bundle"
            )
    for name, digest in record.items():
        if os.path.lexists(root / name):
            read_verified(root, name, digest, field=ENGINE_RECORD, source=ENGINE_RECORD)


def is_device_cache(name: str) -> bool:
    """Whether bundle path `name` is a build cache the device writes (not hashed by the export, never loaded)."""
    return bool(_DEVICE_CACHES.fullmatch(name))
