"""TensorRT engines for a bundle: the trtexec recipe (always), and engines built with the Python API (--trt).

Every export writes `trt/build_engines.sh`: the trtexec commands that build the encoder and head engines
(FP16; INT8 from the symmetric QDQ encoder; the clip engine for Triton) on the GPU that will run them, so a
Jetson user builds on the device itself. `ks-export --trt` also builds them here when TensorRT and a GPU
are present: explicit batch, one optimisation profile over the batch axis (min/opt/max), FP16/INT8 by the
rules of `build_step`, a timing cache shared by the builds, engines named by GPU and TensorRT version
(ks_runtime.engine.trt.engine_file_name) and recorded in the manifest's `tensorrt` field.

Precision differs by TensorRT major version, and `build_step` is the one rule both paths follow:
TensorRT 8/9 builds FP16 with the FP16 flag (weak typing) and INT8 from Q/DQ nodes with the INT8 flag;
TensorRT 10 builds strongly typed networks from our FP16 ONNX variant and from the Q/DQ encoder (weak
typing is deprecated there, and explicit quantization wants strong typing); TensorRT 11 has no precision
flags at all: precision comes from the graph. TensorRT's Q/DQ must be symmetric int8 (zero point 0), so the
CPU's INT8 encoder (uint8 activations) does not serve: --trt --int8 adds encoder.int8.trt.onnx.

The Python builder is written against TensorRT's documented API; docs/gpu.md says where it has run.
The recipe's fixed part is the shell template ks_export/templates/build_engines.sh.
"""

from __future__ import annotations

import logging
import shlex
import string
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ks_export import ExportError
from ks_export.onnx_export import quiet_loggers
from ks_export.quantize import CALIB_BATCH, QUANT_LOGGERS, FrameReader
from ks_runtime.core.bundle import GRAPH_FILES, GraphSpec, sha256_file
from ks_runtime.core.bundle_files import TRT_DIR
from ks_runtime.engine import gpu_probe
from ks_runtime.engine.trt import (
    DEFAULT_PROFILES,
    HEAD_PRECISION,
    RECIPE,
    BatchProfile,
    engine_file_name,
    timing_cache_name,
    trt_version_tag,
)

log = logging.getLogger(__name__)

INT8_TRT_FILE = "encoder.int8.trt.onnx"
FP16_FILES = {role: GRAPH_FILES[role].replace(".onnx", ".fp16.onnx") for role in GRAPH_FILES}
DEFAULT_WORKSPACE_MIB = 2048
TRT_MAJORS = (8, 10, 11)  # the precision rules change at 10 (strong typing) and 11 (no precision flags)
# The recipe's engines: (graph, precision, the script's variable that must be 1 for it, "" for always).
RECIPE_JOBS = (
    ("encoder", "fp16", ""),
    ("head", HEAD_PRECISION, ""),
    ("encoder", "int8", "INT8"),
    ("clip", "fp16", "CLIP"),
)


@dataclass(frozen=True)
class BuildStep:
    """How one engine is built: from which ONNX file of the bundle, with which trtexec flags and builder flags,
    and whether the network is strongly typed (precision from the graph)."""

    role: str
    precision: str
    source: str
    trtexec_flags: tuple[str, ...] = ()
    builder_flags: tuple[str, ...] = ()  # tensorrt.BuilderFlag names
    strongly_typed: bool = False


def build_step(trt_major: int, role: str, precision: str, files: set[str]) -> BuildStep | None:
    """The rule for building graph `role` at `precision` with TensorRT `trt_major` from the bundle's `files`;
    None when the bundle lacks the ONNX file that precision needs on that TensorRT (see the module doc)."""
    fp32, fp16 = GRAPH_FILES[role], FP16_FILES[role]
    if precision == "fp32":
        return BuildStep(role, precision, fp32, strongly_typed=trt_major >= 11)
    if precision == "fp16":
        if trt_major >= 10 and fp16 in files:
            flags = ("--stronglyTyped",) if trt_major == 10 else ()
            return BuildStep(role, precision, fp16, flags, strongly_typed=True)
        if trt_major >= 11:
            return None  # no FP16 flag any more: the FP16 ONNX variant is required
        return BuildStep(role, precision, fp32, ("--fp16",), ("FP16",))
    if precision == "int8":
        if role != "encoder" or INT8_TRT_FILE not in files:
            return None
        if trt_major >= 10:
            return BuildStep(
                role, precision, INT8_TRT_FILE, ("--stronglyTyped",) if trt_major == 10 else (), strongly_typed=True
            )
        return BuildStep(role, precision, INT8_TRT_FILE, ("--int8", "--fp16"), ("INT8", "FP16"))
    raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")


def profile_shapes(spec: GraphSpec, profile: BatchProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Each input's (min, opt, max) shape: the manifest's shape with the batch axis at the profile's sizes."""
    return {
        t.name: tuple(
            tuple(b if d == "B" else int(d) for d in t.shape) for b in (profile.min, profile.opt, profile.max)
        )
        for t in spec.inputs
    }


def shapes_flag(shapes: dict[str, tuple[tuple[int, ...], ...]], which: int) -> str:
    """trtexec's shape syntax for one end of the profile: 'frames:1x3x64x64,key_slot:1'."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims[which])}" for name, dims in shapes.items())


def trtexec_args(
    step: BuildStep, spec: GraphSpec, profile: BatchProfile, engine: str, cache: str, workspace: str
) -> list[str]:
    """The trtexec arguments that build one engine (paths as given: they may be shell expressions)."""
    shapes = profile_shapes(spec, profile)
    return [
        f"--onnx={step.source}",
        f"--saveEngine={engine}",
        f"--minShapes={shapes_flag(shapes, 0)}",
        f"--optShapes={shapes_flag(shapes, 1)}",
        f"--maxShapes={shapes_flag(shapes, 2)}",
        *step.trtexec_flags,
        f"--timingCacheFile={cache}",
        f"--memPoolSize=workspace:{workspace}",
    ]


# --- the recipe ------------------------------------------------------------------------------------------------


class _RecipeTemplate(string.Template):
    """The recipe template's placeholders are @@{name}: "$" belongs to the shell."""

    delimiter = "@@"


def _quote_word(text: str) -> str:
    """Quote for bash, leaving "$VAR" expansions alive: double quotes with \\, ` and " escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def recipe_text(
    specs: dict[str, GraphSpec],
    files: set[str],
    profiles: dict[str, BatchProfile] = DEFAULT_PROFILES,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    producer: str = "ks-export",
) -> str:
    """trt/build_engines.sh: the trtexec commands for every TensorRT major version, chosen at run time.

    The template (templates/build_engines.sh) probes the GPU and the TensorRT release; the engine commands
    filled into it follow `build_step` for the ONNX `files` of the bundle."""
    template = (resources.files("ks_export") / "templates" / "build_engines.sh").read_text(encoding="utf-8")
    return _RecipeTemplate(template).substitute(
        producer=producer, workspace_mib=workspace_mib, engine_builds=_engine_builds(specs, files, profiles)
    )


def _engine_builds(specs: dict[str, GraphSpec], files: set[str], profiles: dict[str, BatchProfile]) -> str:
    """One branch per TensorRT major version (if/elif on $TRT_MAJOR), each building or skipping every job."""
    branches = {8: '"$TRT_MAJOR" -lt 10', 10: '"$TRT_MAJOR" -eq 10', 11: '"$TRT_MAJOR" -ge 11'}
    lines = []
    for major in TRT_MAJORS:
        lines.append(f"{'if' if major == TRT_MAJORS[0] else 'elif'} [ {branches[major]} ]; then")
        for role, precision, gate in RECIPE_JOBS:
            lines += _engine_job(major, role, precision, gate, specs[role], profiles[role], files)
    lines.append("fi")
    return "\n".join(lines)


def _engine_job(
    major: int, role: str, precision: str, gate: str, spec: GraphSpec, profile: BatchProfile, files: set[str]
) -> list[str]:
    """The script lines that build one engine on TensorRT `major`, or say why it cannot be built."""
    engine = f"trt/{role}.$GPU.trt$TRT_VERSION.{precision}.plan"
    step = build_step(major, role, precision, files)
    indent = "    " if gate else "  "
    if step is None:
        why = (
            f"no {INT8_TRT_FILE} in the bundle (export with --trt --int8)"
            if precision == "int8"
            else f"TensorRT {major}+ takes precision from the graph and the bundle has no {FP16_FILES[role]} "
            f"(export with --fp16)"
        )
        lines = [f"{indent}skip {_quote_word(engine)} {_quote_word(why)}"]
    else:
        args = trtexec_args(step, spec, profile, engine, "$CACHE", "$WORKSPACE")
        words = f" \\\n{indent}    ".join(_quote_word(a) for a in args)
        lines = [f"{indent}build {_quote_word(engine)} \\\n{indent}    {words}"]
    return [f'  if [ "${gate}" = 1 ]; then', *lines, "  fi"] if gate else lines


def write_recipe(
    bundle: Path,
    specs: dict[str, GraphSpec],
    profiles: dict[str, BatchProfile] = DEFAULT_PROFILES,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    producer: str = "ks-export",
) -> dict:
    """Write trt/build_engines.sh (executable) for the ONNX files now in `bundle`; returns its manifest entry."""
    files = {p.name for p in bundle.glob("*.onnx")}
    path = bundle / RECIPE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_text(specs, files, profiles, workspace_mib, producer))
    path.chmod(0o755)
    steps = {
        f"trt{major}": {
            f"{role}.{precision}": (
                None
                if s is None
                else {"source": s.source, "trtexec_flags": list(s.trtexec_flags), "strongly_typed": s.strongly_typed}
            )
            for role, precision, _ in RECIPE_JOBS
            for s in [build_step(major, role, precision, files)]
        }
        for major in TRT_MAJORS
    }
    return {
        "file": RECIPE,
        "sha256": sha256_file(path),
        "command": f"bash <bundle>/{RECIPE} [--int8] [--clip]",
        "steps": steps,
    }


# --- INT8 for TensorRT: symmetric Q/DQ ----------------------------------------------------------------------------


def quantize_for_tensorrt(fp32_path: Path, out_path: Path, frames: np.ndarray) -> dict:
    """The encoder with symmetric int8 Q/DQ (zero point 0, activations and weights), on Conv/MatMul/Gemm only,
    calibrated on `frames`: what TensorRT's explicit quantization takes. Returns the settings (manifest)."""
    ops = ["Conv", "MatMul", "Gemm"]
    with tempfile.TemporaryDirectory(prefix="ks-quant-trt-") as tmp:
        prepared = Path(tmp) / "encoder.prep.onnx"
        try:
            with quiet_loggers(QUANT_LOGGERS, logging.WARNING):
                quant_pre_process(str(fp32_path), str(prepared))
        except Exception as error:  # symbolic shape inference can fail: quantise the graph as exported
            log.warning("%s: quant_pre_process failed (%s); quantising the graph as exported", fp32_path, error)
            prepared = fp32_path
        try:
            with quiet_loggers(QUANT_LOGGERS + ("root",), logging.ERROR):
                quantize_static(
                    str(prepared),
                    str(out_path),
                    FrameReader(frames),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8,
                    op_types_to_quantize=ops,
                    calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"],
                    # TensorRT takes float biases (it fuses them); int32 bias Q/DQ is onnxruntime's own
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
                )
        except Exception as error:
            raise ExportError(
                f"{out_path}: INT8 quantisation for TensorRT failed ({type(error).__name__}: {error})"
            ) from error
    problems = qdq_problems(out_path)
    if problems:
        raise ExportError(f"{out_path}: not TensorRT-ready Q/DQ: {'; '.join(problems[:3])}")
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "for": "TensorRT explicit INT8",
        "weights": "int8 symmetric, per channel",
        "activations": "int8 symmetric",
        "biases": "float",
        "ops": ops,
        "calibration": {"method": "MinMax", "frames": int(len(frames)), "batch": CALIB_BATCH},
    }


def qdq_problems(path: Path) -> list[str]:
    """Why TensorRT would refuse a Q/DQ graph: a zero point that is not int8 or not 0 (empty when none)."""
    model = onnx.load(str(path))
    constants = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = constants.get(node.input[2])
            if zero is None:
                continue
            if zero.data_type != onnx.TensorProto.INT8:
                problems.append(f"{node.name}: zero point of type {onnx.TensorProto.DataType.Name(zero.data_type)}")
            elif np.any(numpy_helper.to_array(zero) != 0):
                problems.append(f"{node.name}: non-zero zero point (asymmetric)")
    return problems


# --- building with the Python API --------------------------------------------------------------------------------


@dataclass
class EngineBuild:
    """What `build_engines` did: the engines written (manifest entries) or why none were."""

    engines: list[dict] = field(default_factory=list)
    skipped: str | None = None
    gpu: str | None = None
    tensorrt: str | None = None


def tensorrt_unavailable() -> str | None:
    """Why engines cannot be built here (TensorRT missing, or no CUDA device), else None."""
    return gpu_probe.missing("tensorrt", "cuda-device")


def build_engine(
    trt,
    logger,
    source: Path,
    spec: GraphSpec,
    step: BuildStep,
    profile: BatchProfile,
    timing_cache: bytes,
    workspace_mib: int,
) -> tuple[bytes, bytes]:
    """One serialised engine from an ONNX file (TensorRT's Python API); returns (plan, updated timing cache)."""
    major = int(trt_version_tag(trt.__version__).split(".")[0])
    flags = 0
    if major < 10:  # explicit batch: implied (and the flag deprecated) from TensorRT 10 on
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if step.strongly_typed and major == 10:  # always on, and the flag ignored, from 11 on
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{source}: TensorRT {trt.__version__}'s ONNX parser refused the graph: {errors}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [t.name for t in spec.inputs]:
        raise ExportError(
            f"{source}: TensorRT parsed inputs {inputs}, the manifest says {[t.name for t in spec.inputs]}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for flag in step.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(spec, profile).items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    config.set_timing_cache(config.create_timing_cache(timing_cache), False)  # False: refuse a mismatched cache
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"{source}: TensorRT {trt.__version__} could not build the {step.precision} engine "
            f"(see TensorRT's log above)"
        )
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def build_engines(
    bundle: Path,
    specs: dict[str, GraphSpec],
    precisions: tuple[str, ...] = ("fp16",),
    clip: bool = False,
    profiles: dict[str, BatchProfile] = DEFAULT_PROFILES,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    device_index: int = 0,
) -> EngineBuild:
    """Build the encoder (each of `precisions`), head (FP16) and, with `clip`, clip engines into bundle/trt/.

    Without TensorRT or a GPU nothing is built and `skipped` says why (the recipe is written either way)."""
    reason = tensorrt_unavailable() or gpu_probe.cuda_device_reason(device_index)
    if reason is not None:
        return EngineBuild(skipped=reason)
    import tensorrt as trt  # deferred: tensorrt (optional, NVIDIA's wheel; absent on most machines)

    info = gpu_probe.device_info(device_index)
    version, major = trt.__version__, int(trt_version_tag(trt.__version__).split(".")[0])
    files = {p.name for p in bundle.glob("*.onnx")}
    jobs = [("encoder", p) for p in precisions] + [("head", HEAD_PRECISION)] + ([("clip", "fp16")] if clip else [])
    builder = _EngineBuilder.open(trt, bundle, info, workspace_mib)
    result = EngineBuild(gpu=info.name, tensorrt=version)
    for role, precision in jobs:
        step = build_step(major, role, precision, files)
        if step is None:
            log.warning(
                "TensorRT %s: no %s %s engine: the bundle lacks the ONNX file it needs (see %s)",
                version,
                precision,
                role,
                RECIPE,
            )
            continue
        result.engines.append(builder.build(role, precision, step, specs[role], profiles[role]))
    return result


@dataclass
class _EngineBuilder:
    """What the builds of one `build_engines` call share: TensorRT (the module, a logger, a runtime), the GPU,
    the bundle and its trt/ folder, and the timing cache (rewritten after each engine)."""

    trt: Any  # the tensorrt module
    logger: Any
    runtime: Any
    info: gpu_probe.GpuInfo
    bundle: Path
    folder: Path
    cache_path: Path
    cache: bytes
    workspace_mib: int

    @classmethod
    def open(cls, trt: Any, bundle: Path, info: gpu_probe.GpuInfo, workspace_mib: int) -> _EngineBuilder:
        """Create bundle/trt/, read the timing cache of this GPU and TensorRT if there is one, start TensorRT."""
        folder = bundle / TRT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        cache_path = folder / timing_cache_name(info.name, trt.__version__)
        cache = cache_path.read_bytes() if cache_path.is_file() else b""
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        return cls(trt, logger, runtime, info, bundle, folder, cache_path, cache, workspace_mib)

    def build(self, role: str, precision: str, step: BuildStep, spec: GraphSpec, profile: BatchProfile) -> dict:
        """Build one engine by `step`, check that it loads, write it and the timing cache; its manifest entry."""
        version = self.trt.__version__
        started = time.perf_counter()
        plan, self.cache = build_engine(
            self.trt, self.logger, self.bundle / step.source, spec, step, profile, self.cache, self.workspace_mib
        )
        name = engine_file_name(role, self.info.name, version, precision)
        io_dtypes = self.io_dtypes(plan, name)
        (self.folder / name).write_bytes(plan)
        self.cache_path.write_bytes(self.cache)
        seconds = time.perf_counter() - started
        flags = " ".join(step.trtexec_flags) or "strongly typed"
        log.info("%s: built in %.0f s from %s (%s)", name, seconds, step.source, flags)
        return {
            "file": f"{TRT_DIR}/{name}",
            "graph": role,
            "precision": precision,
            "source": step.source,
            "gpu": self.info.name,
            "compute_capability": list(self.info.compute_capability),
            "tensorrt": trt_version_tag(version),
            "profile": profile.to_dict(),
            "strongly_typed": step.strongly_typed,
            "builder_flags": list(step.builder_flags),
            "io_dtypes": io_dtypes,
            "workspace_mib": self.workspace_mib,
            "build_seconds": round(seconds, 1),
        }

    def io_dtypes(self, plan: bytes, name: str) -> dict[str, str]:
        """The plan, deserialised: it loads, and these are its I/O tensors' numpy types (int32 before TRT 10)."""
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ExportError(f"{name}: TensorRT {self.trt.__version__} cannot deserialise the engine it just built")
        return {
            n: np.dtype(self.trt.nptype(engine.get_tensor_dtype(n))).name
            for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
        }


def tensorrt_manifest(recipe: dict, build: EngineBuild, profiles: dict[str, BatchProfile] = DEFAULT_PROFILES) -> dict:
    """The manifest's `tensorrt` field: the recipe, the batch profiles, and the engines built (maybe none)."""
    return {
        "recipe": recipe,
        "profiles": {role: p.to_dict() for role, p in profiles.items()},
        "engines": build.engines,
        "built_on": {"gpu": build.gpu, "tensorrt": build.tensorrt},
        "status": (
            f"no engine built at export: {build.skipped}; build on the target with {shlex.quote('bash ' + RECIPE)}"
            if build.skipped
            else f"{len(build.engines)} engines built"
        ),
    }


def fp16_variant_entry(role: str, stats: dict, opset: int) -> dict:
    """The manifest's `variants` entry of an FP16 graph."""
    return {
        "file": FP16_FILES[role],
        "graph": role,
        "precision": "fp16",
        "format": "onnx",
        "opset": opset,
        "providers": ["CUDAExecutionProvider", "TensorrtExecutionProvider"],
        "conversion": stats,
    }


def int8_trt_variant_entry(settings: dict, opset: int) -> dict:
    return {
        "file": INT8_TRT_FILE,
        "graph": "encoder",
        "precision": "int8",
        "label": "int8-trt",
        "format": "onnx",
        "opset": opset,
        "providers": ["TensorrtExecutionProvider"],
        "quantization": settings,
    }
