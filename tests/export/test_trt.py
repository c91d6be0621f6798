"""ks_export/tensorrt.py and the Triton plan config: the build rules, the trtexec recipe every bundle carries
(run here against a stand-in trtexec: its names must be the ones the runtime looks for), the manifest's
`tensorrt` record, the symmetric Q/DQ encoder, and `ks-export --trt` where TensorRT is absent. Building
engines for real needs TensorRT and a GPU: those tests are marked and skip with the reason."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import ks_export.export as ex
from ks_export import ExportError
from ks_export import tensorrt as X
from ks_export.cli import export_parser
from ks_export.export import export_bundle, verify_bundle
from ks_export.fp16 import FP16_PROB_TOL
from ks_export.triton import write_plan_repository
from ks_runtime.core.bundle import (
    ENCODER_INT8,
    ENCODER_INT8_TRT,
    FP16_VARIANTS,
    graph_specs,
    read_manifest,
    sha256_file,
)
from ks_runtime.core.bundle_files import ENGINE_RECORD
from ks_runtime.engine import gpu_probe
from ks_runtime.engine import trt as T
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from tests.export.conftest import one_torch_thread
from tests.gpu_skip import needs

SPECS = graph_specs(5, 12, 64)
ALL = {
    "encoder.onnx",
    "head.onnx",
    "clip.onnx",
    "encoder.fp16.onnx",
    "head.fp16.onnx",
    "clip.fp16.onnx",
    X.INT8_TRT_FILE,
}


@pytest.fixture(scope="module")
def trt_export(checkpoint, tmp_path_factory):
    """`ks-export --int8 --triton --trt` (legacy exporter, no F1: seconds): FP16 variants, the symmetric Q/DQ
    encoder, the recipe; engines only where TensorRT and a GPU are."""
    out = tmp_path_factory.mktemp("trt_export") / "bundle"
    with one_torch_thread():
        report = export_bundle(
            checkpoint, out, int8=True, triton=True, calib=16, exporter="legacy", evaluate=False, trt=True
        )
    return out, report


# --- the rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "major, role, precision, files, source, flags, typed",
    [
        (8, "encoder", "fp16", ALL, "encoder.onnx", ("--fp16",), False),
        (10, "encoder", "fp16", ALL, "encoder.fp16.onnx", ("--stronglyTyped",), True),
        (10, "head", "fp16", {"head.onnx"}, "head.onnx", ("--fp16",), False),  # no FP16 graph: weak typing on 10
        (11, "head", "fp16", ALL, "head.fp16.onnx", (), True),
        (8, "encoder", "int8", ALL, X.INT8_TRT_FILE, ("--int8", "--fp16"), False),
        (10, "encoder", "int8", ALL, X.INT8_TRT_FILE, ("--stronglyTyped",), True),
        (11, "encoder", "int8", ALL, X.INT8_TRT_FILE, (), True),
        (11, "clip", "fp32", ALL, "clip.onnx", (), True),
    ],
)
def test_build_rules_by_tensorrt_major(major, role, precision, files, source, flags, typed):
    step = X.build_step(major, role, precision, files)
    assert (step.source, step.trtexec_flags, step.strongly_typed) == (source, flags, typed)
    assert step.builder_flags == tuple(f[2:].upper() for f in flags if f in ("--fp16", "--int8"))


@pytest.mark.parametrize(
    "major, role, precision, files",
    [
        (11, "encoder", "fp16", {"encoder.onnx"}),  # TensorRT 11 has no FP16 flag: needs the FP16 graph
        (10, "encoder", "int8", {"encoder.onnx", "encoder.int8.onnx"}),  # the CPU's uint8 Q/DQ does not serve
        (10, "head", "int8", ALL),
    ],
)
def test_what_cannot_be_built_is_none(major, role, precision, files):
    assert X.build_step(major, role, precision, files) is None


def test_trtexec_arguments_carry_the_profile_for_every_input():
    step = X.build_step(10, "head", "fp16", ALL)
    args = X.trtexec_args(step, SPECS["head"], T.BatchProfile(1, 32, 128), "h.plan", "c.cache", "2048")
    assert args == [
        "--onnx=head.fp16.onnx",
        "--saveEngine=h.plan",
        "--minShapes=sa_logits:1x5x12,student_logits:1x5x5x12,key_slot:1",
        "--optShapes=sa_logits:32x5x12,student_logits:32x5x5x12,key_slot:32",
        "--maxShapes=sa_logits:128x5x12,student_logits:128x5x5x12,key_slot:128",
        "--stronglyTyped",
        "--timingCacheFile=c.cache",
        "--memPoolSize=workspace:2048",
    ]


# --- the export ----------------------------------------------------------------------------------------------------


def test_trt_export_without_tensorrt_writes_the_recipe_and_records_no_engine(trt_export):
    bundle, report = trt_export
    m = read_manifest(bundle)
    section = m.raw["tensorrt"]
    recipe = section["recipe"]
    assert recipe["file"] == "trt/build_engines.sh" and os.access(bundle / recipe["file"], os.X_OK)
    assert recipe["sha256"] == m.files[recipe["file"]] == sha256_file(bundle / recipe["file"])
    assert section["profiles"]["encoder"] == {"min": 1, "opt": 8, "max": 32}
    assert section["profiles"]["head"] == {"min": 1, "opt": 32, "max": 128}
    why = X.tensorrt_unavailable()
    if why is not None:
        assert section["engines"] == [] and why in section["status"]
        assert f"no engine built: {why}" in report.text() and "trt/build_engines.sh" in report.text()
        assert "triton_trt" not in m.raw["serving"] and not (bundle / "triton" / "ks_clip_trt").exists()
    steps = recipe["steps"]
    assert steps["trt11"]["encoder.fp16"]["source"] == "encoder.fp16.onnx"
    assert steps["trt8"]["encoder.int8"]["trtexec_flags"] == ["--int8", "--fp16"]


def test_trt_export_adds_verified_fp16_variants(trt_export):
    bundle, report = trt_export
    m = read_manifest(bundle)
    for role, name in FP16_VARIANTS.items():
        variant = m.variants[name]
        assert variant["graph"] == role and variant["precision"] == "fp16"
        assert (bundle / variant["file"]).is_file() and variant["file"] == X.FP16_FILES[role]
        assert 0 < variant["verification"]["max_abs_probs"] <= FP16_PROB_TOL
    assert report.fp16.ok and m.raw["verification"]["fp16"]["passed"]


def test_the_tensorrt_int8_encoder_is_symmetric_qdq(trt_export):
    bundle, _ = trt_export
    m = read_manifest(bundle)
    variant = m.variants[ENCODER_INT8_TRT]
    path = bundle / variant["file"]
    assert variant["precision"] == "int8" and variant["quantization"]["activations"] == "int8 symmetric"
    assert X.qdq_problems(path) == []
    model = onnx.load(str(path))
    zeros = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(not np.any(zeros[n.input[2]]) for n in qdq if len(n.input) > 2)
    assert not any(
        n.op_type == "DequantizeLinear" and zeros.get(n.input[0], np.zeros(0, np.int8)).dtype == np.int32 for n in qdq
    ), "int32 bias Q/DQ: TensorRT takes float biases"
    assert X.qdq_problems(bundle / m.variants[ENCODER_INT8]["file"]), "the CPU's uint8 Q/DQ would suit TensorRT"


def test_verify_reports_the_tensorrt_record(trt_export):
    text = verify_bundle(trt_export[0])
    assert "TensorRT: recipe trt/build_engines.sh; engines: none yet" in text or X.tensorrt_unavailable() is None
    assert "variant encoder_fp16 (fp16): runs" in text and text.endswith("bundle OK")


def test_the_recipe_template_is_filled_in_whole():
    text = X.recipe_text(SPECS, ALL, workspace_mib=512, producer="ks-export 9.9")
    assert text.startswith("#!/usr/bin/env bash\n") and "@@" not in text and text.endswith('finds them)"\n')
    assert "# Written by ks-export 9.9;" in text and 'WORKSPACE="${KS_TRT_WORKSPACE_MIB:-512}"' in text
    assert text.count('build "trt/encoder.$GPU.trt$TRT_VERSION.int8.plan"') == 3  # TensorRT 8, 10 and 11
    assert '"$TRTEXEC" "$@"' in text  # the shell's own $ and @ pass through the template untouched


def test_every_export_carries_the_recipe(bundle):
    m = read_manifest(bundle)
    assert m.raw["tensorrt"]["recipe"]["file"] in m.files and m.raw["tensorrt"]["engines"] == []
    text = (bundle / "trt" / "build_engines.sh").read_text()
    # without --fp16 TensorRT 11 cannot build FP16 engines from this bundle, and the recipe says so
    assert 'skip "trt/encoder.$GPU.trt$TRT_VERSION.fp16.plan" "TensorRT 11+ takes precision' in text


def test_cli_flags():
    args = export_parser().parse_args(["--ckpt", "c", "--out", "o", "--trt", "--fp16", "--int8"])
    assert args.trt and args.fp16 and args.int8


# --- the recipe, run against a stand-in trtexec ------------------------------------------------------------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "${1:-}" = "--help" ]; then
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_TRT_CODE}] # trtexec --help"; exit 1
fi
echo "$*" >> "$FAKE_LOG"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) printf plan > "${a#--saveEngine=}" ;;
    --timingCacheFile=*) printf c > "${a#--timingCacheFile=}" ;;
  esac
done
"""
FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
echo "${FAKE_GPU_NAME}"
"""


def run_recipe(bundle, tmp_path, *flags, env=None):
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for name, text in (("trtexec", FAKE_TRTEXEC), ("nvidia-smi", FAKE_NVIDIA_SMI)):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    log = tmp_path / "trtexec.log"
    log.unlink(missing_ok=True)
    full = {
        "PATH": f"{tools}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_TRT_CODE": "100300",
        "FAKE_GPU_NAME": "NVIDIA GeForce RTX 4090 (Laptop) / Max-Q",
        **(env or {}),
    }
    result = subprocess.run(
        ["bash", str(bundle / "trt" / "build_engines.sh"), *flags], env=full, text=True, capture_output=True, timeout=60
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


@pytest.fixture
def recipe_bundle(trt_export, tmp_path):
    return shutil.copytree(trt_export[0], tmp_path / "bundle")


def test_the_recipe_builds_what_the_runtime_looks_for(recipe_bundle, tmp_path):
    name, version = "Jetson AGX Orin (nvgpu)", "10.3.0"
    result, calls = run_recipe(
        recipe_bundle, tmp_path, "--int8", "--clip", env={"KS_GPU_NAME": name, "KS_TRT_VERSION": version + ".26"}
    )
    assert result.returncode == 0, result.stderr
    built = sorted(p.name for p in (recipe_bundle / "trt").glob("*.plan"))
    assert built == sorted(
        T.engine_file_name(r, name, version, p)
        for r, p in (("encoder", "fp16"), ("head", "fp16"), ("encoder", "int8"), ("clip", "fp16"))
    )
    assert (recipe_bundle / "trt" / T.timing_cache_name(name, version)).is_file()
    assert len(calls) == 4 and all("--stronglyTyped" in c and "--fp16" not in c for c in calls)  # TensorRT 10
    assert any("--onnx=encoder.int8.trt.onnx" in c and "--maxShapes=frames:32x3x64x64" in c for c in calls)
    manifest = read_manifest(recipe_bundle)  # the engines are unlisted but recorded: the bundle still reads
    chosen = T.select_engines(manifest, name, version, "int8")
    assert chosen["encoder"].name == T.engine_file_name("encoder", name, version, "int8")
    assert {e.listed for e in T.find_engines(manifest)} == {False}
    record = (recipe_bundle / ENGINE_RECORD).read_text().splitlines()  # each engine's sha256, as sha256sum writes it
    assert sorted(line.split("  ")[1] for line in record) == [f"trt/{b}" for b in built]
    assert T.engine_bytes(manifest, chosen["encoder"]) == b"plan"  # checked against the record


def test_the_recipe_follows_the_tensorrt_release(recipe_bundle, tmp_path):
    result, calls = run_recipe(recipe_bundle, tmp_path, env={"KS_GPU_NAME": "Orin", "KS_TRT_VERSION": "8.6"})
    assert result.returncode == 0, result.stderr
    assert len(calls) == 2 and all("--fp16" in c and "--onnx=" in c for c in calls)  # TensorRT 8: the FP16 flag
    assert sorted(p.name for p in (recipe_bundle / "trt").glob("*.plan")) == [
        "encoder.orin.trt8.6.0.fp16.plan",
        "head.orin.trt8.6.0.fp16.plan",
    ]
    result, calls = run_recipe(recipe_bundle, tmp_path, env={"KS_GPU_NAME": "Orin", "KS_TRT_VERSION": "11.4.0"})
    assert result.returncode == 0 and len(calls) == 2
    assert all("--fp16" not in c and "--stronglyTyped" not in c and ".fp16.onnx" in c for c in calls)


def test_the_recipe_probes_gpu_and_release_itself(recipe_bundle, tmp_path):
    """No overrides: the GPU name from nvidia-smi (where no driver answers first), the release from trtexec."""
    if gpu_probe.cuda_devices() or gpu_probe.tensorrt_reason() is None:
        pytest.skip("a real driver or TensorRT here would answer the probes instead of the stand-ins")
    result, calls = run_recipe(recipe_bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    slug = T.gpu_slug("NVIDIA GeForce RTX 4090 (Laptop) / Max-Q")
    assert slug == "nvidia-geforce-rtx-4090-laptop-max-q"
    assert {p.name for p in (recipe_bundle / "trt").glob("*.plan")} == {
        f"encoder.{slug}.trt10.3.0.fp16.plan",
        f"head.{slug}.trt10.3.0.fp16.plan",
    }
    assert "building for NVIDIA GeForce RTX 4090 (Laptop) / Max-Q" in result.stdout


def test_the_recipe_stops_with_a_clear_message(recipe_bundle, tmp_path):
    result, _ = run_recipe(recipe_bundle, tmp_path, "--fp64")
    assert result.returncode == 2 and "usage" in result.stderr
    result, _ = run_recipe(recipe_bundle, tmp_path, env={"TRTEXEC": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and "trtexec not found" in result.stderr


# --- Triton's tensorrt_plan model --------------------------------------------------------------------------------


@pytest.mark.parametrize("key_dtype, key_type", [("int64", "TYPE_INT64"), ("int32", "TYPE_INT32")])
def test_the_plan_repository_config_parses_into_model_config(tmp_path, key_dtype, key_type):
    plan = tmp_path / "trt" / T.engine_file_name("clip", "NVIDIA L4", "10.8.0", "fp16")
    plan.parent.mkdir()
    plan.write_bytes(b"not a real plan")
    entry = write_plan_repository(tmp_path, plan, 5, 12, 64, 32, key_dtype, built_by="NVIDIA L4, TensorRT 10.8.0")
    config = text_format.Parse((tmp_path / entry["config"]).read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("ks_clip_trt", "tensorrt_plan", 32)
    inputs = {i.name: i for i in config.input}
    assert list(inputs["clips"].dims) == [5, 3, 64, 64]
    assert inputs["key_slot"].data_type == model_config_pb2.DataType.Value(key_type)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    assert (tmp_path / entry["file"]).read_bytes() == b"not a real plan" and entry["file"].endswith("1/model.plan")
    with pytest.raises(ExportError, match="key_slot is float32"):
        write_plan_repository(tmp_path, plan, 5, 12, 64, 32, "float32")


# --- the Python builder, against a stand-in tensorrt module --------------------------------------------------------


class FakeTrt:
    """Records what build_engine asks of TensorRT's builder API (documented names); builds nothing."""

    NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16", INT8="int8")

    def __init__(self, version: str, parse_ok: bool = True) -> None:
        self.__version__, self.parse_ok, self.calls = version, parse_ok, []
        # tensorrt.Builder(logger) and tensorrt.OnnxParser(network, logger), bound to this fake's record
        self.Builder = functools.partial(_FakeBuilder, self)
        self.OnnxParser = functools.partial(_FakeParser, self)


class _FakeNetwork:
    num_inputs = 1

    def get_input(self, i):
        return SimpleNamespace(name="frames")


class _FakeConfig:
    def __init__(self, fake: FakeTrt) -> None:
        self.fake = fake

    def set_memory_pool_limit(self, pool, size):
        self.fake.calls.append(("pool", pool, size))

    def set_flag(self, flag):
        self.fake.calls.append(("flag", flag))

    def add_optimization_profile(self, profile):
        self.fake.calls.append(("profile", profile.shapes))

    def create_timing_cache(self, data):
        return SimpleNamespace(data=data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.fake.calls.append(("cache", cache.data, ignore_mismatch))

    def get_timing_cache(self):
        return SimpleNamespace(serialize=lambda: b"cache+1")


class _FakeProfile:
    shapes: dict = {}

    def set_shape(self, name, low, opt, high):
        self.shapes = {**self.shapes, name: (low, opt, high)}


class _FakeBuilder:
    def __init__(self, fake: FakeTrt, logger) -> None:
        self.fake = fake

    def create_network(self, flags):
        self.fake.calls.append(("network", flags))
        return _FakeNetwork()

    def create_builder_config(self):
        return _FakeConfig(self.fake)

    def create_optimization_profile(self):
        return _FakeProfile()

    def build_serialized_network(self, network, config):
        return b"plan"


class _FakeParser:
    def __init__(self, fake: FakeTrt, network, logger) -> None:
        self.fake = fake
        self.num_errors = 0 if fake.parse_ok else 1

    def parse_from_file(self, path):
        return self.fake.parse_ok

    def get_error(self, i):
        return "Unsupported operator Einsum"


@pytest.mark.parametrize(
    "version, precision, network_flags, builder_flags",
    [
        ("8.6.1", "fp16", 1 << 0, ["fp16"]),
        ("10.8.0.43", "fp16", 1 << 1, []),
        ("11.4.0", "fp16", 0, []),
        ("8.6.1", "int8", 1 << 0, ["int8", "fp16"]),
    ],
)
def test_build_engine_asks_tensorrt_for_the_rule(tmp_path, version, precision, network_flags, builder_flags):
    trt = FakeTrt(version)
    major = int(version.split(".")[0])
    step = X.build_step(major, "encoder", precision, ALL)
    plan, cache = X.build_engine(
        trt, None, tmp_path / step.source, SPECS["encoder"], step, T.BatchProfile(2, 8, 16), b"cache", 512
    )
    assert (plan, cache) == (b"plan", b"cache+1")
    assert ("network", network_flags) in trt.calls and ("pool", "workspace", 512 << 20) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "flag"] == builder_flags
    assert ("profile", {"frames": ((2, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64))}) in trt.calls
    assert ("cache", b"cache", False) in trt.calls


def test_build_engine_names_the_parser_error(tmp_path):
    step = X.build_step(10, "encoder", "fp16", ALL)
    with pytest.raises(ExportError, match="parser refused the graph: Unsupported operator Einsum"):
        X.build_engine(
            FakeTrt("10.8.0", parse_ok=False),
            None,
            tmp_path / "e.onnx",
            SPECS["encoder"],
            step,
            T.BatchProfile(1, 8, 32),
            b"",
            256,
        )


def test_without_tensorrt_build_engines_builds_nothing_and_says_why(tmp_path):
    why = X.tensorrt_unavailable()
    if why is None:
        pytest.skip("TensorRT and a GPU are here")
    result = X.build_engines(tmp_path, SPECS)
    assert result.engines == [] and result.skipped == why and not (tmp_path / "trt").exists()


# --- the engines' parity check, against a stand-in engine ---------------------------------------------------------


def stand_in_engines(offsets: dict[str, float], closed: list[str]):
    """A TrtEngine stand-in whose probabilities are onnxruntime's FP32 ones plus `offsets[precision]`."""

    class Engine:
        def __init__(self, manifest, device, precision):
            self.graphs = BundleGraphs(manifest, roles=("encoder", "head"))
            self.precision = precision

        def dense_probabilities(self, frames):
            return self.graphs.dense_probabilities(frames) + offsets[self.precision]

        def close(self):
            closed.append(self.precision)

    return Engine


@pytest.fixture(scope="module")
def engine_frames(bundle):
    m = read_manifest(bundle)
    return generate_sequence(
        SynthConfig(size="tiny", image_size=m.preprocess.size, frames=2 * m.clip_len, seed=4), 0, 0
    ).frames


ENGINES = [
    {"graph": "encoder", "precision": "fp16", "file": "trt/encoder.gpu.trt10.3.0.fp16.plan"},
    {"graph": "encoder", "precision": "int8", "file": "trt/encoder.gpu.trt10.3.0.int8.plan"},
    {"graph": "head", "precision": "fp16", "file": "trt/head.gpu.trt10.3.0.fp16.plan"},
]


def test_engines_within_the_tolerance_are_recorded(bundle, engine_frames, monkeypatch):
    closed = []
    monkeypatch.setattr(ex, "TrtEngine", stand_in_engines({"fp16": 1e-3, "int8": 0.05}, closed))
    entries = ex.check_engines(read_manifest(bundle), engine_frames, ENGINES)
    fp16, int8, head = entries
    assert fp16["verification"]["max_abs_probs"] == pytest.approx(1e-3, rel=1e-3)
    assert fp16["verification"]["tolerance"] == ex.TRT_FP16_TOL and fp16["verification"]["frames"] == len(engine_frames)
    assert int8["verification"]["max_abs_probs"] == pytest.approx(0.05, rel=1e-3)  # INT8: reported, not judged
    assert int8["verification"]["tolerance"] is None and "verification" not in head
    assert closed == ["fp16", "int8"]


def test_an_fp16_engine_beyond_the_tolerance_fails_the_export(bundle, engine_frames, monkeypatch):
    closed = []
    monkeypatch.setattr(ex, "TrtEngine", stand_in_engines({"fp16": 0.05, "int8": 0.0}, closed))
    message = (
        r"encoder\.gpu\.trt10\.3\.0\.fp16\.plan: the engine's probabilities differ from onnxruntime's FP32 "
        r"graphs; export abandoned\n  probs: max abs 5\.0e-2, .*\(atol 1e-2, rtol 0\) FAIL at \["
    )
    with pytest.raises(ExportError, match=message):
        ex.check_engines(read_manifest(bundle), engine_frames, ENGINES)
    assert closed == ["fp16"]


# --- on a GPU ------------------------------------------------------------------------------------------------------


@needs("tensorrt", "cuda-device")
def test_trt_export_on_a_gpu_builds_engines_and_the_triton_plan(checkpoint, tmp_path):
    """Written, not yet run: the whole --trt export where TensorRT and a GPU are."""
    out = tmp_path / "bundle"
    export_bundle(checkpoint, out, int8=True, triton=True, calib=16, exporter="legacy", evaluate=False, trt=True)
    m = read_manifest(out)
    engines = m.raw["tensorrt"]["engines"]
    assert {(e["graph"], e["precision"]) for e in engines} == {
        ("encoder", "fp16"),
        ("encoder", "int8"),
        ("head", "fp16"),
        ("clip", "fp16"),
    }
    assert all(e["file"] in m.files for e in engines)
    fp16 = next(e for e in engines if e["graph"] == "encoder" and e["precision"] == "fp16")
    assert fp16["verification"]["max_abs_probs"] < 1e-2
    config = text_format.Parse((out / "triton/ks_clip_trt/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan"
    assert json.loads((out / "manifest.json").read_text())["serving"]["triton_trt"]["model"] == "ks_clip_trt"
