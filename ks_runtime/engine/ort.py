"""The onnxruntime engine: the CPU provider, or on `cuda`/`cuda:N` the CUDA provider (onnxruntime-gpu) with
IOBinding, so inputs already on the device are bound in place; with `tensorrt=True` onnxruntime's TensorRT
provider first (engine and timing caches under the bundle's trt/ folder). On a GPU provider the FP16 encoder
variant is used when the bundle has one. On the CPU, `precision="int8"` runs the INT8 encoder once it has passed
its check on this CPU (int8_check.py). Every engine first checks that the bundle's encoder -> head equals its
clip graph (consistency.py). The GPU paths are written against the documented APIs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ks_runtime.core.bundle import (
    FP16_VARIANTS,
    FRAMES,
    KEY_SLOT,
    SA_LOGITS,
    STUDENT_LOGITS,
    Manifest,
    read_manifest,
)
from ks_runtime.core.bundle_files import TRT_DIR
from ks_runtime.core.errors import ConfigError
from ks_runtime.engine import gpu_probe
from ks_runtime.engine.base import Engine, EngineError, parse_device

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8")


def trt_provider_options(index: int, cache_dir: Path | None, fp16: bool) -> dict:
    """onnxruntime TensorrtExecutionProvider options: device, FP16 (for an FP32 graph), and the engine and timing
    caches in `cache_dir` (none without one)."""
    options = {"device_id": index, "trt_fp16_enable": fp16}
    if cache_dir is not None:
        options.update(
            {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
            }
        )
    return options


def ort_cache_dir(manifest: Manifest) -> Path:
    """Where onnxruntime's TensorRT provider keeps its engines: the bundle's trt/ort-cache when writable."""
    folder = manifest.root / TRT_DIR / "ort-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        import tempfile

        digest = manifest.files.get(manifest.graphs["encoder"].file, "bundle")[:12]
        fallback = Path(tempfile.gettempdir()) / "ks-ort-trt-cache" / digest
        fallback.mkdir(parents=True, exist_ok=True)
        log.info("%s is not writable; onnxruntime's TensorRT engine cache goes to %s", folder, fallback)
        return fallback


def ort_providers(device: str, tensorrt: bool = False, cache_dir: Path | None = None, fp16: bool = True) -> list:
    """onnxruntime execution providers for a device string; cuda needs onnxruntime-gpu, `tensorrt` puts the
    TensorRT provider first (it needs TensorRT's libraries too)."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if tensorrt:
            raise EngineError(
                "engine 'ort-trt' (onnxruntime's TensorRT provider) runs on a GPU: use --device cuda or cuda:N"
            )
        return ["CPUExecutionProvider"]
    reason = gpu_probe.ort_gpu_reason("CUDAExecutionProvider")
    if reason is not None:
        raise EngineError(f"device {device!r}: {reason}")
    providers: list = []
    if tensorrt:
        reason = gpu_probe.ort_gpu_reason("TensorrtExecutionProvider")
        if reason is not None:
            raise EngineError(f"engine 'ort-trt' on {device!r}: {reason}")
        providers.append(("TensorrtExecutionProvider", trt_provider_options(index, cache_dir, fp16)))
    return providers + [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def cuda_array_info(value: object) -> tuple[int, tuple[int, ...], np.dtype] | None:
    """(pointer, shape, dtype) of a C-contiguous device array (__cuda_array_interface__), else None."""
    cai = getattr(value, "__cuda_array_interface__", None)
    if cai is None:
        return None
    shape, dtype = tuple(int(d) for d in cai["shape"]), np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        want, step = [], dtype.itemsize
        for d in reversed(shape):
            want.append(step)
            step *= d
        if tuple(strides) != tuple(reversed(want)):
            raise ValueError(f"device array of shape {shape} is not C-contiguous (strides {tuple(strides)})")
    return int(cai["data"][0]), shape, dtype


class OrtEngine(Engine):
    """onnxruntime sessions for the bundle's encoder and head, checked against the manifest when opened.

    On cuda, calls go through IOBinding: numpy inputs are copied up once, device arrays (CuPy, cpp_ext.cuda,
    anything with __cuda_array_interface__) and OrtValues on the device are bound in place. `precision`:
    "auto" runs the FP16 encoder variant on a GPU when the bundle has it, "fp32" never does; "int8" (CPU only)
    runs the INT8 encoder variant when it is within its tolerance of FP32 on this CPU, else warns and runs FP32,
    or with `insist_int8` refuses (EngineError). `int8_check` holds that check's result.
    """

    name = "ort"

    def __init__(
        self,
        bundle: Manifest | Path | str,
        device: str = "cpu",
        threads: int = 0,
        tensorrt: bool = False,
        precision: str = "auto",
        insist_int8: bool = False,
    ) -> None:
        from ks_runtime.engine.consistency import check_consistency  # deferred: onnxruntime (the cpu or gpu extra)
        from ks_runtime.engine.ort_graphs import BundleGraphs  # deferred: onnxruntime (the cpu or gpu extra)

        if precision not in PRECISIONS:
            raise ConfigError(f"ort precision {precision!r}: one of {', '.join(PRECISIONS)}")
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        self.device = device
        kind, self.index = parse_device(device)
        on_gpu = kind == "cuda"
        self.int8_check = self.consistency = None
        if precision == "int8":
            self._open_int8(on_gpu or tensorrt, threads, insist_int8)
            return
        fp16 = FP16_VARIANTS["encoder"]
        variant = fp16 if on_gpu and precision == "auto" and fp16 in self.manifest.variants else None
        providers = ort_providers(device, tensorrt=tensorrt, fp16=variant is None)  # refuses before any write
        if tensorrt:
            providers[0] = (
                "TensorrtExecutionProvider",
                trt_provider_options(self.index, ort_cache_dir(self.manifest), variant is None),
            )
        self.graphs = BundleGraphs(
            self.manifest, roles=("encoder", "head"), providers=providers, threads=threads, encoder_variant=variant
        )
        used = self.graphs.sessions["encoder"].get_providers()
        wanted = "TensorrtExecutionProvider" if tensorrt else "CUDAExecutionProvider"
        if on_gpu and wanted not in used:
            raise EngineError(
                f"device {device!r}: onnxruntime could not start the {wanted} (it runs {used}); check "
                f"the CUDA, cuDNN{' and TensorRT' if tensorrt else ''} libraries onnxruntime-gpu needs"
            )
        self.providers, self.on_gpu, self.variant = used, on_gpu, variant
        if tensorrt:
            self.name = "ort-trt"
        # Graphs re-hashed over changed weights pass every sha256; they fail this (consistency.py).
        self.consistency = check_consistency(self.manifest, self.graphs, threads)

    def _open_int8(self, on_gpu: bool, threads: int, insist: bool) -> None:
        """The INT8 encoder on the CPU provider, checked on this CPU first (int8_check.open_int8)."""
        from ks_runtime.engine.consistency import checked_fp32  # deferred: onnxruntime (the cpu or gpu extra)
        from ks_runtime.engine.int8_check import open_int8  # deferred: onnxruntime (the cpu or gpu extra)

        if on_gpu:
            raise ConfigError(
                f"{self.manifest.root}: precision 'int8' runs the INT8 encoder on the CPU provider; on "
                f"{self.device!r} use precision 'auto' (the FP16 encoder) or engine 'trt' with an INT8 engine"
            )
        fp32, self.consistency = checked_fp32(self.manifest, threads)
        cpu = ["CPUExecutionProvider"]
        self.graphs, self.variant, self.int8_check = open_int8(self.manifest, cpu, threads, insist, fp32=fp32)
        self.providers, self.on_gpu = self.graphs.sessions["encoder"].get_providers(), False

    def run_bound(self, role: str, feeds: dict[str, object], outputs_on: str = "cpu") -> list:
        """Run graph `role` through IOBinding on this engine's GPU: numpy feeds go up, device arrays and
        OrtValues are bound in place; outputs come back as numpy (`outputs_on="cpu"`) or stay on the device
        as OrtValues (`"cuda"`)."""
        import onnxruntime as ort

        session = self.graphs.sessions[role]
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            elif (info := cuda_array_info(value)) is not None:
                ptr, shape, dtype = info
                binding.bind_input(name, "cuda", self.index, dtype, list(shape), ptr)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for output in session.get_outputs():
            binding.bind_output(output.name, outputs_on, self.index if outputs_on == "cuda" else 0)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu() if outputs_on == "cpu" else binding.get_outputs()

    def encode(self, frames: object) -> tuple[np.ndarray, np.ndarray]:
        """Frames [B, 3, S, S] float32 (numpy, or already on the device when on cuda) -> [B, U], [B, n, U]."""
        if not self.on_gpu:
            return self.graphs.encode(frames)
        sa, students = self.run_bound("encoder", {FRAMES: _feed(frames, np.float32)})
        return sa, students

    def head(self, sa_logits: object, student_logits: object, key_slot: object) -> np.ndarray:
        """[B, n, U], [B, n, n, U] and key slots [B] (numpy, or on the device when on cuda) -> probs [B, U]."""
        if not self.on_gpu:
            return self.graphs.head(sa_logits, student_logits, key_slot)
        feeds = {
            SA_LOGITS: _feed(sa_logits, np.float32),
            STUDENT_LOGITS: _feed(student_logits, np.float32),
            KEY_SLOT: _feed(key_slot, np.int64),
        }
        return self.run_bound("head", feeds)[0]

    def describe(self) -> str:
        variant = f", encoder {self.variant}" if self.variant else ""
        if self.int8_check is not None and self.variant is None:
            variant = ", encoder fp32 (the INT8 encoder failed its check on this CPU)"
        return f"{self.name} ({', '.join(self.providers)}{variant}) on {self.device}"


def _feed(value: object, dtype: type) -> object:
    """A device array or OrtValue as it is; anything else as a contiguous numpy array of `dtype`."""
    if cuda_array_info(value) is not None or type(value).__name__ == "OrtValue":
        return value
    return np.ascontiguousarray(value, dtype)
