"""Engine `triton` (ks_runtime/engine/triton.py): clips scored by a Triton Inference Server over gRPC.

Against a real server where one can run: the tritonserver (2.51, CPU, Python backend only) inside nvidia-pytriton.
pytriton pins numpy<2, so it lives in an interpreter of its own, named by KS_PYTRITON_PYTHON (or this one, when it
has pytriton); without one those tests skip, saying so. That server has no onnxruntime backend, so it serves the
bundle's clip.onnx (onnxruntime inside a pytriton-bound function) as a model with the exported model's name, inputs
and outputs, plus `ks_clip_off`, the same probabilities shifted by OFF: a model that is not quite the bundle's. The
exported repository itself is loaded by the bare tritonserver too, which reports ks_clip UNAVAILABLE: that refusal
is tested as the server words it.

The rest need no server: an unreachable address (real tritonclient), wrong URLs, and a fake client standing in for
the server (not ready, wrong tensors, wrong outputs, and, computing with clip.onnx here, the streaming path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="engine triton needs tritonclient[grpc] (the export extra)")

from ks_runtime.core.bundle import CLIPS, KEY_SLOT, PROBS, read_manifest  # noqa: E402
from ks_runtime.core.errors import ConfigError  # noqa: E402
from ks_runtime.detector import Detector  # noqa: E402
from ks_runtime.engine import EngineError, create_engine, triton  # noqa: E402
from ks_runtime.engine.ort_graphs import BundleGraphs  # noqa: E402
from tests.runtime.conftest import synth_frames  # noqa: E402

PYTRITON_ENV = "KS_PYTRITON_PYTHON"
NO_SERVER = (
    "no Triton server can run here: the one this suite starts is the tritonserver inside nvidia-pytriton, which "
    f"this interpreter does not have (it pins numpy<2); set {PYTRITON_ENV} to a Python with nvidia-pytriton and "
    "onnxruntime installed (docs/serving.md, Triton)"
)
START_TIMEOUT_S = 180.0
OFF = 1e-3  # ks_clip_off's shift: ten times the engine's tolerance

SERVER_SCRIPT = r'''
"""clip.onnx (onnxruntime) served by pytriton as ks_clip, with ks-export's config's tensors, and as ks_clip_off."""
import os, sys, sysconfig

# The Python backend's stub links libpython3.X.so from the loader's path; a system one of another patch release
# breaks the stub's multiprocessing, so this interpreter's own goes first (inherited by tritonserver and its stubs).
os.environ["LD_LIBRARY_PATH"] = ":".join(
    p for p in (sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH")) if p
)
import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

onnx, grpc, http, metrics, n, size, u, off, workspace = sys.argv[1:]
n, size, u, off = int(n), int(size), int(u), float(off)
session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])


def model(shift):
    @batch
    def infer(clips, key_slot):
        probs = session.run(["probs"], {"clips": clips, "key_slot": key_slot.reshape(-1)})[0]
        return {"probs": (probs + shift).astype(np.float32)}

    return infer


config = TritonConfig(grpc_port=int(grpc), http_port=int(http), metrics_port=int(metrics), allow_metrics=False)
with Triton(config=config, workspace=workspace) as server:
    for name, shift in (("ks_clip", 0.0), ("ks_clip_off", off)):
        server.bind(
            model_name=name,
            infer_func=model(shift),
            inputs=[
                Tensor(name="clips", shape=(n, 3, size, size), dtype=np.float32),
                Tensor(name="key_slot", shape=(1,), dtype=np.int64),
            ],
            outputs=[Tensor(name="probs", shape=(u,), dtype=np.float32)],
            config=ModelConfig(max_batch_size=64),
            strict=True,
        )
    print("READY", flush=True)
    server.serve()
'''


# --- servers -------------------------------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(command: list[str], log: Path, ready: str) -> subprocess.Popen:
    """Start a server in a session of its own and wait for `ready` in its log; fail with the log's tail."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{command[0]} did not start ({log}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen) -> None:
    """SIGINT (both servers stop cleanly on it), then the process group this test started."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def pytriton_python() -> str:
    named = os.environ.get(PYTRITON_ENV)
    if named:
        if not Path(named).is_file():
            pytest.fail(f"{PYTRITON_ENV}={named}: no such interpreter")
        return named
    if importlib.util.find_spec("pytriton") is not None:
        return sys.executable
    pytest.skip(NO_SERVER)


@pytest.fixture(scope="module")
def triton_bundle(checkpoint, tmp_path_factory):
    """tests/runtime/conftest.py's checkpoint exported with its Triton repository and check frames (--int8)."""
    from ks_export.export import export_bundle

    out = tmp_path_factory.mktemp("runtime_triton") / "bundle"
    export_bundle(checkpoint, out, int8=True, triton=True, evaluate=False, exporter="legacy", calib=32)
    return out


@pytest.fixture(scope="module")
def server(pytriton_python, triton_bundle, tmp_path_factory):
    """A real Triton server (pytriton's) serving the bundle's clip.onnx as ks_clip and ks_clip_off: its address."""
    work = tmp_path_factory.mktemp("pytriton")
    (work / "serve.py").write_text(SERVER_SCRIPT)
    m = read_manifest(triton_bundle)
    grpc, http, metrics = free_ports(3)
    sizes = [m.clip_len, m.preprocess.size, m.n_aus]
    args = [str(triton_bundle / "clip.onnx"), grpc, http, metrics, *sizes, OFF, work / "workspace"]
    process = start([pytriton_python, str(work / "serve.py"), *map(str, args)], work / "server.log", "READY")
    yield f"127.0.0.1:{grpc}"
    stop(process)


@pytest.fixture(scope="module")
def exported_repository_server(pytriton_python, triton_bundle, tmp_path_factory):
    """pytriton's bare tritonserver on the bundle's triton/ repository, as docs tell a user to run it."""
    where = subprocess.run(
        [pytriton_python, "-c", "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)"],
        capture_output=True,
        text=True,
        check=True,
    )
    home = Path(where.stdout.strip()) / "tritonserver"
    grpc, http, metrics = free_ports(3)
    command = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={triton_bundle / 'triton'}",
        f"--backend-directory={home / 'backends'}",
        f"--grpc-port={grpc}",
        f"--http-port={http}",
        f"--metrics-port={metrics}",
        "--exit-on-error=false",
        "--exit-timeout-secs=2",
    ]
    log = tmp_path_factory.mktemp("tritonserver") / "server.log"
    process = start(command, log, "Started GRPCInferenceService")
    yield f"127.0.0.1:{grpc}", log
    stop(process)


def probs_of(results) -> np.ndarray:
    return np.stack([r.probs for r in results])


# --- against a real Triton server ----------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["last", "ensemble"])
def test_the_server_streams_what_onnxruntime_streams(triton_bundle, server, policy):
    frames = synth_frames(17, size=48, seed=5)[0]
    local = Detector(triton_bundle, policy=policy, batch_size=4)
    remote = Detector(triton_bundle, engine="triton", device=server, policy=policy, batch_size=4)
    assert remote.engine.describe() == f"triton (model ks_clip version 1, python) at {server}"
    assert remote.engine.check.passed and remote.engine.check.inputs == "check_frames.npy"
    want, got = list(local.stream(frames)), list(remote.stream(frames))
    assert [r.index for r in got] == list(range(len(frames)))
    assert np.abs(probs_of(got) - probs_of(want)).max() <= 1e-5


def test_several_streams_and_a_strided_bundle_through_the_server(strided_bundle, server):
    """Each stream's clips from its own ring; a stride's clips are frames 2 apart (the same weights: the server's
    ks_clip is this bundle's clip graph, and the bundle has no Triton entry, so the model is the default ks_clip)."""
    a, b = synth_frames(11, size=48, seed=5)[0], synth_frames(9, size=48, seed=8)[0]
    local = Detector(strided_bundle, policy="center", batch_size=3)
    remote = Detector(strided_bundle, engine="triton", device=f"grpc://{server}", policy="center", batch_size=3)
    want, got = list(local.stream_many({"a": a, "b": b})), list(remote.stream_many({"a": a, "b": b}))
    key = lambda r: (r.source, r.index)  # noqa: E731
    want, got = sorted(want, key=key), sorted(got, key=key)
    assert [key(r) for r in got] == [key(r) for r in want] and len(got) == 20
    assert np.abs(probs_of(got) - probs_of(want)).max() <= 1e-5


def test_a_model_that_is_not_the_bundles_is_refused_naming_the_url_and_model(triton_bundle, server):
    url = f"grpc://{server}/ks_clip_off"
    with pytest.raises(EngineError, match=rf"model 'ks_clip_off' on the Triton server at {re.escape(url)} is not "):
        Detector(triton_bundle, engine="triton", device=url)


def test_a_model_the_server_does_not_have_is_refused_naming_it(triton_bundle, server):
    """pytriton restricts the repository index (an access token), so the server cannot say which models it has."""
    url = f"{server}/nope"
    with pytest.raises(EngineError, match=rf"'nope' on the Triton server at {url} is not ready: the server does not"):
        create_engine(triton_bundle, "triton", device=url)


def test_the_exported_repository_on_tritonserver_without_its_backend_is_refused(
    triton_bundle, exported_repository_server
):
    """The real server loads triton/ks_clip and reports it UNAVAILABLE (pytriton's build has no onnxruntime
    backend): the engine says so, in the server's words."""
    url, log = exported_repository_server
    assert "unable to find backend library for backend 'onnxruntime'" in log.read_text()
    with pytest.raises(EngineError, match=rf"'ks_clip' on the Triton server at {url} is not ready: version 1 is "):
        create_engine(triton_bundle, "triton", device=url)
    with pytest.raises(EngineError, match=r"UNAVAILABLE: .*backend 'onnxruntime'"):
        create_engine(triton_bundle, "triton", device=url)


def test_ks_serve_and_ks_run_take_engine_triton_with_url(triton_bundle, server, monkeypatch, tmp_path, capsys):
    from ks_runtime.cli import main as ks_run
    from ks_runtime.serve import cli as ks_serve

    services = []
    monkeypatch.setattr(ks_serve, "create_app", lambda service, token: services.append(service))
    monkeypatch.setattr(ks_serve.uvicorn, "run", lambda app, **kwargs: None)
    assert ks_serve.main([str(triton_bundle), "--engine", "triton", "--url", server, "-q"]) == 0
    assert services[0].detector.engine.describe().startswith(f"triton (model ks_clip version 1, python) at {server}")
    args = [str(triton_bundle), "--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv"), "--json"]
    assert ks_run([*args, "--engine", "triton", "--url", server]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["engine"].startswith("triton (model ks_clip")


# --- without a server ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("localhost:8001", ("localhost:8001", None)),
        (" grpc://10.0.0.7:8001 ", ("10.0.0.7:8001", None)),
        ("grpc://[::1]:8001/ks_clip_v2", ("[::1]:8001", "ks_clip_v2")),
        ("triton.example:9001/", ("triton.example:9001", None)),
    ],
)
def test_urls(url, want):
    assert triton.parse_url(url) == want


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost:8000", "speaks gRPC, not http://"),
        ("localhost", "HOST:PORT"),
        ("localhost:port", "HOST:PORT"),
        ("grpc://host:8001/a/b", "HOST:PORT"),
        ("cpu", r"--url HOST:PORT .* not device 'cpu'"),
        ("cuda:0", "not device 'cuda:0'"),
    ],
)
def test_bad_urls_say_what_to_give(url, says):
    with pytest.raises(ConfigError, match=says):
        triton.parse_url(url)


def test_an_address_is_for_engine_triton_and_triton_needs_one(bundle):
    with pytest.raises(ConfigError, match=r"engine 'triton' runs on a Triton server: give its gRPC address with --url"):
        create_engine(bundle, "triton")  # the default device, cpu
    with pytest.raises(ConfigError, match=r"'localhost:8001' is a server's address, .*--engine triton --url"):
        create_engine(bundle, "ort", device="localhost:8001")


def test_an_unreachable_server_is_refused_naming_the_url(bundle):
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(EngineError, match=rf"the Triton server at {re.escape(url)} is unreachable: failed to connect"):
        create_engine(bundle, "triton", device=url)
    assert time.monotonic() - started < triton.CONNECT_TIMEOUT_S


def test_ks_serve_with_engine_triton_but_no_url_says_to_give_one(bundle, capsys):
    from ks_runtime.serve import cli as ks_serve

    assert ks_serve.main([str(bundle), "--engine", "triton", "-q"]) == 1
    assert "--url HOST:PORT" in capsys.readouterr().err


def test_without_tritonclient_the_engine_says_what_to_install(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient", None)  # import tritonclient now fails as if not installed
    monkeypatch.delitem(sys.modules, "ks_runtime.engine.triton", raising=False)
    with pytest.raises(EngineError, match=r"pip install 'tritonclient\[grpc\]'"):
        create_engine(bundle, "triton", device="localhost:8001")


# A stand-in for tritonclient's client and tensors: a server that answers as told, or (`graphs`) computes clip.onnx.
class FakeInput:
    def __init__(self, name, shape, datatype):
        self._name, self._shape, self._datatype = name, list(shape), datatype

    def set_data_from_numpy(self, value):
        assert list(value.shape) == self._shape
        self.value = value.copy()


class FakeResult:
    def __init__(self, probs):
        self.probs = probs

    def as_numpy(self, name):
        return self.probs if name == PROBS else None


class FakeClient:
    def __init__(self, manifest, graphs=None, ready=True, max_batch=64, shift=0.0, **changes):
        n, s, u = manifest.clip_len, manifest.preprocess.size, manifest.n_aus
        tensors = {CLIPS: ("FP32", [-1, n, 3, s, s]), KEY_SLOT: ("INT64", [-1, 1]), PROBS: ("FP32", [-1, u])}
        tensors.update(changes)
        meta = [{"name": k, "datatype": d, "shape": [str(x) for x in shape]} for k, (d, shape) in tensors.items()]
        self.metadata = {
            "name": "ks_clip",
            "versions": ["3"],
            "platform": "fake",
            "inputs": meta[:2],
            "outputs": meta[2:],
        }
        self.graphs, self.ready, self.max_batch, self.shift, self.u = graphs, ready, max_batch, shift, u
        self.requests: list[int] = []
        self.name = "ks_clip"  # the model in the server's repository index

    def is_server_live(self, **_):
        return True

    def is_model_ready(self, model, **_):
        return self.ready

    def get_model_repository_index(self, **_):
        return {"models": [{"name": self.name, "version": "3", "state": "UNAVAILABLE", "reason": "backend gone"}]}

    def get_model_metadata(self, model, **_):
        return self.metadata

    def get_model_config(self, model, **_):
        return {"config": {"name": model, "max_batch_size": self.max_batch}}

    def infer(self, model, inputs, outputs=None, **_):
        feeds = {i._name: getattr(i, "value", None) for i in inputs}
        b = inputs[0]._shape[0]
        self.requests.append(b)
        if self.graphs is None:
            return FakeResult(np.full((b, self.u), 0.5, np.float32))
        return FakeResult(self.graphs.clip(feeds[CLIPS], feeds[KEY_SLOT].reshape(-1)) + np.float32(self.shift))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tritonclient(monkeypatch):
    """tritonclient's tensors as FakeInput (they keep their numpy array), so a FakeClient can compute on them."""
    monkeypatch.setattr(triton.grpcclient, "InferInput", FakeInput)
    monkeypatch.setattr(triton.grpcclient, "InferRequestedOutput", lambda name: name)


def test_a_fake_server_computing_clip_onnx_streams_what_onnxruntime_streams(bundle, fake_tritonclient, monkeypatch):
    """The ring, gather and batching path without a server: requests of at most max_batch_size clips, and of at
    most MAX_REQUEST_BYTES (here three clips' worth)."""
    manifest = read_manifest(bundle)
    s = manifest.preprocess.size
    client = FakeClient(manifest, graphs=BundleGraphs(manifest, ("clip",)), max_batch=5)
    monkeypatch.setattr(triton.grpcclient, "InferenceServerClient", lambda target: client)
    frames = synth_frames(13, size=48, seed=5)[0]
    want = probs_of(Detector(bundle, policy="ensemble", batch_size=4).stream(frames))
    got = probs_of(Detector(bundle, engine="triton", device="fake:1", policy="ensemble", batch_size=4).stream(frames))
    assert np.abs(got - want).max() <= 1e-5 and max(client.requests) == 5
    monkeypatch.setattr(triton, "MAX_REQUEST_BYTES", 3 * manifest.clip_len * 3 * s * s * 4)
    client.requests.clear()
    got = probs_of(Detector(bundle, engine="triton", device="fake:1", policy="ensemble", batch_size=4).stream(frames))
    assert np.abs(got - want).max() <= 1e-5 and max(client.requests) == 3


def test_a_server_with_other_outputs_is_refused_naming_the_url_and_model(bundle, fake_tritonclient):
    manifest = read_manifest(bundle)
    with pytest.raises(EngineError, match=r"model 'ks_clip' on the Triton server at fake:1 is not this bundle's cl"):
        triton.TritonEngine(bundle, "fake:1", client=FakeClient(manifest))
    close = FakeClient(manifest, graphs=BundleGraphs(manifest, ("clip",)), shift=3e-5)  # within 1e-4: the same
    engine = triton.TritonEngine(bundle, "fake:1", client=close)
    assert 2e-5 < engine.check.max_abs < 4e-5 and engine.check.inputs.startswith(f"{manifest.clip_len} noise frames")
    far = FakeClient(manifest, graphs=BundleGraphs(manifest, ("clip",)), shift=3e-4)
    with pytest.raises(EngineError, match=r"differ from .*clip\.onnx's by up to 3\.0e-04 \(tolerance 1e-04\)"):
        triton.TritonEngine(bundle, "fake:1", client=far)
    assert far.closed


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({CLIPS: ("FP32", [-1, 3, 3, 64, 64])}, r"clips is FP32 \[-1, 3, 3, 64, 64\], not FP32 \[-1, 3, 3, 32, 32\]"),
        ({KEY_SLOT: ("INT32", [-1])}, r"key_slot is INT32 \[-1\], not INT64 \[-1\]"),
        ({"logits": ("FP32", [-1, 12])}, r"no tensor 'probs' \(FP32 \[-1, 12\]\)"),
    ],
)
def test_a_model_with_other_tensors_is_refused_naming_the_manifest_field(bundle, change, says):
    manifest = read_manifest(bundle)
    client = FakeClient(manifest, **change)
    if "logits" in change:
        client.metadata["outputs"] = [client.metadata["outputs"][-1]]
    with pytest.raises(EngineError, match=rf"fake:1: its inputs and outputs are not .*'graphs\.clip'.*{says}"):
        triton.TritonEngine(bundle, "fake:1", client=client)


def test_a_model_not_ready_or_unbatched_is_refused_with_the_servers_reason(bundle):
    manifest = read_manifest(bundle)
    with pytest.raises(EngineError, match=r"at fake:1 is not ready: version 3 is UNAVAILABLE: backend gone"):
        triton.TritonEngine(bundle, "fake:1", client=FakeClient(manifest, ready=False))
    elsewhere = FakeClient(manifest, ready=False)
    elsewhere.name = "other_model"
    with pytest.raises(EngineError, match=r"no model of that name \(it has: other_model\)"):
        triton.TritonEngine(bundle, "fake:1", client=elsewhere)
    with pytest.raises(EngineError, match=r"max_batch_size 0, but the engine sends batches of clips"):
        triton.TritonEngine(bundle, "fake:1", client=FakeClient(manifest, max_batch=0))


def test_int8_and_the_per_frame_calls_are_refused(bundle, fake_tritonclient):
    manifest = read_manifest(bundle)
    with pytest.raises(ConfigError, match=r"precision 'int8' is the bundle's INT8 encoder on this CPU"):
        create_engine(bundle, "triton", device="fake:1", precision="int8")
    engine = triton.TritonEngine(
        bundle, "fake:1", client=FakeClient(manifest, graphs=BundleGraphs(manifest, ("clip",)))
    )
    with pytest.raises(EngineError, match="no encoder to run"):
        engine.encode(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(EngineError, match="no head to run"):
        engine.head(None, None, None)
