"""The Triton engine (`--engine triton --url HOST:PORT`): clips scored by a Triton Inference Server over gRPC, through
tritonclient (`tritonclient[grpc]`, in the export extra).

The model repository `ks-export --triton` writes (triton/ks_clip) serves the fused clip graph: clips [B, n, 3, S, S]
and key slots -> the key frames' probabilities; it has no encoder or head. So this engine takes the scheduler's ring
interface (as engine `trt` does with its device rings): each stream's frames, preprocessed, wait in a host ring, its
clips are cut from it by the same gather kernel and sent whole. Every clip carries its n frames over the network
(policy `ensemble`: n clips a frame), in requests of at most the model's max_batch_size clips and MAX_REQUEST_BYTES.

The URL names the server, `HOST:PORT` or `grpc://HOST:PORT`, and may name the model, `grpc://HOST:PORT/MODEL`
(default: the manifest's serving.triton.model, else ks_clip). At connect the engine refuses, naming the URL and the
model: a server it cannot reach, a model that is not ready (with the server's reason), inputs or outputs other than
the manifest's clip graph, and a model that is not this bundle's. The repository records no hash a server reports,
so that last check runs the bundle's check clip (consistency.check_inputs, at the first, middle and last key slot)
through the server and through clip.onnx in onnxruntime on this CPU, and refuses a difference past MATCH_ATOL.

Tested against a real Triton server (2.51, the one inside nvidia-pytriton 0.7) serving clip.onnx through a Python
model with the exported model's name, inputs and outputs (pytriton's server ships no onnxruntime backend, so it cannot
load the exported triton/ks_clip itself: it reports it UNAVAILABLE, and that refusal is tested too);
tests/runtime/engine/test_triton_client.py, docs/serving.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ks_runtime.core import kernels
from ks_runtime.core.bundle import BATCH, CLIPS, KEY_SLOT, MANIFEST, PROBS, Manifest, read_manifest
from ks_runtime.core.errors import ConfigError
from ks_runtime.engine.base import Engine, EngineError

try:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype
except RuntimeError as error:  # tritonclient without grpcio raises RuntimeError, not an ImportError
    raise ModuleNotFoundError(f"tritonclient.grpc: {error}", name="tritonclient.grpc") from error

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ks_clip"  # the model name ks-export's repository serves (ks_export/triton.py, MODEL_NAME)
MATCH_ATOL = 1e-4  # on probabilities, as consistency.CONSISTENCY_ATOL: the same FP32 graph on another runtime
CONNECT_TIMEOUT_S = 10.0  # each health and metadata call at connect
INFER_TIMEOUT_S = 60.0  # one request of clips
MAX_REQUEST_BYTES = 64 << 20  # clips a request: well under gRPC's message limits, and no request takes minutes


def parse_url(url: str) -> tuple[str, str | None]:
    """'HOST:PORT', 'grpc://HOST:PORT' or 'grpc://HOST:PORT/MODEL' -> ('HOST:PORT', MODEL or None)."""
    text = url.strip()
    if text.lower().partition(":")[0] in ("", "cpu", "cuda", "gpu"):  # the default --device, not an address
        raise ConfigError(
            f"engine 'triton' runs on a Triton server: give its gRPC address with --url HOST:PORT (in Python, "
            f"device='HOST:PORT'), not device {url!r}"
        )
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    usage = "give the Triton server's gRPC address, HOST:PORT or grpc://HOST:PORT[/MODEL] (Triton's default port 8001)"
    if parts.scheme != "grpc":
        raise ConfigError(f"--url {url!r}: engine 'triton' speaks gRPC, not {parts.scheme}://; {usage}")
    try:
        port = parts.port
    except ValueError:
        port = None
    model = parts.path.strip("/")
    if not parts.hostname or port is None or parts.query or parts.fragment or "/" in model:
        raise ConfigError(f"--url {url!r}: {usage}")
    return parts.netloc, model or None


def expected_io(manifest: Manifest) -> dict[str, tuple[str, list[int]]]:
    """The clip graph's tensors as Triton reports them: name -> (datatype, shape with -1 for the batch)."""
    clip = manifest.graphs["clip"]
    return {
        t.name: (np_to_triton_dtype(np.dtype(t.dtype)), [-1 if d == BATCH else int(d) for d in t.shape])
        for t in (*clip.inputs, *clip.outputs)
    }


def check_metadata(metadata: dict, manifest: Manifest, where: str) -> list[int]:
    """The served model's inputs and outputs against the manifest's clip graph; returns the key_slot shape to send
    per clip: [] or [1] (the exported config's dims [1], reshaped to [] for the graph). EngineError otherwise."""
    want = expected_io(manifest)
    served = {
        t.get("name"): (t.get("datatype"), [int(d) for d in t.get("shape", [])])
        for t in [*metadata.get("inputs", []), *metadata.get("outputs", [])]
    }
    inputs = {t.get("name") for t in metadata.get("inputs", [])}
    problems = [f"input {name!r} is not the clip graph's" for name in sorted(inputs - set(want), key=str)]
    for name, (dtype, shape) in want.items():
        if name not in served:
            problems.append(f"no tensor {name!r} ({dtype} {shape})")
        elif served[name][0] != dtype or served[name][1] not in ([shape, shape + [1]] if name == KEY_SLOT else [shape]):
            problems.append(f"{name} is {served[name][0]} {served[name][1]}, not {dtype} {shape}")
    if problems:
        raise EngineError(
            f"{where}: its inputs and outputs are not the bundle's clip graph (field 'graphs.clip' of "
            f"{manifest.root / MANIFEST}): {'; '.join(problems)}"
        )
    return served[KEY_SLOT][1][1:]


def _reason(error: Exception) -> str:
    text = error.message() if isinstance(error, InferenceServerException) else str(error)
    return " ".join(str(text or type(error).__name__).split())[:400]


@dataclass
class FrameRing:
    """One stream's preprocessed frames [R, 3, S, S] float32, frame t at row t % R, as stream.py's rings."""

    frames: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class ServerCheck:
    """The served model against clip.onnx at connect: the largest |difference| of probabilities, and on what."""

    max_abs: float
    inputs: str
    key_slots: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return self.max_abs <= MATCH_ATOL


class TritonEngine(Engine):
    """The bundle's clip graph on a Triton server, checked at connect (see the module's docstring).

    `url`: 'HOST:PORT', 'grpc://HOST:PORT' or 'grpc://HOST:PORT/MODEL'; `threads`: onnxruntime's threads for the
    connect-time check; `client`: a ready tritonclient.grpc.InferenceServerClient (tests), else one is opened."""

    name = "triton"

    def __init__(
        self,
        bundle: Manifest | Path | str,
        url: str,
        threads: int = 0,
        precision: str = "auto",
        insist_int8: bool = False,
        client: object | None = None,
    ) -> None:
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        if precision == "int8" or insist_int8:
            raise ConfigError(
                "engine 'triton' runs the model the server serves (the FP32 clip graph): precision 'int8' is the "
                "bundle's INT8 encoder on this CPU (--engine ort or openvino)"
            )
        target, model = parse_url(url)
        serving = self.manifest.raw.get("serving", {}).get("triton", {})
        self.model = model or (serving.get("model") if isinstance(serving, dict) else None) or DEFAULT_MODEL
        self.url = self.device = url.strip()
        self.where = f"model {self.model!r} on the Triton server at {self.url}"
        self.client = client if client is not None else grpcclient.InferenceServerClient(target)
        try:
            self._connect()
            self.check = self._check_model(threads)
        except BaseException:
            self.close()
            raise
        log.info("%s: the bundle's clip graph to within %.1e on %s", self.where, self.check.max_abs, self.check.inputs)

    def _call(self, what: str, call: Callable, *args, **kwargs):
        """A tritonclient call; its failure as an EngineError naming the URL, the model and what was asked."""
        try:
            return call(*args, **kwargs)
        except InferenceServerException as error:
            raise EngineError(f"{self.where}: {what} failed: {_reason(error)}") from None

    def _connect(self) -> None:
        """The server is live, the model ready, its tensors the clip graph's, and it takes batches."""
        timeout = {"client_timeout": CONNECT_TIMEOUT_S}
        try:
            live = self.client.is_server_live(**timeout)
        except InferenceServerException as error:
            raise EngineError(f"the Triton server at {self.url} is unreachable: {_reason(error)}") from None
        if not live:
            raise EngineError(f"the Triton server at {self.url} answers but is not live")
        if not self._call("the readiness check", self.client.is_model_ready, self.model, **timeout):
            raise EngineError(f"{self.where} is not ready: {self._model_state()}")
        metadata = self._call(
            "reading its metadata", self.client.get_model_metadata, self.model, as_json=True, **timeout
        )
        config = self._call("reading its config", self.client.get_model_config, self.model, as_json=True, **timeout)
        self.key_shape = check_metadata(metadata, self.manifest, self.where)
        self.versions, self.platform = metadata.get("versions", []), metadata.get("platform", "?")
        self.max_batch = int(config.get("config", {}).get("max_batch_size", 0))
        if self.max_batch < 1:
            raise EngineError(
                f"{self.where}: its config has max_batch_size {self.max_batch}, but the engine sends batches of clips "
                f"(the config.pbtxt ks-export writes has max_batch_size 64)"
            )
        s = self.manifest.preprocess.size
        clip_bytes = self.clip_len * 3 * s * s * 4
        self.max_clips = max(1, min(self.max_batch, MAX_REQUEST_BYTES // clip_bytes))

    def _model_state(self) -> str:
        """What the server's repository index says of the model: its state and reason, or which models it has."""
        try:
            index = self.client.get_model_repository_index(as_json=True, client_timeout=CONNECT_TIMEOUT_S)
        except InferenceServerException as error:
            return f"the server does not say why ({_reason(error)})"
        models = index.get("models", [])
        mine = [m for m in models if m.get("name") == self.model]
        if not mine:
            names = ", ".join(sorted({str(m.get("name")) for m in models})) or "none"
            return f"the server's repository has no model of that name (it has: {names})"
        return "; ".join(
            f"version {m.get('version', '?')} is {m.get('state', 'not loaded')}"
            + (f": {' '.join(str(m['reason']).split())}" if m.get("reason") else "")
            for m in mine
        )

    def _check_model(self, threads: int) -> ServerCheck:
        """The bundle's check clip through the server and through clip.onnx here; EngineError past MATCH_ATOL."""
        try:
            # deferred: onnxruntime (the cpu or gpu extra): only the connect-time check runs a graph here
            from ks_runtime.core.preprocess import to_network_input
            from ks_runtime.engine.consistency import CPU, check_inputs, key_slots
            from ks_runtime.engine.ort_graphs import BundleGraphs
        except ModuleNotFoundError as error:
            if error.name != "onnxruntime":
                raise
            raise EngineError(
                f"engine 'triton' checks {self.where} against the bundle's clip.onnx in onnxruntime when it "
                f"connects: install onnxruntime (pip install .[cpu])"
            ) from None
        frames, inputs = check_inputs(self.manifest)
        clip = to_network_input(frames, self.manifest.preprocess)  # (n, 3, S, S)
        slots = np.array(key_slots(self.clip_len), np.int64)
        clips = np.ascontiguousarray(np.broadcast_to(clip, (len(slots), *clip.shape)))
        served = self.clip(clips, slots).astype(np.float64)
        local = BundleGraphs(self.manifest, ("clip",), CPU, threads).clip(clips, slots).astype(np.float64)
        diff = np.abs(served - local)
        check = ServerCheck(float(diff.max()) if np.isfinite(diff).all() else math.inf, inputs, tuple(slots.tolist()))
        if not check.passed:
            raise EngineError(
                f"{self.where} is not this bundle's clip graph: on {check.inputs}, key slots {list(check.key_slots)}, "
                f"its probabilities differ from {self.manifest.path('clip')}'s by up to {check.max_abs:.1e} "
                f"(tolerance {MATCH_ATOL:.0e}); serve the bundle's own triton/ repository (ks-export --triton)"
            )
        return check

    # --- inference ---------------------------------------------------------------------------------------------
    def clip(self, clips: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        """Preprocessed clips [C, n, 3, S, S] float32 and key slots [C] -> probabilities [C, U], through the server
        in requests of at most `max_clips` clips."""
        if len(clips) != len(key_slot):
            raise ValueError(f"{len(clips)} clips but {len(key_slot)} key slots")
        probs = np.empty((len(clips), self.n_aus), np.float32)
        for start in range(0, len(clips), self.max_clips):
            end = min(len(clips), start + self.max_clips)
            probs[start:end] = self._infer(clips[start:end], key_slot[start:end])
        return probs

    def _infer(self, clips: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        want = expected_io(self.manifest)
        keys = np.ascontiguousarray(key_slot, np.int64).reshape(len(key_slot), *self.key_shape)
        inputs = []
        for name, value in ((CLIPS, np.ascontiguousarray(clips, np.float32)), (KEY_SLOT, keys)):
            tensor = grpcclient.InferInput(name, list(value.shape), want[name][0])
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        result = self._call(
            f"inference on {len(clips)} clips",
            self.client.infer,
            self.model,
            inputs,
            outputs=[grpcclient.InferRequestedOutput(PROBS)],
            client_timeout=INFER_TIMEOUT_S,
        )
        probs = result.as_numpy(PROBS)
        if probs is None or probs.shape != (len(clips), self.n_aus):
            got = "nothing" if probs is None else list(probs.shape)
            raise EngineError(f"{self.where}: {PROBS} came back as {got}, not [{len(clips)}, {self.n_aus}]")
        return probs

    def open_ring(self, rows: int) -> FrameRing:
        """A host ring for one stream: `rows` preprocessed frames."""
        if rows < 1:
            raise ValueError(f"a ring needs at least one row, got {rows}")
        s = self.manifest.preprocess.size
        return FrameRing(np.zeros((rows, 3, s, s), np.float32))

    def close_ring(self, ring: FrameRing) -> None:
        ring.frames = ring.frames[:0]

    def encode_crops(self, crops: np.ndarray, targets: Sequence[tuple[FrameRing, int]]) -> None:
        """uint8 aligned crops [B, S, S, 3] (RGB), preprocessed into ring row `targets[i]` each; nothing is sent."""
        if len(targets) != len(crops):
            raise ValueError(f"encode_crops: {len(crops)} crops but {len(targets)} ring targets")
        p = self.manifest.preprocess
        packed = kernels.pack_frames(np.ascontiguousarray(crops), p.mean, p.std, swap_rb=p.colour == "BGR")
        for frame, (ring, row) in zip(packed, targets, strict=True):
            ring.frames[row] = frame

    def head_clips(
        self, requests: Sequence[tuple[FrameRing, int, int, np.ndarray]], key_slot: np.ndarray
    ) -> np.ndarray:
        """Clips cut from the rings -> probabilities [C, U] from the server. requests: (ring, first, count, clip
        ends) per ring, the ring holding frames first..first+count-1 of a stream numbered from 0."""
        n, stride = self.clip_len, self.clip_stride
        parts = [
            kernels.gather_clips(ring.frames, first, count, np.asarray(ends, np.int64).ravel(), n, 0, stride=stride)
            for ring, first, count, ends in requests
        ]
        s = self.manifest.preprocess.size
        clips = np.concatenate(parts) if parts else np.zeros((0, n, 3, s, s), np.float32)
        return self.clip(clips, np.asarray(key_slot))

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise self._no_graph("encoder")

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        raise self._no_graph("head")

    def _no_graph(self, role: str) -> EngineError:
        return EngineError(
            f"engine 'triton' scores whole clips on the server ({self.where} is the fused clip graph): it has no "
            f"{role} to run; stream through open_ring / encode_crops / head_clips, as StreamScheduler does"
        )

    def describe(self) -> str:
        version = ",".join(self.versions) or "?"
        return f"triton (model {self.model} version {version}, {self.platform}) at {self.url}"

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()
