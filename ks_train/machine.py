"""What this CPU offers for training, read from /proc/cpuinfo, and the `make demo` plan that fits it.

`make demo` must finish within 15 minutes on any 2-core x86 machine. Where the CPU computes bf16 natively (AMX or
AVX512-BF16) the demo trains the `demo` profile as it is, under bf16 autocast (800 steps). Everywhere else it
trains the same model in fp32 on a shorter schedule, `demo-fp32`: a CPU without native bf16 trains fp32 several
times slower a step (the measurements and their commands: docs/training.md, "make demo on any CPU"). The plan is
a pure function of the flags and the thread count
(`plan_demo`), so it is tested without those machines; KS_DEMO_PLAN=fp32 runs the fp32 plan on any CPU
(`train.amp=false`), bf16 the full one, auto (the default) picks by the flags.

Expected times come from measured steps (`COSTS`), not from the flags' names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ks_runtime.core.errors import ConfigError

# `make demo` on a 2-core machine, all of it. 15 minutes, not 10: with the paper's feeding (one labelled frame a
# clip) KS needs 400-500 steps to clear the all-positive floor, and a CPU without native bf16 takes ~1.5 s a step.
BUDGET_S = 900.0
PLAN_ENV = "KS_DEMO_PLAN"  # auto | bf16 | fp32
# The flags /proc/cpuinfo names, in the order the line prints them.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cpus: int  # logical CPUs this process may run on

    @property
    def torch_bf16(self) -> bool:
        """What torch.cpu._is_avx512_bf16_supported / _is_amx_tile_supported answer, and so whether the
        trainer's `train.amp` trains under bf16 autocast on this CPU (ks_train.trainer.mixed_precision_dtype)."""
        return "avx512_bf16" in self.flags or "amx_tile" in self.flags

    @property
    def amx(self) -> bool:
        """bf16 matrix tiles: where bf16 autocast pays (1.8x a step over fp32 on this project's CPU)."""
        return "amx_tile" in self.flags and "amx_bf16" in self.flags

    @property
    def isa(self) -> str:
        """The widest vector unit: AMX, AVX-512, AVX2 or SSE (x86 without AVX2; other architectures)."""
        for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
            if flag in self.flags:
                return name
        return "SSE"

    def describe(self) -> str:
        have = [f for f in FLAGS if f in self.flags]
        lacking = [f for f in FLAGS if f not in self.flags]
        return (
            f"{self.model}, {self.cpus} CPU{'s' if self.cpus != 1 else ''}; "
            f"has {' '.join(have) or 'none of'}{'; lacks ' + ' '.join(lacking) if lacking else ''}"
        )


def parse_cpuinfo(text: str, cpus: int = 1) -> CpuInfo:
    """The first processor's `model name` and `flags` from /proc/cpuinfo's text."""
    model, flags = "unknown CPU", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags, cpus)


def read_cpu(path: Path | str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU. Without /proc/cpuinfo (not Linux) the flags are empty, so the plan is fp32."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path(path).read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text, cpus)


@dataclass(frozen=True)
class StepCost:
    """Seconds in `make demo` on 2 cores: a warm-up step (labelled clips only), a semi-supervised step (with
    the unlabelled clips, PPL and L_PL), one dense evaluation of `small`'s fold-1 test part (fp32 either way),
    and the rest (generating SynthAU, its statistics, the export with verification, INT8 and Triton, the
    stream)."""

    warm: float
    semi: float
    evaluate: float
    rest: float


# bf16: `make demo` on this project's 2-core Xeon with AMX (0.44 and 0.47 s a step, 7 s an evaluation, 54 s for
# the rest; 800 steps and 4 evaluations in 389 s, 450 s in all). fp32: the `demo-fp32`
# demo on that Xeon with oneDNN and ATen capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2: 1.00
# and 1.25 s a step, 7 s an evaluation, 64 s for the rest, 417 s in all), times 1.3 for an AVX2-only 2-core AMD
# EPYC Zen 3, whose fp32 demo steps take 1.3-1.5 s (as reported from one). An AVX-512 CPU without AMX trains fp32 faster
# than Zen 3, so its expected time is an upper bound.
COSTS = {
    "bf16": StepCost(warm=0.44, semi=0.47, evaluate=7.0, rest=54.0),
    "fp32": StepCost(warm=1.30, semi=1.60, evaluate=10.0, rest=85.0),
}
ONE_THREAD = 1.6  # a training step on 1 thread against 2 (measured: 1.5x fp32, 1.6x bf16)


@dataclass(frozen=True)
class Schedule:
    name: str
    epochs: int
    steps_per_epoch: int
    warmup_fraction: float
    eval_every: int

    @property
    def warmup_epochs(self) -> int:
        return int(round(self.warmup_fraction * self.epochs))  # as TrainConfig.warmup_epochs

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def evaluations(self) -> int:
        """Evaluations during training: every eval_every epochs and after the last."""
        return sum(1 for e in range(1, self.epochs + 1) if e % self.eval_every == 0 or e == self.epochs)


# The `demo` profile's own schedule (ks_train/config.py), and the fp32 one: the same model, batch and warm-up
# share on 56% of the steps. On 288 steps the paper-fed KS ended below the 0.399 floor (0.386 and 0.392, two
# seeds; docs/training.md); the measured 448-step figure is in docs/training.md, "make demo on any CPU".
FULL = Schedule("demo", epochs=8, steps_per_epoch=100, warmup_fraction=0.5, eval_every=2)
SHORT = Schedule("demo-fp32", epochs=8, steps_per_epoch=56, warmup_fraction=0.5, eval_every=4)


@dataclass(frozen=True)
class DemoPlan:
    precision: str  # bf16 | fp32
    schedule: Schedule
    threads: int
    reason: str  # why this precision, in words
    forced: bool = False  # chosen by KS_DEMO_PLAN rather than by the flags
    upper_bound: bool = False  # fp32 on an AVX-512 CPU: faster than the AVX2 figures it is timed by

    @property
    def cost(self) -> StepCost:
        return COSTS[self.precision]

    @property
    def factor(self) -> float:
        return ONE_THREAD if self.threads <= 1 else 1.0

    @property
    def training_seconds(self) -> float:
        s, c = self.schedule, self.cost
        warm = s.warmup_epochs * s.steps_per_epoch
        return (warm * c.warm + (s.steps - warm) * c.semi + s.evaluations * c.evaluate) * self.factor

    @property
    def expected_seconds(self) -> float:
        """The whole demo: training, the final dense test and the rest."""
        return self.training_seconds + (self.cost.evaluate + self.cost.rest) * self.factor

    def overrides(self) -> list[str]:
        """`section.field=value` settings over the `demo` profile (the user's --set come after them)."""
        s = self.schedule
        return [
            f"train.epochs={s.epochs}",
            f"train.batches_per_epoch={s.steps_per_epoch}",
            f"train.warmup_fraction={s.warmup_fraction}",
            f"train.eval_every={s.eval_every}",
            f"train.amp={'true' if self.precision == 'bf16' else 'false'}",
        ]

    def describe(self) -> str:
        s = self.schedule
        notes = ["measured on 2 cores"] * (self.threads > 2) + ["timed as AVX2"] * self.upper_bound
        bound = f" or less ({', '.join(notes)})" if notes else ""
        over = f", over the {BUDGET_S / 60:.0f}-minute aim" if self.expected_seconds > BUDGET_S else ""
        return (
            f"{self.reason}: {self.precision} training; demo schedule '{s.name}': {s.epochs} epochs "
            f"x {s.steps_per_epoch} steps = {s.steps} steps, warm-up {s.warmup_epochs} epochs; "
            f"{self.threads} torch thread{'s' if self.threads != 1 else ''}; expected "
            f"~{self.expected_seconds / 60:.1f} min{bound}{over} (training ~{self.training_seconds / 60:.1f} min)"
        )


def plan_demo(cpu: CpuInfo, threads: int, force: str = "auto") -> DemoPlan:
    """CPUs with native bf16 (AMX or AVX512-BF16) train the `demo` profile's schedule in bf16, the others
    `demo-fp32` in fp32; `force`
    (KS_DEMO_PLAN: auto | bf16 | fp32) picks one whatever the flags."""
    force = (force or "auto").strip().lower()
    if force not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"{PLAN_ENV} must be auto, bf16 or fp32, got {force!r}")
    if force != "auto":
        reason, bf16 = f"{PLAN_ENV}={force} (whatever the flags)", force == "bf16"
    elif cpu.amx:
        reason, bf16 = "AMX: native bf16 matrix tiles", True
    elif cpu.torch_bf16:
        # A real AVX512-BF16 CPU (2-core AMD EPYC) ran a bf16 step 1.7x faster than fp32 and the whole demo in
        # 7 min; capping this Xeon's oneDNN at AVX512_CORE_BF16 had suggested otherwise (docs/training.md).
        reason, bf16 = "AVX512-BF16: native bf16 dot products", True
    else:
        reason, bf16 = "no native bf16 (no AVX512-BF16, no AMX)", False
    return DemoPlan(
        "bf16" if bf16 else "fp32",
        FULL if bf16 else SHORT,
        max(threads, 1),
        reason,
        forced=force != "auto",
        upper_bound=not bf16 and "avx512f" in cpu.flags,
    )


def machine_lines(cpu: CpuInfo, plan: DemoPlan) -> list[str]:
    """What `make demo` prints first: the CPU, its flags, and the plan with its expected time."""
    return [f"this CPU: {cpu.isa}; {cpu.describe()}", f"plan: {plan.describe()}"]
