"""Engine `trt`: the bundle's encoder and head as native TensorRT engines, with the data kept on the GPU.

Written against TensorRT's documented Python API (8.5+, name-based I/O: set_input_shape, set_tensor_address,
execute_async_v3) and cuda-python's runtime bindings; not run here: no GPU or TensorRT on this machine.

Engines are tied to the GPU model and the TensorRT version, so a bundle may hold several and their names
carry both: `trt/encoder.nvidia-h100-80gb-hbm3.trt10.8.0.fp16.plan` (`engine_file_name`, shared with the
exporter and the trtexec recipe). Engines listed in the manifest's `tensorrt.engines` are hash-checked against its
`files`; engines built later on the device by `trt/build_engines.sh` sit in trt/ unlisted, and the recipe records
each one's sha256 in `trt/engines.sha256`, which they are checked against. An engine is read once, checked, and
those bytes deserialised (`engine_bytes`); an engine in neither is refused (docs/bundle-format.md, "Contract").

Device path (no host round trip): uint8 crops go up once; cpp_ext's CUDA pack_frames kernel writes them,
normalised, straight into the encoder's input binding; the encoder's outputs are copied device-to-device
into per-stream device rings (`DeviceRing`, rows indexed t % R as the host rings of stream.py); the
gather_clips kernel cuts clips from a ring straight into the head's input bindings; only the probabilities
[C, U] come back. The host-array calls `encode` / `head` of `Engine` work too (one copy each way).
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ks_runtime.core.bundle import (
    FRAMES,
    KEY_SLOT,
    MANIFEST,
    PROBS,
    SA_LOGITS,
    STUDENT_LOGITS,
    GraphSpec,
    Manifest,
    read_manifest,
)
from ks_runtime.core.bundle_files import ENGINE_RECORD, TRT_DIR, bundle_path, read_engine_record, read_verified
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import check_policy, dense_clip_indices
from ks_runtime.core.preprocess import resize_square
from ks_runtime.engine import gpu_probe
from ks_runtime.engine.base import Engine, EngineError, parse_device

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_ROLES = ("encoder", "head", "clip")
RECIPE = f"{TRT_DIR}/build_engines.sh"
HEAD_PRECISION = "fp16"  # the head is tiny; every encoder precision pairs with the FP16 head


@dataclass(frozen=True)
class BatchProfile:
    """A TensorRT optimisation profile over the batch axis: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


# Encoder batches are frames (StreamConfig.batch_size is 8); head batches are clips (head_batch is 64).
DEFAULT_PROFILES = {"encoder": BatchProfile(1, 8, 32), "head": BatchProfile(1, 32, 128), "clip": BatchProfile(1, 8, 32)}


# --- names: one rule for the exporter, the recipe and the runtime ----------------------------------------------


def gpu_slug(name: str) -> str:
    """A GPU's name as a file-name part: 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"GPU name {name!r} has no letters or digits")
    return slug


def trt_version_tag(version: str) -> str:
    """major.minor.patch of a TensorRT version ('10.8.0.43' -> '10.8.0'): a plan needs that exact release."""
    parts = re.findall(r"\d+", version)
    if len(parts) < 2:
        raise ValueError(f"TensorRT version {version!r} is not major.minor[.patch]")
    return ".".join((parts + ["0"])[:3])


@dataclass(frozen=True)
class EngineName:
    """What an engine file's name says: graph, GPU (slug), TensorRT version and precision."""

    role: str
    gpu: str
    trt: str
    precision: str

    @property
    def file(self) -> str:
        return f"{self.role}.{self.gpu}.trt{self.trt}.{self.precision}.plan"


_ENGINE_RE = re.compile(
    r"^(?P<role>encoder|head|clip)\.(?P<gpu>[a-z0-9]+(?:-[a-z0-9]+)*)\.trt(?P<trt>\d+\.\d+\.\d+)"
    r"\.(?P<precision>fp32|fp16|int8)\.plan$"
)


def engine_file_name(role: str, gpu_name: str, trt_version: str, precision: str) -> str:
    """The engine file name for graph `role` built by TensorRT `trt_version` on GPU `gpu_name`."""
    if role not in ENGINE_ROLES or precision not in PRECISIONS:
        raise ValueError(
            f"engine role must be one of {ENGINE_ROLES} and precision one of {PRECISIONS}, got {role!r} / {precision!r}"
        )
    return EngineName(role, gpu_slug(gpu_name), trt_version_tag(trt_version), precision).file


def parse_engine_name(name: str) -> EngineName | None:
    """The parts of an engine file name, or None when `name` does not follow engine_file_name."""
    match = _ENGINE_RE.match(Path(name).name)
    return EngineName(**match.groupdict()) if match else None


def timing_cache_name(gpu_name: str, trt_version: str) -> str:
    """The timing cache shared by every build on one GPU model and TensorRT version."""
    return f"timing.{gpu_slug(gpu_name)}.trt{trt_version_tag(trt_version)}.cache"


# --- which engines a bundle has ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundEngine:
    name: EngineName
    path: Path
    listed: bool  # in the manifest's tensorrt.engines (hash-checked), else built on the device afterwards


def tensorrt_section(manifest: Manifest) -> dict:
    """The manifest's `tensorrt` field ({} for bundles written before it existed)."""
    section = manifest.raw.get("tensorrt", {})
    if not isinstance(section, dict) or not isinstance(section.get("engines", []), list):
        raise BundleError(f"{manifest.root / MANIFEST}: field 'tensorrt' must be an object with a list 'engines'")
    return section


def find_engines(manifest: Manifest) -> list[FoundEngine]:
    """Every engine of the bundle: those the manifest lists, then *.plan files in trt/ named by the rule."""
    found: dict[str, FoundEngine] = {}
    for i, entry in enumerate(tensorrt_section(manifest).get("engines", [])):
        file = entry.get("file") if isinstance(entry, dict) else None
        name = parse_engine_name(file or "")
        if name is None:
            raise BundleError(
                f"{manifest.root / MANIFEST}: field 'tensorrt.engines' has an entry {entry!r} whose "
                f"file is not named <graph>.<gpu>.trt<version>.<precision>.plan"
            )
        found[name.file] = FoundEngine(name, bundle_path(manifest.root, file, f"tensorrt.engines[{i}].file"), True)
    folder = manifest.root / TRT_DIR
    for path in sorted(folder.glob("*.plan")) if folder.is_dir() else []:
        name = parse_engine_name(path.name)
        if name is not None and name.file not in found:
            found[name.file] = FoundEngine(name, path, False)
    return list(found.values())


def select_engines(manifest: Manifest, gpu_name: str, trt_version: str, precision: str = "fp16") -> dict[str, Path]:
    """The encoder (at `precision`) and head engines for this GPU and TensorRT version; EngineError otherwise,
    listing the engines the bundle has and how to build the missing ones on this machine."""
    if precision not in PRECISIONS:
        raise EngineError(f"TensorRT precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    slug, tag = gpu_slug(gpu_name), trt_version_tag(trt_version)
    engines = find_engines(manifest)
    wanted = {"encoder": precision, "head": HEAD_PRECISION}
    chosen = {}
    for role, want in wanted.items():
        match = [e for e in engines if e.name == EngineName(role, slug, tag, want)]
        if match:
            chosen[role] = match[0].path
            if not match[0].listed:
                log.info("%s: built on this device after export (not in %s); using it", match[0].path, MANIFEST)
    missing = [f"{role}.{slug}.trt{tag}.{want}.plan" for role, want in wanted.items() if role not in chosen]
    if missing:
        have = ", ".join(sorted(e.name.file for e in engines)) or "none"
        raise EngineError(
            f"{manifest.root}: no TensorRT engine {' / '.join(missing)} for this GPU ({gpu_name}) and "
            f"TensorRT {tag}; the bundle has: {have}. Build them here with: bash "
            f"{manifest.root / RECIPE}{' --int8' if precision == 'int8' else ''} (engines are tied to "
            f"the GPU model and the TensorRT version)"
        )
    return chosen


def engine_bytes(manifest: Manifest, path: Path) -> bytes:
    """A chosen engine's bytes, read once (no link followed) and checked against its sha256: the manifest's for an
    engine built at export, trt/engines.sha256's for one the recipe built on the device. Unrecorded: refused."""
    name = path.relative_to(manifest.root).as_posix()
    if name in manifest.files:
        return manifest.read(name)
    record = read_engine_record(manifest.root)
    if name not in record:
        raise BundleError(
            f"{path}: an engine neither hashed in field 'files' of {MANIFEST} nor recorded in {ENGINE_RECORD}; "
            f"build it with bash {manifest.root / RECIPE}, which records each engine it builds"
        )
    return read_verified(manifest.root, name, record[name], field=ENGINE_RECORD, source=ENGINE_RECORD)


# --- CUDA: cuda-python's runtime, cpp_ext's kernels --------------------------------------------------------------


class CudaOps:
    """Device memory, copies and streams through cuda-python's runtime API; kernels from cpp_ext.cuda.

    Every call returns cuda-python's (error, value...) tuple; a non-zero error raises EngineError naming the
    call and the CUDA error. Pointers and streams travel as ints, so cpp_ext and TensorRT take them as they are.
    """

    def __init__(self, index: int = 0) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:  # cuda-python < 12.6 kept the runtime at cuda.cudart
            from cuda import cudart
        from cpp_ext import cuda as kcuda  # deferred: cpp_ext's CUDA library (built only where nvcc was found)

        self.rt, self.kcuda, self.index = cudart, kcuda, index
        self.call(cudart.cudaSetDevice(index), f"cudaSetDevice({index})")
        self._stream = self.call(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate")
        self.stream = int(self._stream)
        self._host: list[int] = []

    def call(self, result: tuple, what: str):
        """cuda-python's result tuple -> its value(s); EngineError on a CUDA error."""
        err, *values = result
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1]
            raise EngineError(f"{what}: CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
        return values[0] if len(values) == 1 else tuple(values)

    def malloc(self, nbytes: int) -> int:
        return int(self.call(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self.call(self.rt.cudaFree(ptr), "cudaFree")

    def host_array(self, shape: Sequence[int], dtype: object) -> np.ndarray:
        """A page-locked host array (cudaMallocHost), so copies to and from it are truly asynchronous."""
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        ptr = int(self.call(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        self._host.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(raw, np.uint8, count=int(np.prod(shape)) * dtype.itemsize).view(dtype).reshape(shape)

    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        kinds = self.rt.cudaMemcpyKind
        code = {
            "htod": kinds.cudaMemcpyHostToDevice,
            "dtoh": kinds.cudaMemcpyDeviceToHost,
            "dtod": kinds.cudaMemcpyDeviceToDevice,
        }[kind]
        self.call(self.rt.cudaMemcpyAsync(dst, src, nbytes, code, self.stream), f"cudaMemcpyAsync({kind})")

    def htod(self, dst: int, host: np.ndarray) -> None:
        self._copy(dst, host.ctypes.data, host.nbytes, "htod")

    def dtoh(self, host: np.ndarray, src: int) -> None:
        self._copy(host.ctypes.data, src, host.nbytes, "dtoh")

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._copy(dst, src, nbytes, "dtod")

    def synchronize(self) -> None:
        self.call(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def pack_frames(
        self, src: int, shape: tuple[int, ...], dst: int, dtype: np.dtype, mean, std, swap_rb: bool
    ) -> None:
        """uint8 crops [B, S, S, 3] at `src` -> normalised [B, 3, S, S] of `dtype` at `dst` (the kernel)."""
        b, h, w, _ = shape
        k = self.kcuda
        k.pack_frames(
            k.device_array(src, shape, np.uint8),
            mean,
            std,
            swap_rb=swap_rb,
            out=k.device_array(dst, (b, 3, h, w), dtype),
            stream=self.stream,
        )

    def gather_clips(
        self,
        ring: int,
        ring_shape: tuple[int, ...],
        dtype: np.dtype,
        first: int,
        count: int,
        ends: np.ndarray,
        n: int,
        dst: int,
        stride: int = 1,
    ) -> None:
        """Clips [len(ends), n, ...] of slots `stride` frames apart from a device ring [R, ...] into `dst` (the
        kernel); frames from 0."""
        k = self.kcuda
        k.gather_clips(
            k.device_array(ring, ring_shape, dtype),
            first,
            count,
            ends,
            n,
            stream_start=0,
            out=k.device_array(dst, (len(ends), n, *ring_shape[1:]), dtype),
            stream=self.stream,
            stride=stride,
        )

    def close(self) -> None:
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        self._host.clear()
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None


# --- one TensorRT engine with its device buffers -----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceTensor:
    """An engine input or output: its binding name, device buffer (sized for the profile's max batch),
    per-item dims (without the batch axis) and numpy dtype."""

    name: str
    ptr: int
    dims: tuple[int, ...]
    dtype: np.dtype

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.dtype.itemsize


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def check_bindings(
    path: Path, spec: GraphSpec, inputs: dict[str, DeviceTensor], outputs: dict[str, DeviceTensor], batch_dynamic: bool
) -> None:
    """An engine's tensors against the manifest's spec of its graph: names, per-item dims, a dynamic batch,
    float tensors float32/16 and key_slot int64/32. EngineError naming the file and the tensor."""
    if not batch_dynamic:
        raise EngineError(f"{path}: the engine has a fixed batch size; build it with a min/opt/max batch profile")
    for kind, want, got in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
        if [t.name for t in want] != list(got):
            raise EngineError(f"{path}: engine {kind}s {list(got)} differ from {MANIFEST}'s {[t.name for t in want]}")
        for t in want:
            tensor = got[t.name]
            if tuple(tensor.dims) != tuple(t.shape[1:]):
                raise EngineError(
                    f"{path}: {kind} {t.name!r} has per-item shape {list(tensor.dims)}, {MANIFEST} "
                    f"says {list(t.shape[1:])}"
                )
            allowed = INDEX_DTYPES if t.dtype == "int64" else FLOAT_DTYPES
            if tensor.dtype not in allowed:
                raise EngineError(
                    f"{path}: {kind} {t.name!r} is {tensor.dtype}, expected one of {', '.join(str(d) for d in allowed)}"
                )


class TrtGraph:
    """A deserialised engine, one execution context and one device buffer per tensor (max batch)."""

    def __init__(self, path: Path, plan: bytes, spec: GraphSpec, ops: CudaOps, trt_runtime) -> None:
        import tensorrt as trt

        self.path, self.ops = path, ops
        engine = trt_runtime.deserialize_cuda_engine(plan)  # the hash-checked bytes (engine_bytes), not the path
        if engine is None:
            raise EngineError(
                f"{path}: TensorRT {trt.__version__} could not deserialise this engine (built by "
                f"another TensorRT release or for another GPU?); rebuild it with {RECIPE}"
            )
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        shapes = {n: tuple(int(d) for d in engine.get_tensor_shape(n)) for n in names}
        dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        # The batch range every input's profile 0 allows: [min shape, opt shape, max shape] per input.
        profiles = [engine.get_tensor_profile_shape(n, 0) for n in names if is_input[n]]
        self.max_batch = min(int(p[2][0]) for p in profiles)
        self.min_batch = max(int(p[0][0]) for p in profiles)
        self.inputs, self.outputs = {}, {}
        for name in names:
            dims = shapes[name][1:]
            tensor = DeviceTensor(name, 0, dims, dtypes[name])
            tensor = DeviceTensor(name, ops.malloc(self.max_batch * tensor.item_bytes), dims, dtypes[name])
            (self.inputs if is_input[name] else self.outputs)[name] = tensor
            if not self.context.set_tensor_address(name, tensor.ptr):
                raise EngineError(f"{path}: set_tensor_address({name!r}) refused")
        try:
            check_bindings(path, spec, self.inputs, self.outputs, all(s[0] == -1 for s in shapes.values()))
        except EngineError:
            self.close()
            raise

    def run(self, batch: int) -> None:
        """Run on the first `batch` items of every input buffer (asynchronous on the ops' stream)."""
        if not self.min_batch <= batch <= self.max_batch:
            raise EngineError(
                f"{self.path}: batch {batch} outside the engine's profile {self.min_batch}..{self.max_batch}"
            )
        for tensor in self.inputs.values():
            if not self.context.set_input_shape(tensor.name, (batch, *tensor.dims)):
                raise EngineError(f"{self.path}: set_input_shape({tensor.name!r}, batch {batch}) refused")
        if not self.context.execute_async_v3(self.ops.stream):
            raise EngineError(f"{self.path}: execute_async_v3 failed (see TensorRT's log above)")

    def close(self) -> None:
        for tensor in (*self.inputs.values(), *self.outputs.values()):
            self.ops.free(tensor.ptr)
        self.inputs, self.outputs = {}, {}


# --- the engine ----------------------------------------------------------------------------------------------------


@dataclass
class DeviceRing:
    """One stream's per-frame encoder outputs on the device: S_a [R, U] and students [R, n, U]; frame t at row
    t % R, exactly as the host rings of stream.py."""

    rows: int
    sa: int
    students: int


class TrtEngine(Engine):
    """The bundle's encoder and head as TensorRT engines on cuda:N, with device rings and CUDA batching kernels.

    Construct with a bundle and device ('cuda', 'cuda:N'); `precision` picks the encoder engine (fp16 or
    int8; the head is always FP16). `from_parts` takes ready graphs and ops (tests drive the control flow
    with host-memory stand-ins through it).
    """

    name = "trt"

    def __init__(
        self, bundle: Manifest | Path | str, device: str = "cuda", threads: int = 0, precision: str = "fp16"
    ) -> None:
        manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        kind, index = parse_device(device)
        reason = gpu_probe.missing("tensorrt", "cuda-python")
        if reason is not None:
            raise EngineError(f"engine 'trt' (native TensorRT) is not available in this build: {reason}")
        if kind != "cuda":
            raise EngineError(
                f"engine 'trt' runs on a CUDA device; use --device cuda or cuda:N (got {device!r}), "
                f"or --engine ort on the CPU"
            )
        reason = gpu_probe.cuda_device_reason(index) or gpu_probe.missing("cuda-kernels")
        if reason is not None:
            raise EngineError(f"engine 'trt' on {device}: {reason}")
        import tensorrt as trt

        info = gpu_probe.device_info(index)
        paths = select_engines(manifest, info.name, trt.__version__, precision)
        plans = {role: engine_bytes(manifest, paths[role]) for role in ("encoder", "head")}
        ops = CudaOps(index)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._trt_logger)
        graphs: dict[str, TrtGraph] = {}
        try:
            for role in ("encoder", "head"):
                graphs[role] = TrtGraph(paths[role], plans[role], manifest.graphs[role], ops, runtime)
            self._setup(manifest, device, ops, graphs["encoder"], graphs["head"])
        except BaseException:  # free what was allocated before the refusal
            for graph in graphs.values():
                graph.close()
            ops.close()
            raise
        self.describe_text = (
            f"trt (TensorRT {trt.__version__}, {paths['encoder'].name} + {paths['head'].name}) "
            f"on {device} ({info.name})"
        )

    @classmethod
    def from_parts(cls, manifest: Manifest, device: str, ops, encoder, head) -> TrtEngine:
        """An engine over ready graphs (inputs/outputs: DeviceTensor dicts, max_batch, run(batch)) and ops."""
        engine = cls.__new__(cls)
        engine._setup(manifest, device, ops, encoder, head)
        engine.describe_text = f"trt (from parts) on {device}"
        return engine

    def _setup(self, manifest: Manifest, device: str, ops, encoder, head) -> None:
        self.manifest, self.device, self.ops, self.encoder, self.graph_head = manifest, device, ops, encoder, head
        n, u, s = manifest.clip_len, manifest.n_aus, manifest.preprocess.size
        self.frames_in = encoder.inputs[FRAMES]
        self.sa_out, self.students_out = encoder.outputs[SA_LOGITS], encoder.outputs[STUDENT_LOGITS]
        self.sa_in, self.students_in = head.inputs[SA_LOGITS], head.inputs[STUDENT_LOGITS]
        self.key_in, self.probs_out = head.inputs[KEY_SLOT], head.outputs[PROBS]
        # Rings hold the encoder's outputs as the engine wrote them; the head must read the same bytes.
        for out, inp in ((self.sa_out, self.sa_in), (self.students_out, self.students_in)):
            if out.dtype != inp.dtype:
                raise EngineError(
                    f"the encoder writes {out.name} as {out.dtype} but the head reads {inp.dtype}: "
                    f"build both engines with the same recipe"
                )
        self.ring_dtype = self.sa_out.dtype
        self.sa_row, self.students_row = self.sa_out.item_bytes, self.students_out.item_bytes  # U, n*U items
        self._crops_dev = ops.malloc(encoder.max_batch * s * s * 3)  # uint8 [maxB, S, S, 3]
        self._crops_host = ops.host_array((encoder.max_batch, s, s, 3), np.uint8)
        self._keys_host = ops.host_array((head.max_batch,), self.key_in.dtype)
        self._probs_host = ops.host_array((head.max_batch, u), self.probs_out.dtype)
        self._rings: list[DeviceRing] = []
        log.debug(
            "trt engine: encoder batch <= %d, head batch <= %d, n=%d, U=%d, ring dtype %s",
            encoder.max_batch,
            head.max_batch,
            n,
            u,
            self.ring_dtype,
        )

    def describe(self) -> str:
        return self.describe_text

    # --- the Engine interface on host arrays (one copy each way) ----------------------------------------------
    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed frames [B, 3, S, S] -> S_a logits [B, U], student logits [B, n, U] (host arrays)."""
        b, n, u = len(frames), self.clip_len, self.n_aus
        sa, students = np.empty((b, u), np.float32), np.empty((b, n, u), np.float32)
        step = self.encoder.max_batch
        for start in range(0, b, step):
            chunk = np.ascontiguousarray(frames[start : start + step], self.frames_in.dtype)
            self.ops.htod(self.frames_in.ptr, chunk)
            self.encoder.run(len(chunk))
            sa_host = np.empty((len(chunk), u), self.ring_dtype)
            students_host = np.empty((len(chunk), n, u), self.ring_dtype)
            self.ops.dtoh(sa_host, self.sa_out.ptr)
            self.ops.dtoh(students_host, self.students_out.ptr)
            self.ops.synchronize()
            sa[start : start + len(chunk)], students[start : start + len(chunk)] = sa_host, students_host
        return sa, students

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        """Clips' per-frame outputs [B, n, U], [B, n, n, U] and key slots [B] -> probabilities [B, U]."""
        b, probs = len(key_slot), np.empty((len(key_slot), self.n_aus), np.float32)
        step = self.graph_head.max_batch
        for start in range(0, b, step):
            end = min(b, start + step)
            self.ops.htod(self.sa_in.ptr, np.ascontiguousarray(sa_logits[start:end], self.ring_dtype))
            self.ops.htod(self.students_in.ptr, np.ascontiguousarray(student_logits[start:end], self.ring_dtype))
            probs[start:end] = self._run_head(np.asarray(key_slot[start:end]))
        return probs

    def _run_head(self, key_slot: np.ndarray) -> np.ndarray:
        """The head on the clips already in its input bindings; key slots go up, probabilities come down."""
        c = len(key_slot)
        self._keys_host[:c] = key_slot  # free: every head run ends with a synchronize
        self.ops.htod(self.key_in.ptr, self._keys_host[:c])
        self.graph_head.run(c)
        self.ops.dtoh(self._probs_host[:c], self.probs_out.ptr)
        self.ops.synchronize()
        return self._probs_host[:c].astype(np.float32)

    # --- the device path --------------------------------------------------------------------------------------
    def open_ring(self, rows: int) -> DeviceRing:
        """Device ring buffers for one stream: `rows` frames of S_a and student logits."""
        if rows < 1:
            raise ValueError(f"a ring needs at least one row, got {rows}")
        ring = DeviceRing(rows, self.ops.malloc(rows * self.sa_row), self.ops.malloc(rows * self.students_row))
        self._rings.append(ring)
        return ring

    def close_ring(self, ring: DeviceRing) -> None:
        self.ops.free(ring.sa)
        self.ops.free(ring.students)
        self._rings.remove(ring)

    def encode_crops(self, crops: np.ndarray, targets: Sequence[tuple[DeviceRing, int]]) -> None:
        """uint8 aligned crops [B, S, S, 3] (RGB) -> the encoder, each frame's outputs into ring row `targets[i]`.

        The crops go up once; pack_frames writes them normalised into the encoder's input binding; the outputs
        move device-to-device into the rings, a run of consecutive rows of one ring in one copy.
        """
        s, p = self.manifest.preprocess.size, self.manifest.preprocess
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise ValueError(f"encode_crops: crops must be uint8 [B, {s}, {s}, 3], got {crops.dtype} {crops.shape}")
        if len(targets) != len(crops):
            raise ValueError(f"encode_crops: {len(crops)} crops but {len(targets)} ring targets")
        step = self.encoder.max_batch
        for start in range(0, len(crops), step):
            b = min(step, len(crops) - start)
            self.ops.synchronize()  # the staging buffer may still feed the previous chunk's upload
            self._crops_host[:b] = crops[start : start + b]
            self.ops.htod(self._crops_dev, self._crops_host[:b])
            self.ops.pack_frames(
                self._crops_dev,
                (b, s, s, 3),
                self.frames_in.ptr,
                self.frames_in.dtype,
                p.mean,
                p.std,
                p.colour == "BGR",
            )
            self.encoder.run(b)
            for i, ring, row, count in _row_runs(targets[start : start + b]):
                self.ops.dtod(ring.sa + row * self.sa_row, self.sa_out.ptr + i * self.sa_row, count * self.sa_row)
                self.ops.dtod(
                    ring.students + row * self.students_row,
                    self.students_out.ptr + i * self.students_row,
                    count * self.students_row,
                )

    def head_clips(
        self, requests: Sequence[tuple[DeviceRing, int, int, np.ndarray]], key_slot: np.ndarray
    ) -> np.ndarray:
        """Clips cut from device rings by the gather kernel straight into the head's inputs -> probs [C, U].

        requests: (ring, first, count, clip_ends) per ring, as ops.gather_clips takes them (the ring holds frames
        first..first+count-1 of a stream numbered from 0); key_slot [C] in the same clip order.
        """
        n, u, stride = self.clip_len, self.n_aus, self.clip_stride
        clips = [(ring, first, count, int(end)) for ring, first, count, ends in requests for end in np.ravel(ends)]
        if len(clips) != len(key_slot):
            raise ValueError(f"head_clips: {len(clips)} clips but {len(key_slot)} key slots")
        probs = np.empty((len(clips), u), np.float32)
        step = self.graph_head.max_batch
        for start in range(0, len(clips), step):
            chunk, offset = clips[start : start + step], 0
            for ring, first, count, ends in _clip_groups(chunk):
                self.ops.gather_clips(
                    ring.sa,
                    (ring.rows, u),
                    self.ring_dtype,
                    first,
                    count,
                    ends,
                    n,
                    self.sa_in.ptr + offset * n * self.sa_row,
                    stride,
                )
                self.ops.gather_clips(
                    ring.students,
                    (ring.rows, n, u),
                    self.ring_dtype,
                    first,
                    count,
                    ends,
                    n,
                    self.students_in.ptr + offset * n * self.students_row,
                    stride,
                )
                offset += len(ends)
            probs[start : start + len(chunk)] = self._run_head(np.asarray(key_slot[start : start + len(chunk)]))
        return probs

    def dense_probabilities(self, frames: np.ndarray, policy: str | None = None) -> np.ndarray:
        """uint8 RGB aligned crops [T, H, W, 3] of one video -> probabilities [T, U] under a key-slot policy,
        entirely on the device but the crops going up and the probabilities coming down.

        Same clips and mean as ort_graphs.BundleGraphs.dense_probabilities: the encoder once per frame into a
        device ring of T rows, then every clip of `dense_clip_indices` cut by the gather kernel."""
        policy = check_policy(policy or self.manifest.policy)
        s, n = self.manifest.preprocess.size, self.clip_len
        if frames.shape[1:3] != (s, s):
            frames = np.stack([resize_square(f, s) for f in frames])
        length = len(frames)
        ring = self.open_ring(length)
        try:
            self.encode_crops(np.ascontiguousarray(frames, np.uint8), [(ring, t) for t in range(length)])
            _, slots = dense_clip_indices(length, n, policy, self.clip_stride)  # (T, k)
            ends = np.arange(length)[:, None] + (n - 1 - slots) * self.clip_stride  # each clip's unclamped end
            probs = self.head_clips([(ring, 0, length, ends.reshape(-1))], slots.reshape(-1))
        finally:
            self.close_ring(ring)
        return probs.reshape(length, slots.shape[1], -1).mean(1)  # (T, U)

    def close(self) -> None:
        """Free every device buffer, ring and stream."""
        for ring in list(self._rings):
            self.close_ring(ring)
        for graph in (self.encoder, self.graph_head):
            if hasattr(graph, "close"):
                graph.close()
        self.ops.free(self._crops_dev)
        if hasattr(self.ops, "close"):
            self.ops.close()


def _row_runs(targets: Sequence[tuple[DeviceRing, int]]) -> list[tuple[int, DeviceRing, int, int]]:
    """(first batch index, ring, first row, row count) for runs of consecutive rows of one ring."""
    runs: list[list] = []
    for i, (ring, row) in enumerate(targets):
        if not 0 <= row < ring.rows:
            raise IndexError(f"ring row {row} outside a ring of {ring.rows} rows")
        last = runs[-1] if runs else None
        if last is not None and last[1] is ring and last[2] + last[3] == row:
            last[3] += 1
        else:
            runs.append([i, ring, row, 1])
    return [tuple(r) for r in runs]


def _clip_groups(clips: Sequence[tuple[DeviceRing, int, int, int]]) -> list[tuple[DeviceRing, int, int, np.ndarray]]:
    """Consecutive clips of the same ring window, as one gather call each: (ring, first, count, ends)."""
    groups: list[tuple[DeviceRing, int, int, list[int]]] = []
    for ring, first, count, end in clips:
        if groups and groups[-1][0] is ring and groups[-1][1:3] == (first, count):
            groups[-1][3].append(end)
        else:
            groups.append((ring, first, count, [end]))
    return [(ring, first, count, np.asarray(ends, np.int64)) for ring, first, count, ends in groups]
