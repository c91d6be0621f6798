"""Exported graphs run in onnxruntime beside PyTorch on the same inputs; the max errors are tabulated.

Polygraphy's habit: an artefact is not trusted until it has run beside its source. Every graph gets fresh
random inputs and real SynthAU frames, for every key slot, and encoder -> head must equal clip.onnx.
Probabilities must agree within PROB_TOL (absolute); logits within LOGIT_TOL absolute plus relative. Each
comparison is ks_export.parity's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ks_export.graphs import random_inputs
from ks_export.parity import Parity, Tolerance, compare_outputs
from ks_runtime.core.bundle import PROBS
from ks_runtime.engine.ort_graphs import open_session

PROB_TOL = 1e-4  # on probabilities: the export fails above it
LOGIT_TOL = 1e-4  # on logits: |diff| <= LOGIT_TOL * (1 + |reference|), as numpy.isclose with atol = rtol
PROBS_TOLERANCE = Tolerance(atol=PROB_TOL)
LOGITS_TOLERANCE = Tolerance(atol=LOGIT_TOL, rtol=LOGIT_TOL)
FAILURES_LISTED = 5  # the table ends with the report lines of this many failed checks


def tolerance_for(output: str) -> Tolerance:
    """Probabilities: absolute PROB_TOL; logits: LOGIT_TOL absolute plus relative."""
    return PROBS_TOLERANCE if output == PROBS else LOGITS_TOLERANCE


@dataclass(frozen=True)
class Check:
    """One comparison: a graph's output on one kind of input at one key slot ("-" where none, "mixed")."""

    graph: str
    inputs: str
    key_slot: str
    parity: Parity
    judged: bool = True  # False: informational (e.g. the INT8 variant against FP32 PyTorch)

    @property
    def output(self) -> str:
        return self.parity.name

    @property
    def max_abs(self) -> float:
        return self.parity.max_abs

    @property
    def max_rel(self) -> float:
        return self.parity.max_rel

    @property
    def ok(self) -> bool:
        return self.parity.ok

    def report(self) -> str:
        return f"{self.graph} on {self.inputs} inputs, key slot {self.key_slot}: {self.parity.report()}"


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)

    def add(
        self,
        graph: str,
        inputs: str,
        key_slot: str,
        names: tuple[str, ...],
        actual: list[np.ndarray],
        reference: list[np.ndarray],
        judged: bool = True,
    ) -> None:
        candidate = dict(zip(names, actual, strict=True))
        for parity in compare_outputs(
            candidate, dict(zip(names, reference, strict=True)), {name: tolerance_for(name) for name in names}
        ):
            self.checks.append(Check(graph, inputs, key_slot, parity, judged))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.judged)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.judged and not c.ok]

    def summary(self) -> dict[str, dict]:
        """Per graph: max abs and rel error over all its checks, the tolerance, and whether all passed."""
        out: dict[str, dict] = {}
        for c in self.checks:
            row = out.setdefault(
                c.graph, {"max_abs": 0.0, "max_rel": 0.0, "checks": 0, "passed": True, "judged": c.judged}
            )
            row["max_abs"] = max(row["max_abs"], c.max_abs)
            row["max_rel"] = max(row["max_rel"], c.max_rel)
            row["checks"] += 1
            row["passed"] = row["passed"] and (c.ok or not c.judged)
        for row in out.values():
            row["tolerance"] = {"probs_abs": PROB_TOL, "logits_abs_rel": LOGIT_TOL} if row.pop("judged") else None
        return out

    def table(self) -> str:
        """One line per graph, input kind and output: max abs error at each key slot, then max abs / rel."""
        slots = sorted({c.key_slot for c in self.checks if c.key_slot.isdigit()}, key=int)
        header = (
            f"{'graph':<24}{'inputs':<14}{'output':<16}"
            + "".join(f"{'slot ' + s:>9}" for s in slots)
            + f"{'mixed':>9}{'max abs':>10}{'max rel':>10}  result"
        )
        lines = [header]
        groups: dict[tuple[str, str, str], list[Check]] = {}
        for c in self.checks:
            groups.setdefault((c.graph, c.inputs, c.output), []).append(c)
        for (graph, inputs, output), checks in groups.items():
            by_slot = {c.key_slot: c.max_abs for c in checks}
            cells = "".join(f"{by_slot[s]:>9.1e}" if s in by_slot else f"{'':>9}" for s in slots)
            mixed = f"{by_slot['mixed']:>9.1e}" if "mixed" in by_slot else f"{'':>9}"
            judged = checks[0].judged
            result = ("ok" if all(c.ok for c in checks) else "FAIL") if judged else "info"
            lines.append(
                f"{graph:<24}{inputs:<14}{output:<16}{cells}{mixed}{max(c.max_abs for c in checks):>10.1e}"
                f"{max(c.max_rel for c in checks):>10.1e}  {result}"
            )
        lines.append(
            "inputs: random = fresh N(0,1) frames / N(0,2^2) logits, B=2-3 per slot, B=1 under mixed slots; "
            "SynthAU = two clips of consecutive test-fold frames (B=2)"
        )
        verdict = "PASS" if self.ok else f"FAIL ({len(self.failures)} checks over tolerance)"
        lines.append(f"tolerance: probabilities {PROB_TOL:.0e} absolute, logits {LOGIT_TOL:.0e} abs + rel; {verdict}")
        lines += [f"  {c.report()}" for c in self.failures[:FAILURES_LISTED]]
        return "\n".join(lines)


def _numpy(outputs) -> list[np.ndarray]:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [o.detach().cpu().numpy() for o in outputs]


Runner = Callable[..., list[np.ndarray]]


def ort_runner(path: Path, input_names: tuple[str, ...]) -> Runner:
    session = open_session(path)
    return lambda *arrays: session.run(None, {n: a for n, a in zip(input_names, arrays, strict=True)})


@torch.no_grad()
def verify_graphs(
    paths: dict[str, Path],
    modules: dict[str, nn.Module],
    real_frames: np.ndarray,
    clip_len: int,
    n_aus: int,
    seed: int = 0,
    report: VerificationReport | None = None,
    encoder_label: str = "encoder",
    judged: bool = True,
) -> VerificationReport:
    """Compare the ONNX graphs in `paths` with the torch `modules` of the same roles.

    real_frames: preprocessed SynthAU frames [N, 3, S, S], N >= clip_len + 1, consecutive frames of one video.
    `encoder_label` and `judged` let the INT8 encoder variant be reported (informational) with the same code.
    """
    report = report or VerificationReport()
    n, size = clip_len, real_frames.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    runners = {role: ort_runner(p, tuple(modules[role].input_names)) for role, p in paths.items()}
    real = torch.from_numpy(np.ascontiguousarray(real_frames, np.float32))
    # Two real clips: frames 0..n-1 and 1..n, as a video's neighbouring windows.
    real_clips = torch.stack([real[0:n], real[1 : n + 1]])  # (2, n, 3, S, S)

    def compare(role: str, label: str, inputs: str, slot: str, args: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        actual = runners[role](*[a.numpy() for a in args])
        report.add(label, inputs, slot, modules[role].output_names, actual, _numpy(modules[role](*args)), judged)
        return actual

    if "encoder" in runners:
        for b in (3, 1):  # B=1 too: the batch axis is dynamic
            compare("encoder", encoder_label, "random", "-", random_inputs("encoder", b, n, n_aus, size, gen))
        compare("encoder", encoder_label, "SynthAU", "-", (real,))
    # The head on real inputs: PyTorch's per-frame outputs of the real clips.
    sa, students = modules["encoder"].model.encode_frames(real_clips.flatten(0, 1))
    real_head = (sa.reshape(2, n, -1), students.reshape(2, n, n, -1))  # (2, n, U), (2, n, n, U)
    if "encoder" in runners:
        ort_sa, ort_students = runners["encoder"](real_clips.flatten(0, 1).numpy())
        ort_head_inputs = (ort_sa.reshape(2, n, -1), ort_students.reshape(2, n, n, -1))  # as real_head
    for label, slot in [(str(k), k) for k in range(n)] + [("mixed", None)]:
        real_slots = torch.tensor([slot, slot] if slot is not None else [1, n - 1])
        if "head" in runners and judged:
            b = 3 if slot is not None else 1  # a batch of one under random slots checks B=1
            compare("head", "head", "random", label, random_inputs("head", b, n, n_aus, size, gen, slot))
            compare("head", "head", "SynthAU", label, (*real_head, real_slots))
        if "clip" in runners and judged:
            b = 2 if slot is not None else 1
            compare("clip", "clip", "random", label, random_inputs("clip", b, n, n_aus, size, gen, slot))
        if "encoder" in runners and "head" in runners:
            composed = runners["head"](*ort_head_inputs, real_slots.numpy())
            reference = _numpy(modules["clip"](real_clips, real_slots))
            report.add(f"{encoder_label}->head", "SynthAU", label, ("probs",), composed, reference, judged)
            if "clip" in runners and judged:
                fused = runners["clip"](real_clips.numpy(), real_slots.numpy())
                report.add("clip", "SynthAU", label, ("probs",), fused, reference)
                report.add("encoder->head=clip.onnx", "SynthAU", label, ("probs",), composed, fused)
    return report
