"""Frame packing, clip gathering and face-crop warping: cpp_ext's kernels when it imports, numpy/cv2 otherwise.

Both backends take the same arguments, check them the same way (TypeError / ValueError / IndexError) and
give the same numbers; the numpy versions (`*_numpy`) are also the references the cpp_ext tests use.
KS_DISABLE_CPP_EXT=1 forces numpy; `backend()` says which one is active.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


def _load_cpp_ext():
    if os.environ.get("KS_DISABLE_CPP_EXT", "") not in ("", "0"):
        return None, "KS_DISABLE_CPP_EXT is set"
    try:
        import cpp_ext  # deferred: cpp_ext (compiled; a pure-Python install falls back to numpy)
    except ImportError as exc:  # not built (e.g. a pure-Python install): numpy works, only slower
        log.warning("cpp_ext does not import (%s); using the numpy ops", exc)
        return None, f"cpp_ext does not import: {exc}"
    return cpp_ext, None


_CPP_EXT, BACKEND_REASON = _load_cpp_ext()
BACKEND = "cpp_ext" if _CPP_EXT is not None else "numpy"


def backend() -> str:
    """ "cpp_ext" or "numpy": which implementation pack_frames, gather_clips and warp_crop use."""
    return BACKEND


# ---------------------------------------------------------------------------------------------------
# Argument checks shared by the numpy versions (cpp_ext makes the same checks in C++)


def _array(x: object, fn: str, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(x).__name__}")
    return x


def _contiguous(x: np.ndarray, fn: str, name: str) -> None:
    """As cpp_ext, which works in place on the buffer and so refuses strided views rather than copy them."""
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous, got a strided view (pass np.ascontiguousarray)")


def _int(x: object, fn: str, name: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer, got {x!r}") from None


def _check_out(out: np.ndarray | None, dtype: np.dtype, shape: tuple, fn: str) -> None:
    if out is None:
        return
    out = _array(out, fn, "out")
    if out.dtype != dtype:
        raise TypeError(f"{fn}: out must be {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {out.shape}")
    _contiguous(out, fn, "out")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")


def _store(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.ascontiguousarray(result)
    out[...] = result
    return out


# ---------------------------------------------------------------------------------------------------
# numpy / cv2 versions


def pack_frames_numpy(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
    out_dtype: object = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32/float16 [B, 3, H, W], (x / 255 - mean) / std in float32 (numpy)."""
    fn = "pack_frames"
    frames = _array(frames, fn, "frames")
    if frames.dtype != np.uint8:
        raise TypeError(f"{fn}: frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"{fn}: frames must be [B, H, W, 3], got shape {frames.shape}")
    _contiguous(frames, fn, "frames")
    mean32 = np.asarray(mean, dtype=np.float32).ravel()
    std32 = np.asarray(std, dtype=np.float32).ravel()
    if mean32.size != 3 or std32.size != 3:
        raise ValueError(f"{fn}: mean and std need 3 values each, got {mean32.size} and {std32.size}")
    if not np.all(std32 > 0):
        raise ValueError(f"{fn}: std must be > 0, got {std32.tolist()}")
    if out_dtype is None:
        dtype = np.dtype(np.float16) if out is not None and out.dtype == np.float16 else np.dtype(np.float32)
    else:
        dtype = np.dtype(out_dtype)
    if dtype not in (np.float32, np.float16):
        raise TypeError(f"{fn}: out_dtype must be float32 or float16, got {dtype}")
    b, h, w, _ = frames.shape
    _check_out(out, dtype, (b, 3, h, w), fn)
    src = frames[..., ::-1] if swap_rb else frames
    # The arithmetic of ks_runtime.core.preprocess.to_network_input, so the two agree bit for bit.
    packed = (src.astype(np.float32) * np.float32(1.0 / 255.0) - mean32) * (np.float32(1.0) / std32)
    return _store(packed.transpose(0, 3, 1, 2).astype(dtype, copy=False), out)  # [B, 3, H, W]


def clip_frames(
    first: int,
    count: int,
    clip_ends: np.ndarray,
    n: int,
    stream_start: int,
    ring_size: int,
    fn: str = "gather_clips",
    stride: int = 1,
) -> np.ndarray:
    """Absolute frame index of every clip slot [B, n] (slots `stride` frames apart, the last at the clip's
    end), edge-replicated; IndexError for a frame overwritten."""
    if ring_size < 1:
        raise ValueError(f"{fn}: the ring has no rows")
    if n < 1:
        raise ValueError(f"{fn}: n (frames per clip) must be >= 1, got {n}")
    if stride < 1:
        raise ValueError(f"{fn}: stride must be >= 1, got {stride}")
    if not 1 <= count <= ring_size:
        raise IndexError(f"{fn}: count must be in 1..{ring_size} (the ring's rows), got {count}")
    newest = first + count - 1
    if stream_start > newest:
        raise ValueError(f"{fn}: stream_start {stream_start} is after the newest frame held ({newest})")
    span = (n - 1) * stride
    ends = np.clip(clip_ends, stream_start - 1, newest + span + 1)  # no overflow below, same clamped frames
    frames = np.clip(ends[:, None] - span + np.arange(n) * stride, stream_start, newest)  # [B, n]
    lost = np.argwhere(frames < first)
    if len(lost):
        b, j = lost[0]
        raise IndexError(
            f"{fn}: clip {b} (ending at frame {clip_ends[b]}) needs frame {frames[b, j]}, but the ring holds "
            f"frames {first}..{newest} (frame {frames[b, j]} was overwritten)"
        )
    return frames


def gather_clips_numpy(
    ring: np.ndarray,
    first: int,
    count: int,
    clip_ends: Sequence[int] | np.ndarray,
    n: int,
    stream_start: int | None = None,
    out: np.ndarray | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Clips [B, n, ...] from a ring [R, ...] holding frames first..first+count-1 at rows f % R (numpy)."""
    fn = "gather_clips"
    ring = _array(ring, fn, "ring")
    if ring.dtype.kind not in "fuib":
        raise TypeError(f"{fn}: ring must hold numbers (float32, float16, uint8, ...), got {ring.dtype}")
    if ring.ndim < 1:
        raise ValueError(f"{fn}: ring must be [R, ...], got a 0-d array")
    _contiguous(ring, fn, "ring")
    ends = np.asarray(clip_ends)
    if ends.dtype.kind not in "iu":
        raise TypeError(f"{fn}: clip_ends must be integer frame indices, got {ends.dtype}")
    if ends.ndim != 1:
        raise ValueError(f"{fn}: clip_ends must be [B], got shape {ends.shape}")
    first, count, n = _int(first, fn, "first"), _int(count, fn, "count"), _int(n, fn, "n")
    start = first if stream_start is None else _int(stream_start, fn, "stream_start")
    frames = clip_frames(first, count, ends.astype(np.int64), n, start, ring.shape[0], fn, _int(stride, fn, "stride"))
    _check_out(out, ring.dtype, (len(ends), n, *ring.shape[1:]), fn)
    return _store(ring[frames % ring.shape[0]], out)  # [B, n, ...]


def warp_crop_numpy(
    frame: np.ndarray,
    M: np.ndarray,
    out_size: tuple[int, int],
    border: str = "constant",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """cv2.warpAffine(frame, M, out_size, INTER_LINEAR, border) for [H, W, 3] (or [B, H, W, 3] with M [B, 2, 3])."""
    fn = "warp_crop"
    frame = _array(frame, fn, "frame")
    if frame.dtype != np.uint8:
        raise TypeError(f"{fn}: frame must be uint8, got {frame.dtype}")
    if frame.ndim not in (3, 4) or frame.shape[-1] != 3:
        raise ValueError(f"{fn}: frame must be [H, W, 3] (or frames [B, H, W, 3]), got shape {frame.shape}")
    _contiguous(frame, fn, "frame")
    m = np.asarray(M)
    if m.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: M must be a float matrix, got {m.dtype}")
    want_m = (frame.shape[0], 2, 3) if frame.ndim == 4 else (2, 3)
    if m.shape != want_m:
        raise ValueError(f"{fn}: M must be {list(want_m)}, got shape {m.shape}")
    if border not in BORDERS:
        raise ValueError(f"{fn}: border must be one of {sorted(BORDERS)}, got {border!r}")
    try:
        w, h = (_int(v, fn, "out_size") for v in out_size)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: out_size must be two integers (w, h), got {out_size!r}") from None
    if not (1 <= w <= 32767 and 1 <= h <= 32767):
        raise ValueError(f"{fn}: out_size must be 1..32767 pixels a side, got ({w}, {h})")
    shape = (h, w, 3) if frame.ndim == 3 else (frame.shape[0], h, w, 3)
    _check_out(out, np.dtype(np.uint8), shape, fn)
    frames, mats = (frame[None], m[None]) if frame.ndim == 3 else (frame, m)
    crops = [
        cv2.warpAffine(f, mat.astype(np.float64), (w, h), flags=cv2.INTER_LINEAR, borderMode=BORDERS[border])
        for f, mat in zip(frames, mats, strict=True)
    ]
    result = np.stack(crops) if crops else np.empty((0, h, w, 3), np.uint8)
    return _store(result if frame.ndim == 4 else result[0], out)


# ---------------------------------------------------------------------------------------------------
# The dispatching ops


def pack_frames(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
    out_dtype: object = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32/float16 [B, 3, H, W], (x / 255 - mean) / std; swap_rb flips BGR/RGB."""
    impl = _CPP_EXT.pack_frames if _CPP_EXT is not None else pack_frames_numpy
    return impl(frames, mean, std, swap_rb=swap_rb, out_dtype=out_dtype, out=out)


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
    """Clips of n frames `stride` apart ending at clip_ends, from a ring [R, ...] -> [B, n, ...], edges
    replicated."""
    impl = _CPP_EXT.gather_clips if _CPP_EXT is not None else gather_clips_numpy
    return impl(ring, first, count, clip_ends, n, stream_start=stream_start, out=out, stride=stride)


def warp_crop(
    frame: np.ndarray,
    M: np.ndarray,
    out_size: tuple[int, int],
    border: str = "constant",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Bilinear affine crop of a uint8 frame to out_size (w, h), as cv2.warpAffine with the same border."""
    impl = _CPP_EXT.warp_crop if _CPP_EXT is not None else warp_crop_numpy
    return impl(frame, M, out_size, border=border, out=out)
