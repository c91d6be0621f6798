"""Shared fixtures of `make bench`: the models (exported once, cached in benchmarks/.cache/), SynthAU frames, and
the recorder every benchmark writes its rows to.

Files named bench_*.py are collected here (pyproject's testpaths keep `make test` away from them).
KS_BENCH_QUICK=1 makes a smoke run: every budget cut tenfold, at most 3 rounds, short streams.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from benchmarks.harness import Recorder, Row, machine_busy_seconds, own_cpu_seconds, quick
from benchmarks.models import cached_bundle
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.synth.generate import SynthConfig, generate_sequence

log = logging.getLogger("benchmarks")


def pytest_collect_file(file_path, parent):
    """Collect benchmarks/bench_*.py when the folder is given (a file named on the command line is collected by
    pytest itself)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if quick() and hasattr(config.option, "benchmark_max_time"):
        # pytest-benchmark's own calibrated suites (bench_cpp_ext.py): a few short rounds each.
        config.option.benchmark_max_time = 0.02
        config.option.benchmark_min_rounds = 2
        config.option.benchmark_warmup = False


def say(request, text: str) -> None:
    """A progress line on the terminal, past pytest's capture (exports take minutes)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[bench] {text}")


@pytest.fixture(scope="session", autouse=True)
def recorder():
    recorder = Recorder()
    yield recorder
    recorder.finish()


@pytest.fixture
def record(recorder, request):
    """record(row) -> row: add a row to the table, naming this test as the command that produced it, with the
    cores other processes kept busy while the test ran (details["others_cores"])."""
    started = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())

    def add(row: Row) -> Row:
        wall = time.perf_counter() - started[0]
        others = (machine_busy_seconds() - started[1]) - (own_cpu_seconds() - started[2])
        row.details.setdefault("others_cores", max(0.0, others) / wall if wall > 0 else float("nan"))
        return recorder.add(row, request.node.nodeid)

    return add


@pytest.fixture(scope="session")
def r50_bundle(request):
    """The untrained paper-r50 bundle (encoder, head, clip, INT8 encoder), exported once and cached."""
    started = time.perf_counter()
    say(request, "paper-r50 bundle: exporting when not cached (a few minutes the first time) ...")
    bundle = cached_bundle("paper-r50", int8=True)
    say(request, f"paper-r50 bundle ready: {bundle} ({time.perf_counter() - started:.0f} s)")
    return bundle


@pytest.fixture(scope="session")
def small_bundle(request):
    """An untrained synth-cpu-sized bundle (tiny CNN at 96 px), for the long memory stream."""
    say(request, "synth-cpu-sized bundle: exporting when not cached ...")
    return cached_bundle("synth-cpu", int8=False)


@pytest.fixture(scope="session")
def r50_graphs(r50_bundle):
    """paper-r50's encoder, head and clip graphs in onnxruntime (the runtime's session options)."""
    return BundleGraphs(r50_bundle)


@pytest.fixture(scope="session")
def aligned_frames() -> np.ndarray:
    """120 aligned SynthAU frames at 224 px, RGB uint8 [120, 224, 224, 3]: what paper-r50 reads."""
    return generate_sequence(SynthConfig(size="tiny", image_size=224), 0, 0).frames


@pytest.fixture(scope="session")
def r50_inputs(r50_bundle, aligned_frames) -> np.ndarray:
    """The aligned frames preprocessed for paper-r50: float32 [120, 3, 224, 224]."""
    return to_network_input(aligned_frames, read_manifest(r50_bundle).preprocess)
