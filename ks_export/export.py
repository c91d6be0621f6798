"""The whole export: checkpoint -> graphs -> verification -> INT8 / FP16 -> Triton -> TensorRT -> manifest -> F1,
and `verify`.

The bundle is built in a hidden sibling folder and moved into place only when every check has passed, so a
failed export never leaves a half-written bundle where the runtime would look for one. A bundle already there is
replaced only when it holds nothing but the files its manifest lists (else --force), and the hidden folders of an
export that was killed are cleaned up by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from tqdm import tqdm

from ks_export import ExportError
from ks_export.fp16 import Fp16Report, convert_file, verify_fp16
from ks_export.graphs import LoadedCheckpoint, graph_modules, load_ks_checkpoint, random_inputs
from ks_export.int8_record import int8_text, record_int8_check
from ks_export.manifest import DEFAULT_POLICY, PACKAGE, build_manifest, package_version, write_manifest
from ks_export.onnx_export import (
    ExportedGraph,
    check_graph,
    export_module,
    max_ort_opset,
    model_opset,
    resolve_opset,
    simplify_if_equal,
)
from ks_export.parity import Parity, Tolerance, compare
from ks_export.quantize import DEFAULT_CALIB, calibration_frames, quantize_encoder
from ks_export.tensorrt import (
    FP16_FILES,
    INT8_TRT_FILE,
    EngineBuild,
    build_engines,
    fp16_variant_entry,
    int8_trt_variant_entry,
    quantize_for_tensorrt,
    tensorrt_manifest,
    write_recipe,
)
from ks_export.triton import parse_config, write_plan_repository, write_repository
from ks_export.verify import PROB_TOL, PROBS_TOLERANCE, VerificationReport, verify_graphs
from ks_runtime.core.bundle import (
    ENCODER_INT8,
    ENCODER_INT8_TRT,
    FP16_VARIANTS,
    GRAPH_FILES,
    GRAPH_ROLES,
    MANIFEST,
    Manifest,
    graph_specs,
    read_manifest,
    sha256_file,
)
from ks_runtime.core.errors import BundleError
from ks_runtime.core.metrics import f1_report
from ks_runtime.core.policy import POLICIES
from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_runtime.engine.int8_check import check_int8
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.engine.trt import RECIPE, TrtEngine, find_engines, tensorrt_section
from ks_runtime.synth.generate import SynthConfig, generate_sequence, synth_parts
from ks_train.checkpoint import stale_entries
from ks_train.config import ExperimentConfig
from ks_train.data.base import VideoSequence
from ks_train.trainer import load_experiment_data

log = logging.getLogger(__name__)

INT8_FILE = "encoder.int8.onnx"
CALIB_SUBJECTS = 3  # training subjects rendered for calibration (in-memory SynthAU): enough variety, fast
TRT_FP16_TOL = 1e-2  # |probs| of the FP16 engines against onnxruntime's FP32 graphs; INT8 is reported only


@dataclass
class PrecisionRow:
    """One bundle variant evaluated densely on the test fold."""

    variant: str
    file: str
    size_bytes: int
    mean_f1: float
    per_au_f1: dict[str, float]
    ms_per_frame: float


@dataclass
class ExportReport:
    bundle: Path
    checkpoint: Path
    opset: int
    graphs: dict[str, ExportedGraph]
    verification: VerificationReport
    precision: list[PrecisionRow] = field(default_factory=list)
    f1_policy: str = ""
    f1_frames: int = 0
    fold: int = 0
    checkpoint_f1: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    fp16: Fp16Report | None = None
    tensorrt: str = ""
    int8: str = ""  # the INT8 encoder's scheme, where it was verified, its error and tolerance

    def precision_table(self) -> str:
        """FP32 against INT8: encoder file size, test-fold F1 (dense, shared policy), and speed."""
        if not self.precision:
            return "(no test-fold evaluation)"
        lines = [
            f"test fold {self.fold}, {self.f1_frames} frames, dense testing, policy {self.f1_policy!r}",
            f"{'variant':<9}{'encoder file':<20}{'size':>10}{'mean F1':>9}{'ms/frame':>10}",
        ]
        for row in self.precision:
            lines.append(
                f"{row.variant:<9}{row.file:<20}{row.size_bytes / 1e6:>8.2f}MB{row.mean_f1:>9.3f}"
                f"{row.ms_per_frame:>10.2f}"
            )
        if self.checkpoint_f1 is not None:
            lines.append(f"(the checkpoint's own test F1, PyTorch, same fold and policy: {self.checkpoint_f1:.3f})")
        return "\n".join(lines)

    def text(self) -> str:
        graphs = "\n".join(
            f"  {g.path.name:<18} {g.exporter} exporter, opset {g.opset}; {g.simplifier}" for g in self.graphs.values()
        )
        files = "\n".join(f"  {name:<32}{size / 1e6:>8.2f} MB" for name, size in self.sizes.items())
        fp16 = f"== FP16 variants against FP32\n{self.fp16.table()}\n\n" if self.fp16 else ""
        trt = f"== TensorRT\n{self.tensorrt}\n\n" if self.tensorrt else ""
        int8 = f"== INT8 encoder, as the runtime checks it at load\n{self.int8}\n\n" if self.int8 else ""
        return (
            f"bundle {self.bundle} from {self.checkpoint} ({self.seconds:.0f} s)\n{graphs}\n\n"
            f"== verification: onnxruntime against PyTorch (max abs error per key slot)\n"
            f"{self.verification.table()}\n\n{fp16}== FP32 and INT8{' and FP16' if self.fp16 else ''} on the test "
            f"fold\n{self.precision_table()}"
            f"\n\n{int8}{trt}== files\n{files}"
        )


# --- data ------------------------------------------------------------------------------------------------------


def experiment_sequences(
    cfg: ExperimentConfig, columns: list[str], part: str, max_subjects: int | None = None
) -> list[VideoSequence]:
    """The `part` ("train" or "test") sequences of the checkpoint's fold. In-memory SynthAU renders only the
    subjects needed (for "train", the first `max_subjects`); datasets on disk are opened whole."""
    data = cfg.data
    if data.dataset == "synth" and not data.root:
        parts = synth_parts(cfg.synth)
        test = parts[data.fold - 1]
        subjects = test if part == "test" else [s for p in parts if p is not test for s in p][:max_subjects]
        dataset = load_experiment_data(cfg, subjects=subjects)
        sequences = dataset.sequences
    else:
        dataset = load_experiment_data(cfg)
        train, test_seqs = dataset.split(data.fold)
        sequences = test_seqs if part == "test" else train
    if list(dataset.au_set.columns) != list(columns):
        raise ExportError(
            f"the checkpoint was trained on AUs {columns}, but its dataset config now gives {dataset.au_set.columns}"
        )
    return sequences


# --- the export ------------------------------------------------------------------------------------------------


def _check_target(out: Path, force: bool) -> None:
    """Refuse an `out` that is not a bundle, or a bundle holding files its manifest does not list (engines built on
    the device, notes: replacing the folder would delete them) unless `force`."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ExportError(f"{out}: exists and is not a model bundle; choose another --out or remove it")
    foreign = unlisted_files(out) if out.is_dir() else []
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if foreign and not force:
        raise ExportError(
            f"{out}: holds {len(foreign)} file(s) its {MANIFEST} does not list ({shown}), which replacing the bundle "
            f"would delete; move them out, or pass --force to replace it anyway"
        )
    if foreign:
        log.warning("--force: replacing %s deletes %d file(s) its manifest does not list: %s", out, len(foreign), shown)


def unlisted_files(bundle: Path) -> list[str]:
    """The files under `bundle` that its manifest does not list, as POSIX paths (an unreadable manifest lists none)."""
    try:
        listed = set(json.loads((bundle / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    present = (path.relative_to(bundle).as_posix() for path in bundle.rglob("*") if not path.is_dir())
    return sorted(name for name in present if name != MANIFEST and name not in listed)


def _clean_stale_work(out: Path) -> None:
    """The hidden folders an export killed mid-way left beside `out` (their PID no longer running): a partial bundle
    is removed; a previous bundle it had moved aside goes back into place when nothing took its place."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?P<kind>partial|old)-(?P<pid>\d+)$")
    for path in stale_entries(out.parent, pattern):
        if pattern.match(path.name)["kind"] == "old" and not out.exists():
            os.replace(path, out)
            log.warning("%s: restored from %s, where an export killed while replacing it had moved it", out, path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("%s: removed, left by an export that did not finish", path)


def _move_into_place(work: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


def export_graphs(ckpt: LoadedCheckpoint, work: Path, opset: int, exporter: str) -> dict[str, ExportedGraph]:
    """encoder.onnx, head.onnx and clip.onnx: exported, checked, simplified where the outputs stay equal."""
    modules = graph_modules(ckpt.model)
    gen = torch.Generator().manual_seed(0)
    exported = {}
    for role in GRAPH_ROLES:
        path = work / GRAPH_FILES[role]
        started = time.perf_counter()
        args = random_inputs(role, 2, ckpt.clip_len, ckpt.n_aus, ckpt.size, gen)
        used = export_module(modules[role], args, path, opset, exporter)
        check_graph(path, opset)
        names = modules[role].input_names
        feeds = [
            {
                n: a.numpy()
                for n, a in zip(names, random_inputs(role, b, ckpt.clip_len, ckpt.n_aus, ckpt.size, gen), strict=True)
            }
            for b in (1, 3)
        ]
        simplified = simplify_if_equal(path, feeds)
        check_graph(path, opset)
        exported[role] = ExportedGraph(role, path, used, simplified, opset)
        log.info(
            "%s: %s exporter, opset %d, %.1f s; %s", path.name, used, opset, time.perf_counter() - started, simplified
        )
    return exported


def evaluate_variants(
    manifest: Manifest, sequences: list[VideoSequence], columns: list[str], policy: str, progress: bool = False
) -> list[PrecisionRow]:
    """Mean F1 of the FP32 encoder and of each encoder variant, dense through the shared policy function."""
    labels = np.concatenate([s.labels for s in sequences])
    rows = []
    for variant in [None, *[v for v, spec in manifest.variants.items() if spec["graph"] == "encoder"]]:
        graphs = BundleGraphs(manifest, roles=("encoder", "head"), encoder_variant=variant)
        started = time.perf_counter()
        bar = tqdm(sequences, disable=not progress, leave=False, unit="video", desc=f"F1 {variant or 'fp32'}")
        probs = np.concatenate([graphs.dense_probabilities(s.load(np.arange(len(s))), policy) for s in bar])
        ms = 1e3 * (time.perf_counter() - started) / len(labels)
        report = f1_report(probs, labels, columns)
        path = graphs.files["encoder"]
        spec = manifest.variants[variant] if variant else {}
        rows.append(
            PrecisionRow(
                spec.get("label", spec.get("precision")) if variant else "fp32",
                path.name,
                path.stat().st_size,
                report.mean,
                {c: float(f) for c, f in zip(columns, report.f1, strict=True)},
                ms,
            )
        )
    return rows


def export_bundle(
    ckpt_path: Path | str,
    out_dir: Path | str,
    int8: bool = True,
    triton: bool = True,
    opset: int | None = None,
    calib: int = DEFAULT_CALIB,
    exporter: str = "dynamo",
    policy: str | None = None,
    evaluate: bool = True,
    progress: bool = False,
    fp16: bool = False,
    trt: bool = False,
    force: bool = False,
) -> ExportReport:
    """Export a KS checkpoint to a verified bundle at `out_dir`, replacing a bundle already there when it holds only
    the files its manifest lists; force: replace it even when it holds others (they are deleted).

    int8: add the INT8 encoder variant, calibrated on `calib` training frames; triton: add triton/ks_clip;
    fp16: add FP16 variants of the three graphs, verified against FP32 on the CPU; trt: TensorRT engines for
    this GPU when TensorRT and a GPU are present (implies fp16; with int8, the symmetric Q/DQ encoder too).
    The trtexec recipe trt/build_engines.sh is written always.
    policy: the key-slot policy of the test-fold F1 (default: the one training evaluated with); progress: bars.
    Raises ExportError (or CheckpointError) naming what failed; nothing is written at `out_dir` then.
    """
    started = time.perf_counter()
    if policy is not None and policy not in POLICIES:
        raise ExportError(f"unknown key-slot policy {policy!r}; choose one of {', '.join(POLICIES)}")
    ckpt = load_ks_checkpoint(ckpt_path)
    opset = resolve_opset(opset)
    out = Path(out_dir)
    _clean_stale_work(out)
    _check_target(out, force)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        report = _export_into(
            ckpt, work, opset, int8, triton, calib, exporter, policy, evaluate, progress, fp16 or trt, trt
        )
        _move_into_place(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report.bundle = out
    report.graphs = {role: replace(g, path=out / g.path.name) for role, g in report.graphs.items()}
    report.seconds = time.perf_counter() - started
    return report


def _export_into(
    ckpt: LoadedCheckpoint,
    work: Path,
    opset: int,
    int8: bool,
    triton: bool,
    calib: int,
    exporter: str,
    policy: str | None,
    evaluate: bool,
    progress: bool,
    fp16: bool = False,
    trt: bool = False,
) -> ExportReport:
    """Fill `work` with the bundle, step by step; every step checks what it wrote."""
    columns = list(ckpt.state["au_columns"])
    preprocess = Preprocess.from_dict(ckpt.state.get("preprocess") or ckpt.config.preprocess.to_dict())
    exported = export_graphs(ckpt, work, opset, exporter)
    test, real = _verification_frames(ckpt, columns, preprocess)
    sources = _Sources(
        {role: g.path for role, g in exported.items()}, graph_modules(ckpt.model), real, ckpt.clip_len, ckpt.n_aus
    )
    verification = _verify_fp32(sources, work)
    variants, fp16_report = _precision_variants(
        ckpt, work, sources, verification, columns, preprocess, opset, calib, int8, fp16, trt
    )
    serving, recipe, build = _serving_and_engines(ckpt, work, sources.paths["clip"], int8, triton, trt)
    data, manifest = _write_checked_manifest(
        ckpt, work, opset, exported, _summary(verification, fp16_report), variants, serving, recipe, build, test
    )
    if int8:
        manifest = record_int8_check(work, data, manifest, test, ckpt.config.data.fold)
    report = ExportReport(
        work,
        ckpt.path,
        opset,
        exported,
        verification,
        fold=ckpt.config.data.fold,
        fp16=fp16_report,
        tensorrt=tensorrt_text(recipe, build, trt),
    )
    if evaluate:
        manifest = _evaluate(report, ckpt, manifest, data, test, policy, progress)
    report.int8 = int8_text(manifest)
    report.sizes = {name: (work / name).stat().st_size for name in sorted(manifest.files)}
    return report


def _precision_variants(
    ckpt: LoadedCheckpoint,
    work: Path,
    sources: _Sources,
    verification: VerificationReport,
    columns: list[str],
    preprocess: Preprocess,
    opset: int,
    calib: int,
    int8: bool,
    fp16: bool,
    trt: bool,
) -> tuple[dict[str, dict], Fp16Report | None]:
    """The variants asked for, in this order: the INT8 encoder for the CPU (calibrated on `calib` training
    frames), the FP16 graphs, the symmetric INT8 encoder for TensorRT (with int8 only; same frames).
    Returns (the manifest's variants field, the FP16 report or None)."""
    variants: dict[str, dict] = {}
    frames = None
    if int8:
        log.info("calibrating the INT8 encoder on %d training frames", calib)
        frames = calibration_frames(
            experiment_sequences(ckpt.config, columns, "train", CALIB_SUBJECTS), preprocess, calib
        )
        variants[ENCODER_INT8] = _int8_variant(sources, work, frames, verification)
    fp16_report = add_fp16_variants(work, sources.paths, sources.real, ckpt.clip_len, opset, variants) if fp16 else None
    if trt and int8:
        variants[ENCODER_INT8_TRT] = _int8_trt_variant(sources, work, frames, verification)
    return variants, fp16_report


def _write_checked_manifest(
    ckpt: LoadedCheckpoint,
    work: Path,
    opset: int,
    exported: dict[str, ExportedGraph],
    verification: dict,
    variants: dict[str, dict],
    serving: dict,
    recipe: dict,
    build: EngineBuild,
    test: list[VideoSequence],
) -> tuple[dict, Manifest]:
    """Write manifest.json and open every graph through it; where engines were built, run them against
    onnxruntime on the first test video and write their checks in. Returns (the manifest's data, the manifest)."""
    data = build_manifest(
        ckpt,
        opset,
        {r: g.exporter for r, g in exported.items()},
        {r: g.simplifier for r, g in exported.items()},
        verification,
        variants,
        serving,
        sha256_file(ckpt.path),
        DEFAULT_POLICY,
        tensorrt=tensorrt_manifest(recipe, build),
    )
    manifest = write_manifest(work, data)
    BundleGraphs(manifest)  # every graph opens in onnxruntime and matches the manifest's names and shapes
    if build.engines:
        engine_frames = test[0].load(np.arange(min(len(test[0]), 4 * ckpt.clip_len)))
        data["tensorrt"]["engines"] = check_engines(manifest, engine_frames, build.engines)
        manifest = write_manifest(work, data)
    return data, manifest


@dataclass(frozen=True)
class _Sources:
    """The FP32 graphs just exported, the torch modules they came from, and real frames to run both on."""

    paths: dict[str, Path]
    modules: dict[str, nn.Module]
    real: np.ndarray  # preprocessed consecutive frames [clip_len + 1, 3, S, S] of one test video
    clip_len: int
    n_aus: int

    def verify(self) -> VerificationReport:
        return verify_graphs(self.paths, self.modules, self.real, self.clip_len, self.n_aus)

    def report_encoder(self, encoder: Path, label: str, report: VerificationReport) -> None:
        """Add an encoder variant (with the FP32 head) to `report`, informational: judged against FP32 PyTorch."""
        verify_graphs(
            {"encoder": encoder, "head": self.paths["head"]},
            self.modules,
            self.real,
            self.clip_len,
            self.n_aus,
            report=report,
            encoder_label=label,
            judged=False,
        )


def _verification_frames(
    ckpt: LoadedCheckpoint, columns: list[str], preprocess: Preprocess
) -> tuple[list[VideoSequence], np.ndarray]:
    """The test fold's sequences, and the first clip_len + 1 frames of the first, preprocessed."""
    n = ckpt.clip_len
    log.info("rendering the test part of fold %d for verification and F1", ckpt.config.data.fold)
    test = experiment_sequences(ckpt.config, columns, "test")
    real = to_network_input(test[0].load(np.arange(min(len(test[0]), n + 1))), preprocess)
    if len(real) < n + 1:
        raise ExportError(f"test sequence {test[0].key} has {len(real)} frames; verification needs {n + 1}")
    return test, real


def _verify_fp32(sources: _Sources, work: Path) -> VerificationReport:
    verification = sources.verify()
    if not verification.ok:
        raise ExportError(
            f"{work}: onnxruntime and PyTorch disagree beyond tolerance; export abandoned\n{verification.table()}"
        )
    return verification


def _int8_variant(sources: _Sources, work: Path, frames: np.ndarray, verification: VerificationReport) -> dict:
    """encoder.int8.onnx for the CPU, calibrated on `frames`; its manifest entry."""
    settings = quantize_encoder(sources.paths["encoder"], work / INT8_FILE, frames)
    sources.report_encoder(work / INT8_FILE, "encoder_int8", verification)
    return {
        "file": INT8_FILE,
        "graph": "encoder",
        "precision": "int8",
        "format": "onnx",
        "opset": model_opset(onnx.load(str(work / INT8_FILE))),
        "providers": ["CPUExecutionProvider"],
        "quantization": settings,
    }


def _int8_trt_variant(sources: _Sources, work: Path, frames: np.ndarray, verification: VerificationReport) -> dict:
    """encoder.int8.trt.onnx, symmetric Q/DQ for TensorRT, calibrated on `frames`; its manifest entry."""
    log.info("quantising the encoder for TensorRT (symmetric int8 Q/DQ)")
    settings = quantize_for_tensorrt(sources.paths["encoder"], work / INT8_TRT_FILE, frames)
    sources.report_encoder(work / INT8_TRT_FILE, "encoder_int8_trt", verification)
    return int8_trt_variant_entry(settings, model_opset(onnx.load(str(work / INT8_TRT_FILE))))


def _serving_and_engines(
    ckpt: LoadedCheckpoint, work: Path, clip: Path, int8: bool, triton: bool, trt: bool
) -> tuple[dict, dict, EngineBuild]:
    """The Triton repository, the trtexec recipe, TensorRT engines where asked and possible, and the Triton
    repository of the clip engine where one was built: (the manifest's serving field, the recipe, the build)."""
    n = ckpt.clip_len
    serving = {}
    if triton:
        serving["triton"] = write_repository(
            work, clip, n, ckpt.n_aus, ckpt.size, clip_stride=ckpt.config.model.clip_stride
        )
    specs = graph_specs(n, ckpt.n_aus, ckpt.size)
    recipe = write_recipe(work, specs, producer=f"ks-export {package_version(PACKAGE)}")
    if trt:
        build = build_engines(work, specs, ("fp16", "int8") if int8 else ("fp16",), clip=triton)
    else:
        build = EngineBuild(skipped="not requested (ks-export --trt builds them where TensorRT and a GPU are)")
    if trt and build.skipped:
        log.warning(
            "TensorRT engines not built: %s. The trtexec recipe is in the bundle: bash %s", build.skipped, RECIPE
        )
    plan = next((e for e in build.engines if e["graph"] == "clip"), None)
    if triton and plan is not None:
        key_dtype = plan["io_dtypes"].get("key_slot", "int64")
        serving["triton_trt"] = write_plan_repository(
            work,
            work / plan["file"],
            n,
            ckpt.n_aus,
            ckpt.size,
            plan["profile"]["max"],
            key_dtype,
            built_by=f"{plan['gpu']}, TensorRT {plan['tensorrt']}",
            clip_stride=ckpt.config.model.clip_stride,
        )
    return serving, recipe, build


def _summary(verification: VerificationReport, fp16_report: Fp16Report | None) -> dict:
    """The manifest's verification field."""
    summary = {"tolerance": {"probs_abs": PROB_TOL}, "passed": verification.ok, "graphs": verification.summary()}
    if fp16_report is not None:
        summary["fp16"] = fp16_report.summary()
    return summary


def _evaluate(
    report: ExportReport,
    ckpt: LoadedCheckpoint,
    manifest: Manifest,
    data: dict,
    test: list[VideoSequence],
    policy: str | None,
    progress: bool,
) -> Manifest:
    """Test-fold F1 of every encoder variant into `report` and the manifest's evaluation field; the manifest."""
    cfg = ckpt.config
    report.f1_policy = policy or cfg.train.eval_policy
    log.info("evaluating the bundle densely on %d test sequences (policy %s)", len(test), report.f1_policy)
    report.precision = evaluate_variants(manifest, test, list(ckpt.state["au_columns"]), report.f1_policy, progress)
    report.f1_frames = sum(len(s) for s in test)
    recorded = ckpt.state.get("metrics", {}).get("mean_f1")
    if report.f1_policy == cfg.train.eval_policy and isinstance(recorded, float):
        report.checkpoint_f1 = recorded
    data["evaluation"] = {
        "fold": cfg.data.fold,
        "policy": report.f1_policy,
        "frames": report.f1_frames,
        "checkpoint_mean_f1": report.checkpoint_f1,
        "variants": {
            r.variant: {"file": r.file, "size_bytes": r.size_bytes, "mean_f1": r.mean_f1, "per_au_f1": r.per_au_f1}
            for r in report.precision
        },
    }
    return write_manifest(manifest.root, data)


def add_fp16_variants(
    work: Path, paths: dict[str, Path], real: np.ndarray, clip_len: int, opset: int, variants: dict[str, dict]
) -> Fp16Report:
    """encoder/head/clip.fp16.onnx beside the FP32 graphs, verified against them on the CPU; ExportError when
    the FP16 probabilities differ beyond FP16_PROB_TOL."""
    fp16_paths, stats = {}, {}
    for role in GRAPH_ROLES:
        fp16_paths[role] = work / FP16_FILES[role]
        stats[role] = convert_file(paths[role], fp16_paths[role])
    report = verify_fp16(paths, fp16_paths, real, clip_len)
    log.info("FP16 variants against FP32 on the CPU:\n%s", report.table())
    if not report.ok:
        raise ExportError(
            f"{work}: the FP16 graphs disagree with FP32 beyond tolerance; export abandoned\n{report.table()}"
        )
    for role in GRAPH_ROLES:
        variants[FP16_VARIANTS[role]] = {
            **fp16_variant_entry(role, stats[role].to_dict(), opset),
            "verification": {"against": "FP32, onnxruntime CPU", "max_abs_probs": report.worst(f"{role}_fp16")},
        }
    return report


def check_engines(manifest: Manifest, frames: np.ndarray, engines: list[dict]) -> list[dict]:
    """Each encoder engine (with the FP16 head) beside onnxruntime's FP32 graphs on the same frames, densely:
    the max |probs difference| joins the engine's manifest entry; an FP16 engine beyond TRT_FP16_TOL fails the
    export. Runs only where engines were built (written, not yet run)."""
    reference = BundleGraphs(manifest, roles=("encoder", "head")).dense_probabilities(frames)
    out = [dict(e) for e in engines]
    for entry in out:
        if entry["graph"] != "encoder":
            continue
        tolerance = Tolerance(atol=TRT_FP16_TOL) if entry["precision"] == "fp16" else None
        engine = TrtEngine(manifest, device="cuda:0", precision=entry["precision"])
        try:
            parity = compare("probs", engine.dense_probabilities(frames), reference, tolerance)
        finally:
            engine.close()
        entry["verification"] = {
            "against": "onnxruntime FP32, CPU",
            "frames": int(len(frames)),
            "max_abs_probs": parity.max_abs,
            "tolerance": TRT_FP16_TOL if tolerance else None,
        }
        log.info("%s against onnxruntime fp32 over %d frames: %s", entry["file"], len(frames), parity.report())
        if not parity.ok:
            raise ExportError(
                f"{manifest.root / entry['file']}: the engine's probabilities differ from onnxruntime's "
                f"FP32 graphs; export abandoned\n  {parity.report()}"
            )
    return out


def tensorrt_text(recipe: dict, build: EngineBuild, requested: bool) -> str:
    """The report's TensorRT section: what was built, or why not, and the recipe."""
    lines = []
    if build.engines:
        lines += [
            f"  {e['file']:<58} {e['precision']}, batch {e['profile']['min']}/{e['profile']['opt']}/"
            f"{e['profile']['max']}"
            for e in build.engines
        ]
    elif requested:
        lines.append(f"  no engine built: {build.skipped}")
    lines.append(
        f"  trtexec recipe: {recipe['file']} (run `bash <bundle>/{recipe['file']} [--int8] [--clip]` on the "
        f"target GPU, e.g. a Jetson)"
    )
    return "\n".join(lines)


# --- verify ------------------------------------------------------------------------------------------------------


def _check_onnx_files(manifest: Manifest) -> list[str]:
    """Each graph and variant parses, passes onnx.checker, and has the opset the manifest and onnxruntime allow."""
    lines = []
    for name in [*manifest.graphs, *manifest.variants]:
        path = manifest.path(name)
        try:
            model = onnx.load(str(path))
        except Exception as error:  # protobuf's DecodeError and friends
            raise BundleError(
                f"{path}: not an ONNX file ({type(error).__name__}: {str(error).strip()[:200]})"
            ) from None
        opset = model_opset(model)
        if name in manifest.graphs and opset != manifest.opset:
            raise BundleError(f"{path}: opset {opset}, but field 'opset' of {MANIFEST} says {manifest.opset}")
        if opset > max_ort_opset():
            raise BundleError(
                f"{path}: opset {opset} (field 'opset' of {MANIFEST}): the installed onnxruntime "
                f"{onnxruntime.__version__} runs opsets up to {max_ort_opset()}"
            )
        try:
            onnx.checker.check_model(model)
        except Exception as error:  # ValidationError
            raise BundleError(f"{path}: onnx.checker rejects the graph ({str(error).strip()[:200]})") from None
        lines.append(f"  {path.name:<20} onnx.checker ok, opset {opset}, {path.stat().st_size / 1e6:.2f} MB")
    return lines


def _synth_frames(size: int, count: int) -> np.ndarray:
    return generate_sequence(SynthConfig(size="tiny", image_size=size, frames=count, seed=1), 0, 0).frames


def verify_bundle(path: Path | str) -> str:
    """Re-check a bundle: hashes, manifest fields, ONNX validity and opset, tensor names and shapes, one dense
    inference on a short SynthAU video, encoder -> head against clip.onnx, variants, the Triton copy.
    Returns a readable summary; raises BundleError naming the file and field that are wrong."""
    manifest = read_manifest(path)
    lines = [
        f"{manifest.root}: {MANIFEST} format {manifest.raw['format_version']}, "
        f"{len(manifest.files)} files, every sha256 matches"
    ]
    lines += _check_onnx_files(manifest)
    graphs = BundleGraphs(manifest)
    lines.append(
        f"  tensor names and shapes match {MANIFEST} (n={manifest.clip_len}, U={manifest.n_aus}, "
        f"S={manifest.preprocess.size})"
    )
    frames = _synth_frames(manifest.preprocess.size, max(3 * manifest.clip_len, 12))
    probs = _check_dense_inference(manifest, graphs, frames)
    parity = _check_composed_graphs(manifest, graphs, frames)
    lines.append(
        f"  dense inference ({len(frames)} SynthAU frames, policy {manifest.policy!r}): probabilities "
        f"{probs.shape}, in [{probs.min():.3f}, {probs.max():.3f}]; encoder->head = clip.onnx at every "
        f"key slot (max abs {parity.max_abs:.1e})"
    )
    lines += _check_encoder_variants(manifest, frames, probs)
    lines += _check_triton(manifest)
    lines += _check_tensorrt(manifest)
    lines.append("bundle OK")
    return "\n".join(lines)


def _check_dense_inference(manifest: Manifest, graphs: BundleGraphs, frames: np.ndarray) -> np.ndarray:
    """Dense probabilities of `frames`: one row per frame and AU, every value in [0, 1]."""
    probs = graphs.dense_probabilities(frames)
    if (
        probs.shape != (len(frames), manifest.n_aus)
        or not np.isfinite(probs).all()
        or probs.min() < 0
        or probs.max() > 1
    ):
        raise BundleError(
            f"{manifest.root}: dense inference gave probabilities of shape {probs.shape} in "
            f"[{np.nanmin(probs):.3g}, {np.nanmax(probs):.3g}]"
        )
    return probs


def _check_composed_graphs(manifest: Manifest, graphs: BundleGraphs, frames: np.ndarray) -> Parity:
    """encoder -> head against clip.onnx on the first clip of `frames`, at every key slot, within PROB_TOL."""
    n = manifest.clip_len
    clip = to_network_input(frames[:n], manifest.preprocess)  # (n, 3, S, S)
    slots = np.arange(n, dtype=np.int64)
    sa, students = graphs.encode(clip)
    composed = graphs.head(np.broadcast_to(sa, (n, *sa.shape)), np.broadcast_to(students, (n, *students.shape)), slots)
    fused = graphs.clip(np.broadcast_to(clip, (n, *clip.shape)), slots)
    parity = compare("probs", composed, fused, PROBS_TOLERANCE)
    if not parity.ok:
        raise BundleError(
            f"{manifest.path('head')}: encoder -> head differs from {manifest.path('clip').name}: {parity.report()}"
        )
    return parity


def _check_encoder_variants(manifest: Manifest, frames: np.ndarray, probs: np.ndarray) -> list[str]:
    """Each encoder variant runs densely; its difference from the FP32 probabilities is reported, not judged."""
    lines = []
    for name, spec in manifest.variants.items():
        if spec["graph"] == "encoder":
            variant = BundleGraphs(manifest, roles=("encoder", "head"), encoder_variant=name)
            parity = compare("probs", variant.dense_probabilities(frames), probs, None)
            lines.append(
                f"  variant {name} ({spec.get('precision', '?')}): runs; max |probs - fp32| {parity.max_abs:.3f}"
            )
    return lines + _check_int8_here(manifest)


def _check_int8_here(manifest: Manifest) -> list[str]:
    """The INT8 encoder's load-time check on this CPU, as the runtime runs it. A failure is reported, not raised:
    the bundle is sound, this CPU sums differently, and the runtime runs FP32 on it."""
    if ENCODER_INT8 not in manifest.variants:
        return []
    fp32 = BundleGraphs(manifest, roles=("encoder", "head"))
    check = check_int8(manifest, fp32, BundleGraphs(manifest, roles=("encoder", "head"), encoder_variant=ENCODER_INT8))
    verdict = "OK" if check.passed else "FAILS (the runtime runs the FP32 encoder here)"
    return [f"  {ENCODER_INT8} load-time check on this CPU: {verdict}: {check.text()}"]


def _check_triton(manifest: Manifest) -> list[str]:
    """The Triton repositories' configs parse, and their models are the bundle's verified graphs."""
    lines = []
    serving = manifest.raw.get("serving", {})
    triton = serving.get("triton")
    if triton:
        parse_config(manifest.root / triton["config"])
        copy, original = manifest.files.get(triton["file"]), manifest.files.get(GRAPH_FILES["clip"])
        if copy != original:
            raise BundleError(
                f"{manifest.root / triton['file']}: field 'files.{triton['file']}' differs from "
                f"clip.onnx's sha256: the Triton model is not the verified clip graph"
            )
        lines.append(
            f"  Triton repository {triton['repository']}/{triton['model']}: config.pbtxt parses as "
            f"ModelConfig; model.onnx is clip.onnx"
        )
    plan_repo = serving.get("triton_trt")
    if plan_repo:
        parse_config(manifest.root / plan_repo["config"])
        if manifest.files.get(plan_repo["file"]) != manifest.files.get(plan_repo["copy_of"]):
            raise BundleError(f"{manifest.root / plan_repo['file']}: differs from {plan_repo['copy_of']}")
        lines.append(
            f"  Triton repository {plan_repo['repository']}/{plan_repo['model']}: config.pbtxt parses as "
            f"ModelConfig (tensorrt_plan); model.plan is {plan_repo['copy_of']}"
        )
    return lines


def _check_tensorrt(manifest: Manifest) -> list[str]:
    """The trtexec recipe the manifest names is there and hashed; the engines found are listed."""
    section = tensorrt_section(manifest)
    if not section:
        return []
    recipe = section.get("recipe", {}).get("file", RECIPE)
    if not (manifest.root / recipe).is_file() or recipe not in manifest.files:
        raise BundleError(f"{manifest.root / recipe}: missing, but field 'tensorrt.recipe' of {MANIFEST} names it")
    listed = ", ".join(e.name.file for e in find_engines(manifest)) or "none yet"
    return [f"  TensorRT: recipe {recipe}; engines: {listed}"]
