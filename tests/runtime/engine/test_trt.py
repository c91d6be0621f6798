"""ks_runtime/engine/trt.py: engine names, choosing a bundle's engines, and the device path's control flow.

No GPU or TensorRT here, so the device path runs on stand-ins that are not a GPU run and do not pretend to be:
"device memory" is one host byte arena addressed by integer pointers, the kernels are cpp_ext.cuda's host
emulations of the CUDA kernels' per-thread code (the CPU ops where libks_cuda.so is not built), and the
"engines" are the bundle's ONNX graphs in onnxruntime reading and writing their arena buffers. What this
checks is everything around TensorRT: buffer sizes, binding names and dtypes from the manifest, pointer
offsets, chunking at the profiles' max batch, ring rows t % R, clip windows, key slots, and freeing. The real
engine on a GPU is the last test, skipped here with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import cpp_ext.cuda as kcuda
from ks_runtime.core import kernels
from ks_runtime.core.bundle import MANIFEST, graph_specs, read_manifest
from ks_runtime.core.bundle_files import ENGINE_RECORD
from ks_runtime.engine import create_engine, gpu_probe
from ks_runtime.engine import trt as T
from ks_runtime.engine.base import EngineError
from ks_runtime.engine.ort_graphs import BundleGraphs, open_session
from tests.gpu_skip import needs
from tests.runtime.conftest import synth_frames

EMULATED = kcuda.library_path() is not None  # the kernels' own per-thread code on the host, else the CPU ops


# --- stand-ins --------------------------------------------------------------------------------------------------


class Arena:
    """Host bytes addressed like device memory: malloc returns integer pointers (256-byte aligned, never 0)."""

    BASE = 1 << 20

    def __init__(self, nbytes: int = 64 << 20) -> None:
        self.mem = np.zeros(nbytes, np.uint8)
        self.top = 0
        self.live: dict[int, int] = {}

    def malloc(self, nbytes: int) -> int:
        ptr = self.BASE + self.top
        self.top += -(-max(nbytes, 1) // 256) * 256
        assert self.top <= len(self.mem), "arena full"
        self.live[ptr] = nbytes
        return ptr

    def free(self, ptr: int) -> None:
        assert ptr in self.live, f"free of {ptr:#x}: not allocated or freed twice"
        del self.live[ptr]

    def view(self, ptr: int, shape, dtype) -> np.ndarray:
        """The bytes at `ptr` as an array; the access must stay inside one live allocation."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        base = max((p for p in self.live if p <= ptr), default=None)
        assert base is not None and ptr + nbytes <= base + self.live[base], (
            f"access of {nbytes} bytes at {ptr:#x} overruns its allocation"
        )
        offset = ptr - self.BASE
        return self.mem[offset : offset + nbytes].view(dtype).reshape(shape)


class HostOps:
    """CudaOps' interface over an Arena, with the kernels emulated on the host."""

    stream = 0

    def __init__(self, arena: Arena) -> None:
        self.arena, self.syncs, self.copies = arena, 0, {"htod": 0, "dtoh": 0, "dtod": 0}

    def malloc(self, nbytes: int) -> int:
        return self.arena.malloc(nbytes)

    def free(self, ptr: int) -> None:
        self.arena.free(ptr)

    def host_array(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def htod(self, dst: int, host: np.ndarray) -> None:
        self.copies["htod"] += 1
        self.arena.view(dst, host.shape, host.dtype)[...] = host

    def dtoh(self, host: np.ndarray, src: int) -> None:
        self.copies["dtoh"] += 1
        host[...] = self.arena.view(src, host.shape, host.dtype)

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self.copies["dtod"] += 1
        self.arena.view(dst, (nbytes,), np.uint8)[...] = self.arena.view(src, (nbytes,), np.uint8).copy()

    def synchronize(self) -> None:
        self.syncs += 1

    def pack_frames(self, src, shape, dst, dtype, mean, std, swap_rb) -> None:
        frames = np.ascontiguousarray(self.arena.view(src, shape, np.uint8))
        pack = kcuda.emulate_pack_frames if EMULATED else kernels.pack_frames
        out = pack(frames, mean, std, swap_rb=swap_rb, out_dtype=dtype)
        self.arena.view(dst, out.shape, dtype)[...] = out

    def gather_clips(self, ring, ring_shape, dtype, first, count, ends, n, dst, stride=1) -> None:
        rows = np.ascontiguousarray(self.arena.view(ring, ring_shape, dtype))
        gather = kcuda.emulate_gather_clips if EMULATED else kernels.gather_clips
        out = gather(rows, first, count, ends, n, stream_start=0, stride=stride)
        self.arena.view(dst, out.shape, dtype)[...] = out


class OnnxGraph:
    """TrtGraph's interface: device buffers sized for `max_batch`, run() by onnxruntime on the arena's bytes."""

    def __init__(self, manifest, role: str, host: HostOps, max_batch: int, dtypes: dict | None = None) -> None:
        spec, dtypes = manifest.graphs[role], dtypes or {}
        self.session, self.host, self.max_batch, self.batches = open_session(manifest.path(role)), host, max_batch, []

        def tensor(t):
            dtype = np.dtype(dtypes.get(t.name, t.dtype))
            dims = tuple(t.shape[1:])
            return T.DeviceTensor(
                t.name, host.malloc(max_batch * int(np.prod(dims, dtype=np.int64)) * dtype.itemsize), dims, dtype
            )

        self.inputs = {t.name: tensor(t) for t in spec.inputs}
        self.outputs = {t.name: tensor(t) for t in spec.outputs}
        self.onnx_dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs}

    def run(self, batch: int) -> None:
        assert 1 <= batch <= self.max_batch
        self.batches.append(batch)
        arena = self.host.arena
        feeds = {
            t.name: arena.view(t.ptr, (batch, *t.dims), t.dtype).astype(self.onnx_dtypes[t.name])
            for t in self.inputs.values()
        }
        for t, value in zip(self.outputs.values(), self.session.run(None, feeds), strict=True):
            arena.view(t.ptr, (batch, *t.dims), t.dtype)[...] = value

    def close(self) -> None:
        for t in (*self.inputs.values(), *self.outputs.values()):
            self.host.free(t.ptr)


@pytest.fixture
def device(bundle):
    """A TrtEngine over the stand-ins: encoder batches of at most 4 frames, head batches of at most 7 clips."""
    manifest = read_manifest(bundle)
    arena = Arena()
    host = HostOps(arena)
    engine = T.TrtEngine.from_parts(
        manifest, "cuda:0", host, OnnxGraph(manifest, "encoder", host, 4), OnnxGraph(manifest, "head", host, 7)
    )
    yield engine, host, arena
    if engine.ops is not None:
        engine.close()


# --- names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, slug",
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("Orin (nvgpu)", "orin-nvgpu"),
        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
    ],
)
def test_engine_names_carry_gpu_and_tensorrt_release(name, slug):
    file = T.engine_file_name("encoder", name, "10.8.0.43", "fp16")
    assert file == f"encoder.{slug}.trt10.8.0.fp16.plan"
    assert T.parse_engine_name(f"trt/{file}") == T.EngineName("encoder", slug, "10.8.0", "fp16")
    assert T.timing_cache_name(name, "8.6") == f"timing.{slug}.trt8.6.0.cache"


@pytest.mark.parametrize(
    "bad",
    [
        "encoder.onnx",
        "encoder.gpu.trt10.fp16.plan",
        "decoder.x.trt10.0.0.fp16.plan",
        "encoder.x.trt10.0.0.bf16.plan",
        "encoder.X.trt10.0.0.fp16.plan",
    ],
)
def test_other_file_names_are_not_engines(bad):
    assert T.parse_engine_name(bad) is None


def test_names_refuse_nonsense():
    with pytest.raises(ValueError, match="precision"):
        T.engine_file_name("encoder", "GPU", "10.0.0", "int4")
    with pytest.raises(ValueError, match="no letters"):
        T.gpu_slug("  ()  ")
    with pytest.raises(ValueError, match="TensorRT version"):
        T.trt_version_tag("ten")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        T.BatchProfile(1, 64, 32)


# --- choosing the engines of a bundle ------------------------------------------------------------------------------


def _with_engines(bundle, tmp_path, listed=(), built=(), unrecorded=()):
    """A copy of the bundle with stand-in plan files: `listed` in the manifest's tensorrt.engines and hashed in its
    files (as an export builds them), `built` recorded in trt/engines.sha256 (as the recipe builds them on the
    device), `unrecorded` in neither."""
    import hashlib
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    (copy / "trt").mkdir(exist_ok=True)
    for name in (*listed, *built, *unrecorded):
        (copy / "trt" / name).write_bytes(f"plan {name}".encode())
    digest = {name: hashlib.sha256(f"plan {name}".encode()).hexdigest() for name in (*listed, *built)}
    data = json.loads((copy / MANIFEST).read_text())
    data["tensorrt"] = {"engines": [{"file": f"trt/{f}"} for f in listed]}
    data["files"].update({f"trt/{f}": digest[f] for f in listed})
    (copy / MANIFEST).write_text(json.dumps(data))
    (copy / ENGINE_RECORD).write_text("".join(f"{digest[f]}  trt/{f}\n" for f in built))
    return read_manifest(copy, verify_hashes=not unrecorded)


def test_engines_are_chosen_by_gpu_release_and_precision(bundle, tmp_path):
    h100, orin = "NVIDIA H100 80GB HBM3", "Orin"
    listed = [T.engine_file_name(r, h100, "10.8.0", p) for r, p in (("encoder", "fp16"), ("head", "fp16"))]
    built = [
        T.engine_file_name(r, orin, "10.3.0", p)
        for r, p in (("encoder", "fp16"), ("encoder", "int8"), ("head", "fp16"))
    ]
    manifest = _with_engines(bundle, tmp_path, listed, built + ["notes.plan"])
    found = {e.name.file: e.listed for e in T.find_engines(manifest)}
    assert found == {**dict.fromkeys(listed, True), **dict.fromkeys(built, False)}
    chosen = T.select_engines(manifest, orin, "10.3.0.26", "int8")
    assert chosen == {"encoder": manifest.root / "trt" / built[1], "head": manifest.root / "trt" / built[2]}
    assert T.select_engines(manifest, h100, "10.8.0", "fp16")["encoder"].name == listed[0]
    # What TensorRT deserialises is the bytes whose sha256 was checked: the manifest's, or the recipe's record's.
    assert T.engine_bytes(manifest, chosen["encoder"]) == f"plan {built[1]}".encode()
    assert T.engine_bytes(manifest, manifest.root / "trt" / listed[0]) == f"plan {listed[0]}".encode()


def test_an_engine_changed_after_it_was_recorded_or_never_recorded_is_refused(bundle, tmp_path):
    from ks_runtime.core.errors import BundleError

    built = [T.engine_file_name(r, "Orin", "10.3.0", "fp16") for r in ("encoder", "head")]
    manifest = _with_engines(bundle, tmp_path, built=built[:1], unrecorded=built[1:])
    with pytest.raises(BundleError, match=r"head\.orin\.trt10\.3\.0\.fp16\.plan: in the bundle but not hashed"):
        read_manifest(manifest.root)  # what `ks-export verify` and every engine's read say
    with pytest.raises(BundleError, match=r"head\.orin.*: an engine neither hashed in field 'files' .* nor recorded"):
        T.engine_bytes(manifest, manifest.root / "trt" / built[1])
    (manifest.root / "trt" / built[0]).write_bytes(b"another plan")
    with pytest.raises(BundleError, match=r"encoder\.orin.*: sha256 .* does not match trt/engines\.sha256"):
        T.engine_bytes(manifest, manifest.root / "trt" / built[0])


def test_no_engine_for_this_gpu_lists_what_there_is_and_how_to_build(bundle, tmp_path):
    have = T.engine_file_name("encoder", "NVIDIA A100-SXM4-40GB", "10.8.0", "fp16")
    manifest = _with_engines(bundle, tmp_path, built=[have])
    with pytest.raises(EngineError) as error:
        T.select_engines(manifest, "NVIDIA L4", "10.8.0", "int8")
    message = str(error.value)
    assert "encoder.nvidia-l4.trt10.8.0.int8.plan" in message and "head.nvidia-l4.trt10.8.0.fp16.plan" in message
    assert have in message and "build_engines.sh --int8" in message
    with pytest.raises(EngineError, match="precision 'tf32'"):
        T.select_engines(manifest, "NVIDIA L4", "10.8.0", "tf32")


def test_a_badly_named_listed_engine_is_a_bundle_error(bundle, tmp_path):
    from ks_runtime.core.errors import BundleError

    manifest = _with_engines(bundle, tmp_path, listed=["encoder.plan"])
    with pytest.raises(BundleError, match="tensorrt.engines"):
        T.find_engines(manifest)


# --- bindings ------------------------------------------------------------------------------------------------------


def _tensors(spec, **dtypes):
    return {
        t.name: T.DeviceTensor(t.name, 256, tuple(t.shape[1:]), np.dtype(dtypes.get(t.name, t.dtype))) for t in spec
    }


def test_bindings_are_checked_against_the_manifest(tmp_path):
    spec = graph_specs(3, 12, 32)["head"]
    path = tmp_path / "head.plan"
    T.check_bindings(path, spec, _tensors(spec.inputs, key_slot="int32"), _tensors(spec.outputs), True)
    with pytest.raises(EngineError, match="fixed batch"):
        T.check_bindings(path, spec, _tensors(spec.inputs), _tensors(spec.outputs), False)
    renamed = {("logits" if k == "sa_logits" else k): v for k, v in _tensors(spec.inputs).items()}
    with pytest.raises(EngineError, match="engine inputs"):
        T.check_bindings(path, spec, renamed, _tensors(spec.outputs), True)
    wrong = _tensors(spec.inputs)
    wrong["student_logits"] = T.DeviceTensor("student_logits", 256, (3, 12), np.dtype(np.float32))
    with pytest.raises(EngineError, match=r"'student_logits' has per-item shape \[3, 12\]"):
        T.check_bindings(path, spec, wrong, _tensors(spec.outputs), True)
    with pytest.raises(EngineError, match="key_slot' is float32"):
        T.check_bindings(path, spec, _tensors(spec.inputs, key_slot="float32"), _tensors(spec.outputs), True)


def test_encoder_and_head_must_agree_on_the_ring_dtype(bundle):
    manifest = read_manifest(bundle)
    host = HostOps(Arena())
    encoder = OnnxGraph(manifest, "encoder", host, 4, {"sa_logits": "float16"})
    with pytest.raises(EngineError, match="writes sa_logits as float16 but the head reads float32"):
        T.TrtEngine.from_parts(manifest, "cuda:0", host, encoder, OnnxGraph(manifest, "head", host, 4))


# --- the device path on the stand-ins ------------------------------------------------------------------------------


def test_buffers_are_sized_for_the_profiles_and_all_freed(device):
    engine, host, arena = device
    m = engine.manifest
    n, u, s = m.clip_len, m.n_aus, m.preprocess.size
    sizes = sorted(arena.live.values())
    # encoder: frames, sa, students at max batch 4; head: sa, students, key_slot, probs at max batch 7; crops
    want = sorted(
        [4 * 3 * s * s * 4, 4 * u * 4, 4 * n * u * 4, 7 * n * u * 4, 7 * n * n * u * 4, 7 * 8, 7 * u * 4, 4 * s * s * 3]
    )
    assert sizes == want
    ring = engine.open_ring(10)
    assert arena.live[ring.sa] == 10 * u * 4 and arena.live[ring.students] == 10 * n * u * 4
    engine.close()
    engine.ops = None
    assert arena.live == {}, "device buffers left allocated after close()"


def test_host_array_calls_equal_onnxruntime(device, bundle):
    engine, host, _ = device
    graphs = BundleGraphs(bundle, roles=("encoder", "head"))
    frames = np.random.default_rng(0).standard_normal((9, 3, 32, 32)).astype(np.float32)
    for got, want in zip(engine.encode(frames), graphs.encode(frames), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert engine.encoder.batches == [4, 4, 1]
    sa, students = graphs.encode(frames)
    n = engine.clip_len
    clips_sa, clips_st = np.stack([sa[i : i + n] for i in range(6)]), np.stack([students[i : i + n] for i in range(6)])
    slots = np.arange(6) % n
    np.testing.assert_allclose(
        engine.head(clips_sa, clips_st, slots), graphs.head(clips_sa, clips_st, slots), atol=1e-6
    )


@pytest.mark.parametrize("policy", ["last", "shift", "ensemble"])
def test_device_dense_probabilities_equal_onnxruntime(device, bundle, policy):
    engine, host, arena = device
    frames, _ = synth_frames(13)
    want = BundleGraphs(bundle, roles=("encoder", "head")).dense_probabilities(frames, policy)
    live = dict(arena.live)
    got = engine.dense_probabilities(frames, policy)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert engine.encoder.batches == [4, 4, 4, 1]  # 13 frames in batches of at most 4
    k = engine.clip_len if policy == "ensemble" else 1
    assert sum(engine.graph_head.batches) == 13 * k and max(engine.graph_head.batches) <= 7
    assert host.copies["dtoh"] == len(engine.graph_head.batches)  # only the probabilities come back
    assert host.copies["dtod"] == 2 * 4  # one copy per output per encoder batch: consecutive rows merge
    assert arena.live == live  # the video's ring was freed


def test_streaming_through_a_wrapping_ring_equals_dense(device, bundle):
    """How stream.py would drive the device path: a ring of R rows (frame t at row t % R), frames arriving in
    batches of 3, each frame scored (policy `last`) once its clip is encoded, clips cut from the live window."""
    engine, _, _ = device
    frames, _ = synth_frames(17)
    n, rows = engine.clip_len, 5
    ring, probs, encoded = engine.open_ring(rows), [], 0
    while encoded < len(frames):
        batch = range(encoded, min(encoded + 3, len(frames)))
        engine.encode_crops(frames[batch.start : batch.stop], [(ring, t % rows) for t in batch])
        first = max(0, batch.stop - rows)
        ready = np.arange(batch.start, batch.stop)  # under `last`, frame t's clip ends at t: final at once
        probs.append(engine.head_clips([(ring, first, batch.stop - first, ready)], np.full(len(ready), n - 1)))
        encoded = batch.stop
    got = np.concatenate(probs)
    want = BundleGraphs(bundle, roles=("encoder", "head")).dense_probabilities(frames, "last")
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_frames_and_clips_of_two_streams_share_batches(device, bundle):
    """Encoder batches mixing two streams' frames (alternating rings), then one head batch of both streams'
    clips: each clip group lands at its own offset in the head's inputs."""
    engine, host, _ = device
    a, _ = synth_frames(6, subject=0)
    b, _ = synth_frames(5, subject=1)
    ring_a, ring_b = engine.open_ring(len(a)), engine.open_ring(len(b))
    order = [("a", t) for t in range(len(a))]
    order[1:1] = [("b", t) for t in range(len(b))]  # a0, b0..b4, a1..a5
    crops = np.stack([(a if key == "a" else b)[t] for key, t in order])
    engine.encode_crops(crops, [(ring_a if key == "a" else ring_b, t) for key, t in order])
    n = engine.clip_len
    probs = engine.head_clips(
        [(ring_a, 0, len(a), np.arange(len(a))), (ring_b, 0, len(b), np.arange(len(b)))],
        np.full(len(a) + len(b), n - 1),
    )
    graphs = BundleGraphs(bundle, roles=("encoder", "head"))
    np.testing.assert_allclose(probs[: len(a)], graphs.dense_probabilities(a, "last"), atol=1e-5)
    np.testing.assert_allclose(probs[len(a) :], graphs.dense_probabilities(b, "last"), atol=1e-5)
    assert engine.graph_head.batches == [7, 4]  # 11 clips, at most 7 per head batch, groups split across them


@pytest.mark.parametrize("policy", ["last", "shift", "center", "ensemble"])
def test_stream_engine_keeps_the_rings_on_the_device(device, bundle, policy):
    """StreamScheduler over the device path: two interleaved streams (one with a face gap, so three streams),
    small batches so the rings wrap; every result equals dense testing, nothing but the probabilities comes
    back to the host, and every ring is freed when its stream is done."""
    from ks_runtime.core.results import NO_FACE
    from ks_runtime.faces.base import AlignedFaces
    from ks_runtime.io.sources import SourceFrame
    from ks_runtime.stream import StreamConfig, StreamScheduler

    engine, host, arena = device
    manifest = engine.manifest
    a, _ = synth_frames(19, subject=0)
    b, _ = synth_frames(11, subject=1)
    streamer = StreamScheduler(engine, manifest.preprocess, StreamConfig(policy, batch_size=3))
    assert streamer.device_rings
    stage, live, results = AlignedFaces(manifest.preprocess), dict(arena.live), []
    gap = 8  # frame 8 of `a` has no face: it ends a's first stream
    for i in range(len(a)):
        streamer.push("a", SourceFrame(a[i], i / 25, i), NO_FACE if i == gap else stage(a[i], i))
        if i < len(b):
            streamer.push("b", SourceFrame(b[i], i / 25, i), stage(b[i], i))
        results += streamer.step()
    results += streamer.close()
    graphs = BundleGraphs(bundle, roles=("encoder", "head"))
    by_source = {key: sorted((r for r in results if r.source == key), key=lambda r: r.index) for key in "ab"}
    assert [r.index for r in by_source["a"]] == list(range(len(a)))
    assert not by_source["a"][gap].success
    for key, frames, parts in (("a", a, [(0, gap), (gap + 1, len(a))]), ("b", b, [(0, len(b))])):
        for lo, hi in parts:
            got = np.stack([r.probs for r in by_source[key][lo:hi]])
            np.testing.assert_allclose(got, graphs.dense_probabilities(frames[lo:hi], policy), atol=1e-5)
    assert host.copies["dtoh"] == len(engine.graph_head.batches)  # only the probabilities come back
    assert arena.live == live, "a stream's device ring was not freed"


@pytest.mark.parametrize("policy", ["last", "shift", "ensemble"])
def test_a_strided_bundle_gathers_strided_clips_on_the_device(strided_bundle, policy):
    """A model with clip_stride 2: the gather kernel cuts slots 2 frames apart, densely and while streaming
    through wrapping device rings, equal to onnxruntime's dense run (which test_export ties to PyTorch)."""
    from ks_runtime.faces.base import AlignedFaces
    from ks_runtime.io.sources import SourceFrame
    from ks_runtime.stream import StreamConfig, StreamScheduler

    manifest = read_manifest(strided_bundle)
    host = HostOps(Arena())
    engine = T.TrtEngine.from_parts(
        manifest, "cuda:0", host, OnnxGraph(manifest, "encoder", host, 4), OnnxGraph(manifest, "head", host, 7)
    )
    assert engine.clip_stride == 2
    frames, _ = synth_frames(21)
    want = BundleGraphs(strided_bundle, roles=("encoder", "head")).dense_probabilities(frames, policy)
    np.testing.assert_allclose(engine.dense_probabilities(frames, policy), want, atol=1e-5)
    streamer = StreamScheduler(engine, manifest.preprocess, StreamConfig(policy, batch_size=3))
    assert streamer.device_rings and streamer.ring_rows < len(frames)
    stage, results = AlignedFaces(manifest.preprocess), []
    for i, frame in enumerate(frames):
        streamer.push("a", SourceFrame(frame, i / 25, i), stage(frame, i))
        results += streamer.step()
    results += streamer.close()
    np.testing.assert_allclose(np.stack([r.probs for r in results]), want, atol=1e-5)
    engine.close()


def test_device_path_refuses_bad_arguments(device):
    engine, _, _ = device
    s = engine.manifest.preprocess.size
    ring = engine.open_ring(4)
    with pytest.raises(ValueError, match="uint8"):
        engine.encode_crops(np.zeros((2, s, s, 3), np.float32), [(ring, 0), (ring, 1)])
    with pytest.raises(ValueError, match="2 crops but 1 ring targets"):
        engine.encode_crops(np.zeros((2, s, s, 3), np.uint8), [(ring, 0)])
    with pytest.raises(IndexError, match="ring row 4"):
        engine.encode_crops(np.zeros((1, s, s, 3), np.uint8), [(ring, 4)])
    with pytest.raises(ValueError, match="2 clips but 1 key slots"):
        engine.head_clips([(ring, 0, 4, np.array([1, 2]))], np.array([0]))
    with pytest.raises(IndexError):  # frame 0 left the ring window 4..7: the gather kernel refuses
        engine.head_clips([(ring, 4, 4, np.array([4]))], np.array([0]))


# --- the real thing ------------------------------------------------------------------------------------------------


def test_trt_engine_without_tensorrt_says_why(bundle):
    reason = gpu_probe.missing("tensorrt", "cuda-python")
    if reason is None:
        pytest.skip("tensorrt and cuda-python are installed here")
    with pytest.raises(EngineError, match="engine 'trt' .*not available in this build: " + reason.split(" (")[0]):
        create_engine(bundle, "trt", "cuda:0")


@needs("tensorrt", "cuda-python", "cuda-device", "cuda-kernels")
def test_trt_engine_on_a_gpu_equals_onnxruntime(bundle, tmp_path):
    """Build FP16 engines for this GPU, then stream a video through the device path: written, not yet run."""
    import shutil

    from ks_export.fp16 import convert_file
    from ks_export.tensorrt import FP16_FILES, build_engines

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    for role in ("encoder", "head"):  # TensorRT 11 takes FP16 only from an FP16 graph
        convert_file(copy / f"{role}.onnx", copy / FP16_FILES[role])
    manifest = read_manifest(copy)
    built = build_engines(copy, manifest.graphs, ("fp16",))
    assert built.skipped is None and {e["graph"] for e in built.engines} == {"encoder", "head"}
    engine = T.TrtEngine(copy, device="cuda:0")
    try:
        frames, _ = synth_frames(40)
        want = BundleGraphs(copy, roles=("encoder", "head")).dense_probabilities(frames, "shift")
        np.testing.assert_allclose(engine.dense_probabilities(frames, "shift"), want, atol=1e-2)
    finally:
        engine.close()
