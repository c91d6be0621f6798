"""The key-slot policy: which clip, and which slot in it, scores frame t.

One function shared by dense evaluation in training and by the streaming runtime, so the two can never
disagree. A clip is n frame indices; the frame being scored sits at the key slot. Indices outside the
stream are clamped to its first or last frame (edge replication), so every frame gets an output. A model
trained with `model.clip_stride` S takes its clip's slots S frames apart (frames t + (j - m) * S); the
manifest carries S, and every function here takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLICIES = ("last", "center", "shift", "ensemble")


@dataclass(frozen=True)
class ClipRef:
    """One clip: n frame indices (already clamped into the stream) and the key slot holding frame t."""

    frames: tuple[int, ...]
    key_slot: int


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown key-slot policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def key_slots(t: int, n: int, policy: str) -> tuple[int, ...]:
    """The key slot(s) at which frame t is scored. `ensemble` uses every slot."""
    check_policy(policy)
    if policy == "last":
        return (n - 1,)
    if policy == "center":
        return (n // 2,)
    if policy == "shift":
        # Counted on the frame index, not the batch, so results do not depend on batch size.
        return (t % n,)
    return tuple(range(n))


def check_stride(stride: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"clip stride must be an integer >= 1, got {stride!r}")
    return int(stride)


def lookahead(n: int, policy: str, stride: int = 1) -> int:
    """How many future frames a policy must wait for before frame t's result is final (worst case)."""
    check_policy(policy)
    slots = {"last": 0, "center": n - 1 - n // 2, "shift": n - 1, "ensemble": n - 1}[policy]
    return slots * check_stride(stride)


def clips_for_frame(t: int, length: int | None, n: int, policy: str, stride: int = 1) -> list[ClipRef]:
    """The clips that score frame t of a stream of `length` frames (None: the end is not known yet).

    With an unknown end, indices past t are left unclamped above; callers that stream must wait
    `lookahead(n, policy, stride)` frames or for the end of the stream before using them.
    """
    if n < 1:
        raise ValueError(f"clip length n must be >= 1, got {n}")
    stride = check_stride(stride)
    if t < 0 or (length is not None and t >= length):
        raise IndexError(f"frame {t} outside a stream of {length} frames")
    clips = []
    for slot in key_slots(t, n, policy):
        start = t - slot * stride
        frames = [max(0, start + j * stride) for j in range(n)]
        if length is not None:
            frames = [min(length - 1, f) for f in frames]
        clips.append(ClipRef(tuple(frames), slot))
    return clips


def dense_clip_indices(length: int, n: int, policy: str, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every clip of a whole stream, vectorised: (frames [T, k, n] int64, slots [T, k] int64).

    k is n for `ensemble` (average the k results of frame t) and 1 otherwise. `stride` spaces the slots
    (model.clip_stride).
    """
    check_policy(policy)
    stride = check_stride(stride)
    if length < 1:
        raise ValueError("a stream needs at least one frame")
    t = np.arange(length, dtype=np.int64)
    if policy == "ensemble":
        slots = np.broadcast_to(np.arange(n, dtype=np.int64), (length, n))
    else:
        slots = np.array([key_slots(int(i), n, policy)[0] for i in t], dtype=np.int64)[:, None]
    offsets = (np.arange(n, dtype=np.int64) - slots[..., None]) * stride  # [T, k, n]
    frames = t[:, None, None] + offsets
    return np.clip(frames, 0, length - 1), np.ascontiguousarray(slots)
