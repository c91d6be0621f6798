"""What every benchmark shares: rows with their target, model and boundary; interleaved timing; the machine's name.

Torch-free, so report.py and the memory probe can import it cheaply. A row is one figure of the results
table; the tests record them through the session's `Recorder` (conftest.py) and report.py writes the table.
Ratio rows time both sides in one process, interleaved (A B B A ...), and compare medians: the machine is
shared, and load that comes and goes then falls on both sides alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
PYTEST_JSON = CACHE / "pytest-benchmark.json"  # written by `make bench`, read by report.py
ROWS_JSON = CACHE / "rows.json"  # the rows the tests recorded, read by report.py
BENCH_COMMAND = "make bench"
# The models rows are measured on: the description every row carries, and the short label of the table.
R50_MODEL = "paper-r50 (KS, ResNet-50, 224 px, n = 5, 12 AUs), untrained weights"
SMALL_MODEL = "synth-cpu-sized KS (tiny CNN, 96 px, n = 5, 12 AUs), untrained weights"
DEMO_MODEL = "synth-cpu trained by `make demo`"
VGG_MODEL = "VGG-16 AU detector (13 conv + 3 FC, 224 px, 12 AUs), built for the comparison, untrained"
MODEL_LABELS = {
    R50_MODEL: "paper-r50",
    SMALL_MODEL: "synth-cpu size",
    DEMO_MODEL: "synth-cpu (demo)",
    VGG_MODEL: "VGG-16 AU",
}
# Environment variables this machine sets that hold numpy's OpenBLAS on an older, slower kernel.
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def quick() -> bool:
    """KS_BENCH_QUICK=1: a smoke run with few rounds and short streams (figures are not results)."""
    return os.environ.get("KS_BENCH_QUICK", "").strip() not in ("", "0", "false", "no")


def budget(seconds: float) -> float:
    """A benchmark's time budget, cut tenfold in quick mode."""
    return seconds / 10 if quick() else seconds


# --- rows ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A figure's target, e.g. Target(">=", 4.5, "x")."""

    op: str
    value: float
    unit: str = ""

    def met(self, figure: float) -> bool:
        ops: dict[str, Callable[[float, float], bool]] = {
            ">=": lambda a, b: a >= b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            "<": lambda a, b: a < b,
        }
        if self.op not in ops:
            raise ValueError(f"unknown target comparison {self.op!r}")
        return bool(ops[self.op](figure, self.value))

    def text(self) -> str:
        return f"{self.op} {self.value:g}{self.unit}"


@dataclass
class Row:
    """One line of the results table: the figure, its unit and target, the model it was measured on, the
    measurement boundary (what the timer includes), and the command that produced it.

    status: "met", "missed", "no target" or "skipped: <why>"; details: every number behind the figure.
    """

    key: str
    item: int
    name: str
    figure: float | None
    unit: str
    model: str
    boundary: str
    target: Target | None = None
    status: str = ""
    command: str = BENCH_COMMAND
    details: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.status:
            return
        if self.figure is None or not np.isfinite(self.figure):
            self.status = "skipped: no figure"
        elif self.target is None:
            self.status = "no target"
        else:
            self.status = "met" if self.target.met(self.figure) else "missed"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target"] = None if self.target is None else {**asdict(self.target), "text": self.target.text()}
        return jsonable(data)

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        data = dict(data)
        target = data.pop("target", None)
        if target is not None:
            target = Target(target["op"], target["value"], target.get("unit", ""))
        return cls(target=target, **data)


def jsonable(value):
    """numpy scalars and arrays, tuples and NaN made plain JSON (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class Recorder:
    """The rows of one pytest session, written to ROWS_JSON as each is added (a crash keeps what was done), and
    at the end how much of the machine other processes took meanwhile."""

    def __init__(self, path: Path = ROWS_JSON) -> None:
        self.path = path
        self.rows: list[Row] = []
        self.started = time.time()
        self.load_at_start = load_average()
        self.contention: dict = {}
        self._cpu_start = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write()

    def finish(self) -> None:
        """Record the machine's busy CPU time over the session that was not this process or its children."""
        wall0, busy0, own0 = self._cpu_start
        wall, busy, own = time.perf_counter() - wall0, machine_busy_seconds() - busy0, own_cpu_seconds() - own0
        self.contention = {
            "wall_s": wall,
            "own_cpu_s": own,
            "machine_busy_cpu_s": busy,
            "others_cores": max(0.0, busy - own) / wall if wall > 0 else float("nan"),
            "cores": cores(),
            "load_at_end": load_average(),
        }
        self._write()

    def add(self, row: Row, nodeid: str | None = None) -> Row:
        if nodeid and row.command == BENCH_COMMAND:
            row.command = f"{BENCH_COMMAND}  (test: {nodeid})"
        self.rows = [r for r in self.rows if r.key != row.key] + [row]
        self._write()
        return row

    def get(self, key: str) -> Row | None:
        """A row recorded earlier in this session (later rows cite earlier measurements)."""
        return next((r for r in self.rows if r.key == key), None)

    def _write(self) -> None:
        data = {
            "started": self.started,
            "quick": quick(),
            "load_at_start": self.load_at_start,
            "contention": jsonable(self.contention),
            "rows": [r.to_dict() for r in self.rows],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)


# --- timing --------------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Seconds per call of one side, and how many output frames one call produces."""

    seconds: np.ndarray
    frames_per_call: int = 1

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def best(self) -> float:
        return float(np.min(self.seconds))

    @property
    def fps(self) -> float:
        """Output frames per second at the median call."""
        return self.frames_per_call / self.median

    @property
    def ms_per_frame(self) -> float:
        return 1e3 * self.median / self.frames_per_call

    def summary(self) -> dict:
        s = self.seconds
        return {
            "calls": int(len(s)),
            "frames_per_call": self.frames_per_call,
            "median_s": self.median,
            "best_s": self.best,
            "p90_s": float(np.percentile(s, 90)),
            "fps": self.fps,
            "ms_per_frame": self.ms_per_frame,
        }


def rounds_for(seconds_per_round: float, budget_s: float, min_rounds: int, max_rounds: int) -> int:
    """How many rounds fit the budget, within [min_rounds, max_rounds] (quick mode: at most 3)."""
    rounds = int(budget_s / max(seconds_per_round, 1e-9))
    rounds = max(min_rounds, min(max_rounds, rounds))
    return min(rounds, 3) if quick() else rounds


def interleaved(
    benchmark,
    sides: Mapping[str, Callable[[], object]],
    budget_s: float,
    frames_per_call: Mapping[str, int] | None = None,
    min_rounds: int = 5,
    max_rounds: int = 500,
) -> dict[str, Samples]:
    """Time every side once per round, in A B .. / .. B A order, for as many rounds as fit `budget_s`.

    `benchmark` (pytest-benchmark's fixture) times the rounds, so its statistics are of one whole round;
    the per-side samples come back here. One untimed round first warms every side up (sessions allocate, caches
    fill) and sizes the rounds to the budget.
    """
    frames_per_call = frames_per_call or {}
    started = time.perf_counter()
    for fn in sides.values():
        fn()
    pilot = time.perf_counter() - started
    rounds = rounds_for(pilot, budget(budget_s), min_rounds, max_rounds)
    order = list(sides)
    times: dict[str, list[float]] = {k: [] for k in order}
    count = [0]

    def one_round() -> None:
        for key in order if count[0] % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            sides[key]()
            times[key].append(time.perf_counter() - t0)
        count[0] += 1

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    samples = {k: Samples(np.asarray(v), frames_per_call.get(k, 1)) for k, v in times.items()}
    benchmark.extra_info.update({f"{k}_median_s": s.median for k, s in samples.items()})
    benchmark.extra_info["rounds"] = rounds
    return samples


# --- the machine ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name, as lscpu and /proc/cpuinfo give it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")) or f in ("sse4_2", "f16c"))
    except OSError:
        pass
    return []


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_slug(model: str | None = None, ncores: int | None = None) -> str:
    """A file name for the machine: the CPU model and the core count, e.g. "amd-epyc-2c"."""
    model = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", "", (model or cpu_model()).lower())
    words = re.sub(r"[^a-z0-9]+", "-", model).strip("-")
    return f"{words or 'cpu'}-{ncores or cores()}c"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has spent since boot (/proc/stat: all but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    import resource

    return sum(
        u.ru_utime + u.ru_stime
        for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def blas_info() -> list[dict]:
    """numpy's BLAS in this process, as threadpoolctl sees it (library, version, kernel, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info.get(k) for k in keep} for info in threadpool_info() if info.get("user_api") == "blas"]


def machine_info() -> dict:
    """What the results were measured on: CPU, cores, memory, OS and the library versions that set the speed."""
    packages = ("numpy", "onnxruntime", "onnx", "torch", "opencv-python-headless", "pytest-benchmark", "threadpoolctl")
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "memory_gib": round(memory_gib(), 1),
        "cpu_flags": cpu_flags(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "blas": blas_info(),
        "environment": {k: os.environ.get(k) for k in (*OPENBLAS_VARS, "OMP_NUM_THREADS")},
        "slug": machine_slug(),
    }


# --- cache keys ----------------------------------------------------------------------------------------------


def code_key(
    paths: list[str], recipe: str = "", packages: tuple[str, ...] = ("torch", "onnx", "onnxruntime", "onnxscript")
) -> str:
    """12 hex digits over the named source files (globs under the repository), a recipe version and package
    versions: a cached artefact made by other code is not reused."""
    digest = hashlib.sha256(recipe.encode())
    for pattern in paths:
        matched = sorted(ROOT.glob(pattern))
        if not matched:  # a moved file would silently drop out of the key, and stale caches would be reused
            raise FileNotFoundError(f"code_key: {pattern!r} matches no file under {ROOT}")
        for path in matched:
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    for package in packages:
        digest.update(f"{package}={version(package)}".encode())
    return digest.hexdigest()[:12]
