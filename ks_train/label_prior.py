"""A prior over how AU labels move from frame to frame, fitted from sparse kept labels (docs/model.md, PPL) [R].

Why: the label-sequence gate (`ppl_gate`) learns what clean label sequences look like by telling them from
perturbed copies. With the paper's feeding and sparse labels no clip holds a clean label sequence: kept labels
are k frames apart. What the kept labels do give is each AU's base rate and how often its label persists over k
frames. A two-state Markov chain per AU matches both, and its one-step transitions follow from the k-step ones:
the chain's k-step matrix has the eigenvalue lambda**k, where lambda = 1 - P(on) - P(off) is the one-step one.
Sampling the chain gives adjacent-frame label sequences with the data's base rates and run lengths: the
"regular pattern of facial action movements" the gate checks pseudo labels against. AUs are independent
under the prior (co-occurrence is not modelled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ks_train.losses import UNKNOWN

PSEUDO_COUNT = 0.5  # added to each transition count, so an AU seen in one state only still gets a finite chain
MAX_PERSISTENCE = 0.999  # lambda below 1: every AU can still change


@dataclass(frozen=True)
class MarkovLabelPrior:
    """Per AU (U,): base_rate = P(active); persistence = lambda, the one-step eigenvalue in [0, 1)."""

    base_rate: torch.Tensor
    persistence: torch.Tensor

    @property
    def p_onset(self) -> torch.Tensor:
        """(U,) P(inactive -> active) in one frame."""
        return self.base_rate * (1 - self.persistence)

    @property
    def p_offset(self) -> torch.Tensor:
        """(U,) P(active -> inactive) in one frame."""
        return (1 - self.base_rate) * (1 - self.persistence)

    def sample(self, count: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """(count, n, U) float 0/1 label sequences of n adjacent frames, drawn from the stationary chain."""
        if count < 0 or n < 1:
            raise ValueError(f"count must be >= 0 and n >= 1, got count={count}, n={n}")
        u = len(self.base_rate)
        draws = torch.rand(count, n, u, generator=generator)
        frames = [draws[:, 0] < self.base_rate]
        for t in range(1, n):
            stay_on = frames[-1] & (draws[:, t] >= self.p_offset)
            turn_on = ~frames[-1] & (draws[:, t] < self.p_onset)
            frames.append(stay_on | turn_on)
        return torch.stack(frames, 1).float()


def transition_counts(label_tracks: Sequence[np.ndarray]) -> np.ndarray:
    """(U, 2, 2) counts of (label, next kept label) over consecutive rows of each track, unknowns skipped."""
    counts = None
    for track in label_tracks:
        track = np.asarray(track)
        if track.ndim != 2:
            raise ValueError(f"each label track must be (T, U), got shape {track.shape}")
        if counts is None:
            counts = np.zeros((track.shape[1], 2, 2))
        if track.shape[1] != counts.shape[0]:
            raise ValueError(f"label tracks disagree on the AU count: {counts.shape[0]} and {track.shape[1]}")
        now, later = track[:-1], track[1:]
        known = (now != UNKNOWN) & (later != UNKNOWN)
        for a in (0, 1):
            for b in (0, 1):
                counts[:, a, b] += ((now == a) & (later == b) & known).sum(0)
    if counts is None:
        raise ValueError("no label tracks to fit the label prior from")
    return counts


def fit_label_prior(label_tracks: Sequence[np.ndarray], spacing: int) -> MarkovLabelPrior:
    """The prior from kept labels: label_tracks are each video's kept labels (T_i, U) in frame order, consecutive
    rows `spacing` frames apart, UNKNOWN (-1) where an AU is not coded."""
    if spacing < 1:
        raise ValueError(f"spacing must be >= 1, got {spacing}")
    counts = transition_counts(label_tracks) + PSEUDO_COUNT
    stays_on = counts[:, 1, 1] / counts[:, 1].sum(1)
    turns_on = counts[:, 0, 1] / counts[:, 0].sum(1)
    k_step = np.clip(stays_on - turns_on, 0.0, MAX_PERSISTENCE)  # lambda ** spacing
    active, coded = counts[:, 1].sum(1) + counts[:, :, 1].sum(1), 2 * counts.sum((1, 2))
    return MarkovLabelPrior(
        base_rate=torch.as_tensor(active / coded, dtype=torch.float32),
        persistence=torch.as_tensor(k_step ** (1.0 / spacing), dtype=torch.float32),
    )
