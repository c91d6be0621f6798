"""The model bundle's manifest: the contract between export and the runtime (docs/bundle-format.md).

`ks-export` writes it; this torch-free reader is the only one anything uses. A bundle whose manifest is
missing, malformed, of an unknown version, lacking a field its version requires, naming a path outside the
bundle, or whose files disagree with their hashes is refused with a message naming the file and the field.
Files are read through bundle_files.py (no links, bytes read once and hashed); `Manifest.read` gives a file's
verified bytes to the engines. The graphs' tensor names and shapes are defined once here (`graph_specs`),
written by the exporter and checked against the opened graphs through `check_io`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ks_runtime.core.au import au_set_from_numbers, parse_au_column
from ks_runtime.core.bundle_files import (
    MANIFEST,
    bundle_path,
    check_tree,
    read_inside,
    read_verified,
)
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import POLICIES
from ks_runtime.core.preprocess import Preprocess

FORMAT = "ks-bundle"
# Version 2 adds model.clip_stride. A strided bundle is written as version 2, so a runtime that predates strides
# refuses it instead of streaming adjacent frames; a stride-1 bundle stays version 1, readable by both.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Fields every writer of a version wrote, whose absence the reader would otherwise fill with a default that changes
# what the bundle means: {field: (the first version that requires it, what its absence would mean)}. Version 1
# bundles predate both, and their defaults are what they meant.
REQUIRED_SINCE = {
    "model.clip_stride": (2, "stride 1: clips of adjacent frames"),
    "alignment.template": (2, "the SynthAU alignment template"),
}
GRAPH_ROLES = ("encoder", "head", "clip")
GRAPH_FILES = {"encoder": "encoder.onnx", "head": "head.onnx", "clip": "clip.onnx"}
BATCH = "B"  # the dynamic batch axis in manifest shapes

# Tensor names, shared by the exporter and every engine.
FRAMES = "frames"  # encoder in:  [B, 3, S, S] float32, preprocessed (to_network_input)
SA_LOGITS = "sa_logits"  # encoder out: [B, U]; head in: [B, n, U]
STUDENT_LOGITS = "student_logits"  # encoder out: [B, n, U]; head in: [B, n, n, U] [frame, student, AU]
KEY_SLOT = "key_slot"  # head and clip in: [B] int64, the slot of the frame being scored
CLIPS = "clips"  # clip in: [B, n, 3, S, S] float32
PROBS = "probs"  # head and clip out: [B, U], the key frame's probabilities

# Variants replace a graph with another build of it (another precision or engine); same tensors.
ENCODER_INT8 = "encoder_int8"  # QDQ, 7-bit int8 weights, uint8 activations: the CPU provider, any x86 CPU
ENCODER_INT8_TRT = "encoder_int8_trt"  # QDQ, symmetric int8 activations: what TensorRT's explicit INT8 takes
FP16_VARIANTS = {"encoder": "encoder_fp16", "head": "head_fp16", "clip": "clip_fp16"}  # float32 in and out
# A handful of test frames (uint8 RGB [N, S, S, 3], numpy .npy) on which an engine re-checks a variant on the CPU it
# runs on (the INT8 encoder: ks_runtime/engine/int8_check.py); manifest fields 'check_frames', 'variants.*.check'.
CHECK_FRAMES = "check_frames.npy"
# Training sets of synthetic faces, by `training.dataset.name`: a model trained only on one of them has never seen a
# real face, and every run says so (`Manifest.provenance_warning`).
SYNTHETIC_TRAINING = {"synthau": "SynthAU's drawn faces"}


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype, and shape with "B" for the dynamic batch axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def graph_specs(clip_len: int, n_aus: int, size: int) -> dict[str, GraphSpec]:
    """The three graphs' files, tensor names and shapes for a model with n = clip_len, U = n_aus, S = size."""
    n, u, b = clip_len, n_aus, BATCH

    def f32(name: str, *shape: int | str) -> TensorSpec:
        return TensorSpec(name, "float32", (b, *shape))

    key_slot = TensorSpec(KEY_SLOT, "int64", (b,))
    probs = (f32(PROBS, u),)
    return {
        "encoder": GraphSpec(
            GRAPH_FILES["encoder"], (f32(FRAMES, 3, size, size),), (f32(SA_LOGITS, u), f32(STUDENT_LOGITS, n, u))
        ),
        "head": GraphSpec(GRAPH_FILES["head"], (f32(SA_LOGITS, n, u), f32(STUDENT_LOGITS, n, n, u), key_slot), probs),
        "clip": GraphSpec(GRAPH_FILES["clip"], (f32(CLIPS, n, 3, size, size), key_slot), probs),
    }


@dataclass
class Manifest:
    """Everything the runtime needs to know about a bundle; `raw` keeps every field as written."""

    root: Path
    au_columns: tuple[str, ...]
    au_names: tuple[str, ...]
    clip_len: int
    method: str
    fusion: str
    policy: str
    thresholds: tuple[float, ...]
    preprocess: Preprocess
    alignment: dict
    opset: int
    graphs: dict[str, GraphSpec]
    variants: dict[str, dict]
    files: dict[str, str]
    raw: dict = field(repr=False)
    producer: dict = field(default_factory=dict)
    clip_stride: int = 1  # frames between a clip's slots (model.clip_stride); bundles before it hold 1

    @property
    def n_aus(self) -> int:
        return len(self.au_columns)

    @property
    def au_numbers(self) -> tuple[int, ...]:
        return tuple(parse_au_column(c) for c in self.au_columns)

    @property
    def training_dataset(self) -> str:
        """The dataset the model was trained on, `training.dataset.name` as the export recorded it from the
        checkpoint ("" when the manifest does not say)."""
        training = self.raw.get("training")
        dataset = training.get("dataset") if isinstance(training, dict) else None
        name = dataset.get("name") if isinstance(dataset, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def provenance_warning(self) -> str | None:
        """What a run must say first when the model was trained only on synthetic faces (None otherwise)."""
        faces = SYNTHETIC_TRAINING.get(self.training_dataset.lower())
        if faces is None:
            return None
        return f"this model was trained only on {faces}; its outputs on real faces are not validated"

    def file_name(self, role: str) -> str:
        """The bundle path of a graph ("encoder" -> "encoder.onnx") or of a variant ("encoder_int8")."""
        if role in self.graphs:
            return self.graphs[role].file
        if role in self.variants:
            return self.variants[role]["file"]
        raise BundleError(
            f"{self.root / MANIFEST}: no graph or variant {role!r} "
            f"(graphs: {', '.join(self.graphs)}; variants: {', '.join(self.variants) or 'none'})"
        )

    def path(self, role: str) -> Path:
        """The file of a graph ("encoder") or of a variant ("encoder_int8"); to load it, use `read`."""
        kind = "graphs" if role in self.graphs else "variants"
        return bundle_path(self.root, self.file_name(role), f"{kind}.{role}.file")

    def read(self, name: str) -> bytes:
        """Bundle file `name`'s bytes, read once without following links and checked against its sha256 in
        field 'files' (bundle_files.read_verified): what an engine loads, so it runs the bytes that were hashed."""
        if name not in self.files:
            raise BundleError(f"{self.root / MANIFEST}: field 'files' has no sha256 for {name}")
        return read_verified(self.root, name, self.files[name])

    def graph_of(self, name: str) -> str:
        """The graph role whose tensors a graph or variant has: "encoder_int8" -> "encoder"."""
        if name in self.graphs:
            return name
        if name in self.variants:
            return self.variants[name]["graph"]
        self.path(name)  # raises, naming what there is
        return name


def sha256_file(path: Path) -> str:
    """A file's sha256, read in chunks (the exporter hashes what it wrote; the reader uses `read_verified`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _get(data: dict, dotted: str, kind: type | tuple[type, ...], where: Path) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(f"{where}: missing field {dotted!r}")
        node = node[part]
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BundleError(f"{where}: field {dotted!r} should be {names}, got {type(node).__name__}")
    return node


def _tensor(data: Any, where: Path, field_name: str) -> TensorSpec:
    if not isinstance(data, dict) or not {"name", "dtype", "shape"} <= set(data):
        raise BundleError(f"{where}: field {field_name!r} needs name, dtype and shape")
    if not isinstance(data["shape"], list):
        raise BundleError(f"{where}: field {field_name!r} has a bad shape {data['shape']!r}")
    shape = tuple(data["shape"])
    if not all((isinstance(d, int) and not isinstance(d, bool)) or d == BATCH for d in shape):
        raise BundleError(f"{where}: field {field_name!r} has a bad shape {list(shape)}")
    return TensorSpec(str(data["name"]), str(data["dtype"]), shape)


def read_manifest(root: Path | str, verify_hashes: bool = True) -> Manifest:
    """Read and check a bundle's manifest.json; by default also every file's sha256 and the bundle's tree (no
    links, no file the manifest does not hash: `verify_files`)."""
    root = Path(root)
    path = root / MANIFEST
    data = _load_manifest_json(root, path)
    version = _read_version(data, path)
    _require_version_fields(data, path, version)
    model = _read_model(data, path, version)
    producer = _get(data, "producer", dict, path)
    _get(data, "producer.version", str, path)
    thresholds = _read_thresholds(data, path, len(model.columns))
    policy = _get(data, "policy.default", str, path)
    if policy not in POLICIES:
        raise BundleError(f"{path}: field 'policy.default' is {policy!r}; known: {', '.join(POLICIES)}")
    try:
        preprocess = Preprocess.from_dict(_get(data, "preprocess", dict, path))
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{path}: field 'preprocess': {error}") from None
    graphs = _read_graphs(data, path)
    _check_graph_specs(graphs, graph_specs(model.clip_len, len(model.columns), preprocess.size), path)
    variants = _read_variants(data, path)
    _get(data, "alignment", dict, path)
    manifest = Manifest(
        root=root,
        au_columns=model.columns,
        au_names=model.au_names,
        clip_len=model.clip_len,
        method=_get(data, "model.method", str, path),
        fusion=_get(data, "model.fusion", str, path),
        policy=policy,
        thresholds=thresholds,
        preprocess=preprocess,
        alignment=dict(data["alignment"]),
        opset=_get(data, "opset", int, path),
        graphs=graphs,
        variants=variants,
        files=_read_files(data, path, root),
        raw=data,
        producer=dict(producer),
        clip_stride=model.clip_stride,
    )
    _check_named_paths(manifest, _read_checks(data, variants, path))
    if verify_hashes:
        verify_files(manifest)
    return manifest


def _load_manifest_json(root: Path, path: Path) -> dict:
    """The manifest's JSON object, refused unless the folder, the file and the 'format' field are there."""
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    if not os.path.lexists(path):
        raise BundleError(f"{path}: missing; a bundle is a folder written by `ks-export`")
    try:
        data = json.loads(read_inside(root, MANIFEST, MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: malformed JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{path}: field 'format' is not {FORMAT!r}: not a Knowledge-Spreader bundle")
    return data


def _read_version(data: dict, path: Path) -> int:
    version = _get(data, "format_version", int, path)
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"{path}: field 'format_version' is {version}; this runtime reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return version


def _require_version_fields(data: dict, path: Path, version: int) -> None:
    """A field REQUIRED_SINCE says this version's writers always wrote must be there: its default would change what
    the bundle means (a version 2 manifest without model.clip_stride is not a stride-1 bundle, it is a broken one)."""
    for dotted, (since, default) in REQUIRED_SINCE.items():
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if version >= since and node is None:
            raise BundleError(
                f"{path}: missing field {dotted!r}, required in a version {version} manifest (every writer of version "
                f"{since} and later writes it; reading it as absent would mean {default})"
            )


@dataclass(frozen=True)
class _ModelFields:
    """The manifest's model fields that shape the graphs: the AUs, their names, n and the clip stride."""

    columns: tuple[str, ...]
    au_names: tuple[str, ...]
    clip_len: int
    clip_stride: int


def _read_model(data: dict, path: Path, version: int) -> _ModelFields:
    columns = tuple(_get(data, "model.au_columns", list, path))
    try:
        au_set_from_numbers([parse_au_column(c) for c in columns])
    except ValueError as error:
        raise BundleError(f"{path}: field 'model.au_columns': {error}") from None
    n_aus = _get(data, "model.n_aus", int, path)
    if n_aus != len(columns):
        raise BundleError(f"{path}: field 'model.n_aus' is {n_aus} but 'model.au_columns' lists {len(columns)} AUs")
    au_names = _get(data, "model.au_names", list, path)
    if len(au_names) != len(columns):
        raise BundleError(f"{path}: field 'model.au_names' has {len(au_names)} names for {len(columns)} AUs")
    clip_len = _get(data, "model.clip_len", int, path)
    # Absent only in version 1 (REQUIRED_SINCE), where it meant adjacent frames.
    clip_stride = _get(data, "model.clip_stride", int, path) if "clip_stride" in data["model"] else 1
    if clip_stride < 1:
        raise BundleError(f"{path}: field 'model.clip_stride' must be >= 1, got {clip_stride}")
    if clip_stride != 1 and version < 2:
        raise BundleError(
            f"{path}: field 'model.clip_stride' is {clip_stride} in a version {version} manifest; "
            f"strided bundles are version 2"
        )
    return _ModelFields(columns, tuple(str(a) for a in au_names), clip_len, clip_stride)


def _read_thresholds(data: dict, path: Path, n_aus: int) -> tuple[float, ...]:
    thresholds = []
    for i, value in enumerate(_get(data, "thresholds", list, path)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise BundleError(f"{path}: field 'thresholds[{i}]' should be a probability in [0, 1], got {value!r}")
        thresholds.append(float(value))
    if len(thresholds) != n_aus:
        raise BundleError(f"{path}: field 'thresholds' has {len(thresholds)} values for {n_aus} AUs")
    return tuple(thresholds)


def _read_graphs(data: dict, path: Path) -> dict[str, GraphSpec]:
    graphs = {}
    for role, spec in _get(data, "graphs", dict, path).items():
        graphs[role] = GraphSpec(
            file=_get(spec, "file", str, path),
            inputs=tuple(_tensor(t, path, f"graphs.{role}.inputs") for t in _get(spec, "inputs", list, path)),
            outputs=tuple(_tensor(t, path, f"graphs.{role}.outputs") for t in _get(spec, "outputs", list, path)),
        )
    missing_roles = [r for r in GRAPH_ROLES if r not in graphs]
    if missing_roles:
        raise BundleError(f"{path}: field 'graphs' lacks {', '.join(missing_roles)}")
    return graphs


def _read_variants(data: dict, path: Path) -> dict[str, dict]:
    variants = _get(data, "variants", dict, path)
    for name, variant in variants.items():
        if (
            not isinstance(variant, dict)
            or not isinstance(variant.get("file"), str)
            or variant.get("graph") not in GRAPH_ROLES
        ):
            raise BundleError(
                f"{path}: field 'variants.{name}' needs a 'file' and a 'graph' (one of {', '.join(GRAPH_ROLES)})"
            )
    return dict(variants)


def _read_checks(data: dict, variants: dict[str, dict], path: Path) -> list[str]:
    """The optional check frames and each variant's check record (its frames and tolerance): the files they name."""
    files = []
    if "check_frames" in data:
        files.append(_get(data, "check_frames.file", str, path))
        _get(data, "check_frames.count", int, path)
    for name, variant in variants.items():
        if "check" not in variant:
            continue
        where = f"variants.{name}.check"
        check = _get(data, where, dict, path)
        frames = _get(data, f"{where}.frames", str, path)
        if frames not in files:
            raise BundleError(f"{path}: field '{where}.frames' names {frames!r}, but field 'check_frames' does not")
        for number in ("tolerance", "max_abs_probs"):
            value = _get(data, f"{where}.{number}", (int, float), path)
            if isinstance(value, bool) or not 0 <= value <= 1:
                raise BundleError(f"{path}: field '{where}.{number}' should be a probability in [0, 1], got {value!r}")
        if _get(data, f"{where}.policy", str, path) not in POLICIES:
            raise BundleError(f"{path}: field '{where}.policy' is {check['policy']!r}; known: {', '.join(POLICIES)}")
    return files


def _read_files(data: dict, path: Path, root: Path) -> dict[str, str]:
    files = _get(data, "files", dict, path)
    for name, digest in files.items():
        bundle_path(root, name, f"files.{name}")
        if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise BundleError(f"{path}: field 'files.{name}' must map a path inside the bundle to a sha256 hex digest")
    return dict(files)


def named_paths(manifest: Manifest, check_files: list[str]) -> list[tuple[str, object]]:
    """(field, value) of every file path the manifest names outside 'files': graphs, variants, check frames
    (`check_files`), Triton's configs and models, the TensorRT recipe and engines (and the graphs they came from)."""
    where = manifest.root / MANIFEST
    named: list[tuple[str, object]] = [(f"graphs.{r}.file", g.file) for r, g in manifest.graphs.items()]
    named += [(f"variants.{n}.file", v["file"]) for n, v in manifest.variants.items()]
    named += [("check_frames.file", f) for f in check_files]
    serving = manifest.raw.get("serving", {})
    if not isinstance(serving, dict) or not all(isinstance(e, dict) for e in serving.values()):
        raise BundleError(f"{where}: field 'serving' must map each repository to an object")
    for name, entry in serving.items():
        named += [(f"serving.{name}.{key}", entry[key]) for key in ("config", "file", "copy_of") if key in entry]
    tensorrt = manifest.raw.get("tensorrt", {})
    engines = tensorrt.get("engines", []) if isinstance(tensorrt, dict) else None
    if not isinstance(engines, list) or not all(isinstance(e, dict) for e in engines):
        raise BundleError(f"{where}: field 'tensorrt' must be an object with a list of objects 'engines'")
    if isinstance(tensorrt.get("recipe"), dict) and "file" in tensorrt["recipe"]:
        named.append(("tensorrt.recipe.file", tensorrt["recipe"]["file"]))
    for i, entry in enumerate(engines):
        named += [(f"tensorrt.engines[{i}].{key}", entry[key]) for key in ("file", "source") if key in entry]
    return named


def _check_named_paths(manifest: Manifest, check_files: list[str]) -> None:
    """Every path the manifest names is inside the bundle (`bundle_path`, the one check) and hashed in 'files'."""
    where = manifest.root / MANIFEST
    for field_name, name in named_paths(manifest, check_files):
        bundle_path(manifest.root, name, field_name)
        if name not in manifest.files:
            raise BundleError(f"{where}: field 'files' has no sha256 for {name} (named by field {field_name!r})")


def _check_graph_specs(graphs: dict[str, GraphSpec], expected: dict[str, GraphSpec], where: Path) -> None:
    """The manifest's tensor names, dtypes and shapes must be the ones this runtime feeds and reads."""
    for role, want in expected.items():
        for kind in ("inputs", "outputs"):
            got = getattr(graphs[role], kind)
            if got != getattr(want, kind):
                raise BundleError(
                    f"{where}: field 'graphs.{role}.{kind}' is {[t.to_dict() for t in got]}, but "
                    f"model.clip_len, model.n_aus and preprocess.size give "
                    f"{[t.to_dict() for t in getattr(want, kind)]}"
                )


def verify_files(manifest: Manifest) -> None:
    """The bundle holds no link and no file it does not hash (bundle_files.check_tree), and every file listed in
    the manifest is there, reached without a link, with the recorded sha256 (and no ONNX external data)."""
    for name, expected in manifest.files.items():
        read_verified(manifest.root, name, expected)
    check_tree(manifest.root, manifest.files)


def check_io(
    manifest: Manifest, role: str, inputs: list[tuple], outputs: list[tuple], where: Path | None = None
) -> None:
    """Compare a graph's actual inputs and outputs, (name, shape) or (name, shape, dtype), with the manifest's
    spec of graph `role`; "B" must be a dynamic dim. `where` names the file opened (default: the role's file)."""
    spec = manifest.graphs[role]
    where = where or manifest.root / spec.file
    for kind, expected, actual in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
        if [t.name for t in expected] != [item[0] for item in actual]:
            raise BundleError(
                f"{where}: {kind} names {[item[0] for item in actual]} differ from {MANIFEST}'s "
                f"{[t.name for t in expected]}"
            )
        for tensor, item in zip(expected, actual, strict=True):
            shape = item[1]
            # A dynamic dim (any symbol, or None) stands for "B"; a fixed batch where "B" is due is an error.
            fixed = [d if isinstance(d, int) else BATCH for d in shape]
            if len(fixed) != len(tensor.shape) or any(e != a for e, a in zip(tensor.shape, fixed, strict=True)):
                raise BundleError(
                    f"{where}: {kind} {tensor.name!r} has shape {list(shape)}, {MANIFEST} says {list(tensor.shape)}"
                )
            if len(item) > 2 and item[2] != tensor.dtype:
                raise BundleError(f"{where}: {kind} {tensor.name!r} is {item[2]}, {MANIFEST} says {tensor.dtype}")
