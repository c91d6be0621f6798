"""Inference engines by name: what runs a bundle's encoder (once per frame) and head (once per clip).

`ort` is onnxruntime (`ort.py`, `ort_graphs.py`): the CPU provider, or on `cuda`/`cuda:N` the CUDA provider
(onnxruntime-gpu) with IOBinding, so inputs already on the device are bound in place; `ort-trt` is the same with
onnxruntime's TensorRT provider first; `trt` is native TensorRT with our CUDA batching kernels (`trt.py`); `openvino`
is the INT8 encoder in OpenVINO's CPU runtime with the head in onnxruntime (`openvino.py`, the openvino extra);
`triton` sends whole clips to the fused clip graph on a Triton Inference Server (`triton.py`, tritonclient[grpc]),
its device being the server's gRPC address (`--url`). Every engine has the two calls of `Engine` (`base.py`), or
the ring calls the scheduler uses instead (`trt`, `triton`). `create_engine` opens one by name, at the precision
asked for (`auto`, `fp32`, or `int8`: the bundle's INT8 encoder, checked on this CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ks_runtime.core.bundle import Manifest
from ks_runtime.core.errors import ConfigError
from ks_runtime.engine.base import Engine, EngineError, parse_device
from ks_runtime.engine.ort import OrtEngine
from ks_runtime.engine.trt import TrtEngine

__all__ = ["ENGINES", "PRECISIONS", "Engine", "EngineError", "OrtEngine", "TrtEngine", "create_engine", "parse_device"]

PRECISIONS = ("auto", "fp32", "int8")  # what a run may ask of an engine's encoder


def _ort_trt(bundle: Manifest | Path | str, device: str = "cuda", threads: int = 0, **options) -> Engine:
    return OrtEngine(bundle, device=device, threads=threads, tensorrt=True, **options)  # refuses int8


def _trt(
    bundle: Manifest | Path | str, device: str = "cuda", threads: int = 0, precision: str = "auto", insist_int8=False
) -> Engine:
    # TensorRT's INT8 is an engine built for it (or refused): there is no fallback for insist_int8 to forbid.
    return TrtEngine(bundle, device=device, threads=threads, precision="fp16" if precision == "auto" else precision)


def _openvino(bundle: Manifest | Path | str, **options) -> Engine:
    try:
        from ks_runtime.engine.openvino import OpenVinoEngine  # deferred: openvino (the openvino extra)
    except ModuleNotFoundError as error:
        if error.name != "openvino":
            raise
        raise EngineError("engine 'openvino' needs OpenVINO's runtime (pip install .[openvino])") from None
    return OpenVinoEngine(bundle, **options)


def _triton(bundle: Manifest | Path | str, device: str = "", **options) -> Engine:
    try:
        from ks_runtime.engine.triton import TritonEngine  # deferred: tritonclient (the export extra)
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(("tritonclient", "grpc")):
            raise
        raise EngineError(
            "engine 'triton' needs tritonclient's gRPC client (pip install 'tritonclient[grpc]', or .[export])"
        ) from None
    return TritonEngine(bundle, url=device, **options)


ENGINES: dict[str, Callable[..., Engine]] = {
    "ort": OrtEngine,
    "ort-trt": _ort_trt,
    "trt": _trt,
    "openvino": _openvino,
    "triton": _triton,
}
URL_ENGINES = ("triton",)  # their device is a server's address (--url), not cpu/cuda


def _looks_like_address(device: str) -> bool:
    kind = device.strip().lower().partition(":")[0]
    return "://" in device or (":" in device and kind not in ("cpu", "cuda", "gpu"))


def create_engine(
    bundle: Manifest | Path | str,
    engine: str = "ort",
    device: str = "cpu",
    threads: int = 0,
    precision: str = "auto",
    insist_int8: bool = False,
) -> Engine:
    """The engine registered as `engine`, on `device` ('cpu', 'cuda', 'cuda:N'; for `triton` the server's gRPC
    address, 'HOST:PORT' or 'grpc://HOST:PORT[/MODEL]'), with `threads` intra-op threads (0: the engine's default).

    `precision`: "auto" (FP32 on the CPU; on a GPU the FP16 encoder when the bundle has one, or the TensorRT
    engine's FP16), "fp32", or "int8": with `ort` on the CPU the bundle's INT8 encoder, checked against FP32 on this
    CPU when the engine opens and FP32 with a warning when it fails (`insist_int8`: refused instead, EngineError;
    docs/runtime.md); with `trt` the bundle's INT8 TensorRT engine. `openvino` runs only the INT8 encoder, checked
    the same way: "auto" means "int8" there, and "fp32" is refused."""
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: known engines are {', '.join(ENGINES)}")
    if engine not in URL_ENGINES:
        if _looks_like_address(device):
            raise ConfigError(
                f"device {device!r} is a server's address, which engine 'triton' takes (--engine triton --url "
                f"{device}); engine {engine!r} runs on cpu, cuda or cuda:N"
            )
        parse_device(device)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if insist_int8 and precision != "int8":
        raise ConfigError(f"insist_int8 insists on precision 'int8', but precision is {precision!r}")
    return ENGINES[engine](bundle, device=device, threads=threads, precision=precision, insist_int8=insist_int8)
