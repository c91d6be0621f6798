"""cpp_ext: C++ (OpenMP) kernels that turn frames into network input: pack_frames, gather_clips, warp_crop.

Each op reads and writes numpy buffers directly (no copies; `out=` to fill a preallocated one), releases the
GIL, runs OpenMP across the batch, and checks its arguments: TypeError / ValueError / IndexError with a
message, never a crash.
`cpp_ext.cuda` has the same ops as CUDA kernels; `ks_runtime.core.kernels` falls back to numpy without this package.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence

import numpy as np

# OpenMP threads that spin between calls hold cores the inference engine wants; on a busy machine a spinning
# team member that loses its core stalls the next call by a scheduler slice (docs/gpu.md, Build switches), while
# sleeping threads wake in microseconds. libgomp reads this when it loads, so it is set before the import below;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import _cpu  # noqa: E402

__all__ = ["BORDERS", "gather_clips", "get_num_threads", "pack_frames", "set_num_threads", "warp_crop"]

# warp_crop's border rules, as cv2.BORDER_CONSTANT (value 0) and cv2.BORDER_REPLICATE.
BORDERS = {"constant": 0, "replicate": 1}


def set_num_threads(n: int) -> None:
    """Threads the CPU ops may use: n >= 1, or 0 for OpenMP's default (all cores). Process-wide.

    Calls that write under ~1 MiB always run on one thread: waking a team costs more than it saves there.
    """
    _cpu.set_num_threads(_int(n, "set_num_threads", "n"))


def get_num_threads() -> int:
    """Threads the CPU ops use for large calls."""
    return _cpu.max_threads()


def _array(x: object, fn: str, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(x).__name__}")
    return x


def _int(x: object, fn: str, name: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer, got {x!r}") from None


def _out_is_half(out_dtype: object, out: np.ndarray | None, fn: str) -> bool:
    """float16 output? From out_dtype, else from out's dtype; float32 by default."""
    if out_dtype is None:
        return out is not None and out.dtype == np.float16
    dtype = np.dtype(out_dtype)
    if dtype not in (np.float32, np.float16):
        raise TypeError(f"{fn}: out_dtype must be float32 or float16, got {dtype}")
    return dtype == np.float16


def pack_frames(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
    out_dtype: object = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32/float16 [B, 3, H, W], (x / 255 - mean[c]) / std[c], in one pass.

    swap_rb reverses the colour order (BGR <-> RGB). Computed in float32 like
    ks_runtime.core.preprocess.to_network_input, then rounded to float16 if asked; `out` is written in place.
    """
    frames = _array(frames, "pack_frames", "frames")
    if out is not None:
        out = _array(out, "pack_frames", "out")
    half = _out_is_half(out_dtype, out, "pack_frames")
    mean = [float(v) for v in np.ravel(mean)]
    std = [float(v) for v in np.ravel(std)]
    return _cpu.pack_frames(frames, mean, std, bool(swap_rb), half, out)


def gather_clips(
    ring: np.ndarray,
    first: int,
    count: int,
    clip_ends: Sequence[int] | np.ndarray,
    n: int,
    stream_start: int | None = None,
    out: np.ndarray | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Clips of n frames from a ring buffer [R, ...] -> [B, n, ...]; frame f lives at ring row f % R.

    The ring holds frames first..first+count-1. Clip b ends at frame clip_ends[b]; slot j holds frame
    clamp(clip_ends[b] - (n - 1 - j) * stride, stream_start, first + count - 1): every stride-th frame, the
    stream's first and newest frames replicated at its edges. IndexError when a clip needs a frame the ring
    no longer holds; ValueError for stride < 1.
    """
    ring = _array(ring, "gather_clips", "ring")
    if out is not None:
        out = _array(out, "gather_clips", "out")
    ends = np.asarray(clip_ends)
    if ends.dtype.kind not in "iu":
        raise TypeError(f"gather_clips: clip_ends must be integer frame indices, got {ends.dtype}")
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    start = None if stream_start is None else _int(stream_start, "gather_clips", "stream_start")
    return _cpu.gather_clips(
        ring,
        _int(first, "gather_clips", "first"),
        _int(count, "gather_clips", "count"),
        ends,
        _int(n, "gather_clips", "n"),
        start,
        out,
        _int(stride, "gather_clips", "stride"),
    )


def warp_crop(
    frame: np.ndarray,
    M: np.ndarray,
    out_size: tuple[int, int],
    border: str = "constant",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """cv2.warpAffine(frame, M, out_size, INTER_LINEAR, border) for uint8 [H, W, 3], bit-exact with OpenCV.

    M is the forward (source -> crop) 2x3 matrix; out_size is (w, h). Batched: frames [B, H, W, 3] with
    M [B, 2, 3]. border is "constant" (0) or "replicate".
    """
    frame = _array(frame, "warp_crop", "frame")
    if out is not None:
        out = _array(out, "warp_crop", "out")
    m = np.asarray(M)
    if m.dtype.kind not in "fiu":
        raise TypeError(f"warp_crop: M must be a float matrix, got {m.dtype}")
    if border not in BORDERS:
        raise ValueError(f"warp_crop: border must be one of {sorted(BORDERS)}, got {border!r}")
    try:
        w, h = (_int(v, "warp_crop", "out_size") for v in out_size)
    except (TypeError, ValueError):
        raise ValueError(f"warp_crop: out_size must be two integers (w, h), got {out_size!r}") from None
    m = np.ascontiguousarray(m, dtype=np.float64)
    return _cpu.warp_crop(frame, m, w, h, BORDERS[border], out)
