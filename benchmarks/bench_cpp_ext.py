"""cpp_ext's pack_frames and gather_clips against the numpy a user would write, at 224 px, batch 1 / 8 / 32.

Run: .venv/bin/python -m pytest benchmarks/bench_cpp_ext.py --benchmark-only
Throughput is bytes read plus written per call over the median time; a memcpy (np.copyto) moving the same
number of bytes gives this machine's bandwidth. The table at the end has GB/s, x numpy and / memcpy.
"cpp_ext" allocates its output, "cpp_ext+out" writes into a preallocated buffer (as the runtime does into an
engine's input); "/1t" runs on one thread (cpp_ext.set_num_threads(1)): on a machine whose other cores are
busy, an OpenMP team waits for its descheduled members, and one thread is the figure to trust there.
"""

import numpy as np
import pytest

import cpp_ext
from ks_runtime.core.preprocess import IMAGENET_MEAN, IMAGENET_STD

SIZE = 224
CLIP = 5  # n, the paper's default clip length
RING = 64
FIRST = 1000  # the held frames wrap around the ring's end
BATCHES = [1, 8, 32]
IMPLS = ["numpy", "cpp_ext", "cpp_ext/1t", "cpp_ext+out", "cpp_ext+out/1t", "memcpy"]
MEAN = np.asarray(IMAGENET_MEAN, np.float32)
STD = np.asarray(IMAGENET_STD, np.float32)

RESULTS: dict[tuple[str, int, str], tuple[float, float]] = {}  # (op, batch, impl) -> (median s, GB/s)


def pack_reference(x: np.ndarray) -> np.ndarray:
    """The plain numpy: BGR -> RGB, scale, normalise, NHWC -> NCHW."""
    return np.ascontiguousarray(((x[..., ::-1].astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2))


def gather_reference(ring: np.ndarray, idx: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return ring[(idx[:, None] + offsets) % len(ring)]


def record(benchmark, op: str, batch: int, impl: str, nbytes: int) -> None:
    median = benchmark.stats.stats.median
    gbps = nbytes / median / 1e9
    benchmark.extra_info.update({"bytes": nbytes, "GB/s": round(gbps, 2)})
    RESULTS[(op, batch, impl)] = (median, gbps)


@pytest.fixture
def threads(request):
    """One thread for the "/1t" variants, OpenMP's default otherwise."""
    cpp_ext.set_num_threads(1 if request.node.callspec.params["impl"].endswith("/1t") else 0)
    yield
    cpp_ext.set_num_threads(0)


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Print the GB/s table, with ratios to numpy and to memcpy, once the module's benchmarks have run."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not RESULTS:
        return
    lines = [f"{'op':<7}{'batch':>6}  {'impl':<15}{'median ms':>10}{'GB/s':>8}{'x numpy':>9}{'/ memcpy':>10}"]
    for op, batch, impl in sorted(RESULTS):
        median, gbps = RESULTS[(op, batch, impl)]
        ref = RESULTS.get((op, batch, "numpy"), (None, None))[1]
        mem = RESULTS.get((op, batch, "memcpy"), (None, None))[1]
        vs_ref = f"{gbps / ref:9.2f}" if ref else f"{'':>9}"
        vs_mem = f"{gbps / mem:10.2f}" if mem else f"{'':>10}"
        lines.append(f"{op:<7}{batch:>6}  {impl:<15}{median * 1e3:10.3f}{gbps:8.2f}{vs_ref}{vs_mem}")
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_pack_frames(benchmark, threads, batch, impl):
    rng = np.random.default_rng(batch)
    frames = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    out = np.empty((batch, 3, SIZE, SIZE), np.float32)
    nbytes = frames.nbytes + out.nbytes
    benchmark.group = f"pack_frames B={batch}"
    if impl == "numpy":
        result = benchmark(pack_reference, frames)
    elif impl in ("cpp_ext", "cpp_ext/1t"):
        result = benchmark(cpp_ext.pack_frames, frames, MEAN, STD, True)
    elif impl.startswith("cpp_ext+out"):
        result = benchmark(cpp_ext.pack_frames, frames, MEAN, STD, True, out=out)
    else:  # the same bytes moved by a plain copy
        src = np.ones(nbytes // 2, np.uint8)
        dst = np.empty_like(src)
        benchmark(np.copyto, dst, src)
        record(benchmark, "pack", batch, impl, nbytes)
        return
    np.testing.assert_allclose(result, pack_reference(frames), atol=1e-5)
    record(benchmark, "pack", batch, impl, nbytes)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_gather_clips(benchmark, threads, batch, impl):
    """Clips of CLIP packed frames [3, 224, 224] from a ring of RING frames, as clip.onnx takes them."""
    rng = np.random.default_rng(batch)
    ring = rng.standard_normal((RING, 3, SIZE, SIZE), dtype=np.float32)
    ends = rng.integers(FIRST + CLIP - 1, FIRST + RING, size=batch)
    offsets = np.arange(-CLIP + 1, 1)
    out = np.empty((batch, CLIP, 3, SIZE, SIZE), np.float32)
    nbytes = 2 * out.nbytes
    benchmark.group = f"gather_clips B={batch}"
    if impl == "numpy":
        result = benchmark(gather_reference, ring, ends, offsets)
    elif impl in ("cpp_ext", "cpp_ext/1t"):
        result = benchmark(cpp_ext.gather_clips, ring, FIRST, RING, ends, CLIP)
    elif impl.startswith("cpp_ext+out"):
        result = benchmark(cpp_ext.gather_clips, ring, FIRST, RING, ends, CLIP, out=out)
    else:
        src = np.ones(nbytes // 2, np.uint8)
        dst = np.empty_like(src)
        benchmark(np.copyto, dst, src)
        record(benchmark, "gather", batch, impl, nbytes)
        return
    np.testing.assert_array_equal(result, gather_reference(ring, ends, offsets))
    record(benchmark, "gather", batch, impl, nbytes)
