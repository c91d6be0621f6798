"""Item 10: ks-serve under load, short: N = 1 and 4 WebSocket clients streaming 25 fps for 10 s (2 s quick) to a
`ks-serve` subprocess, on the synth-cpu-sized and paper-r50 bundles (untrained). The 60 s table at N = 1, 4, 8 and
the fault checks come from `python -m benchmarks.serve_load` (benchmarks/results/serve_load.md).

Skipped when the serve extra (starlette, uvicorn, websockets, prometheus-client) or httpx is missing.
"""

from __future__ import annotations

import pytest

for _module in ("starlette", "uvicorn", "websockets", "prometheus_client", "httpx"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: pip install .[serve] (and httpx)")

from benchmarks.harness import R50_MODEL, SMALL_MODEL, Row, quick  # noqa: E402 (after the skips)
from benchmarks.serve_load import (  # noqa: E402 (it imports the serve extra's client side)
    FPS,
    INPUTS,
    ServeProcess,
    encoded_frames,
    free_port,
    load_run,
    warm_up,
)

BUNDLES = {"synth-cpu": ("small_bundle", SMALL_MODEL, "10a"), "paper-r50": ("r50_bundle", R50_MODEL, "10c")}
STREAMS = (1, 4)


@pytest.fixture(scope="module")
def frames():
    return encoded_frames("aligned")


@pytest.fixture(scope="module", params=list(BUNDLES))
def server(request, frames, tmp_path_factory):
    """(bundle name, one ks-serve subprocess on it with aligned frames, warmed up by one short stream)."""
    bundle = request.getfixturevalue(BUNDLES[request.param][0])
    process = ServeProcess(bundle, INPUTS["aligned"], free_port(), tmp_path_factory.mktemp("serve"))
    try:
        process.start()
        warm_up(process, frames)
        yield request.param, process
    finally:
        process.stop()


@pytest.mark.parametrize("streams", STREAMS)
def test_serve_load(benchmark, record, server, frames, streams):
    name, process = server
    seconds = 2.0 if quick() else 10.0
    out = {}
    benchmark.group = f"10 ks-serve load, {name}"
    benchmark.pedantic(lambda: out.update(load_run(process, frames, streams, seconds)), rounds=1, iterations=1)
    _, model, first_key = BUNDLES[name]
    key = first_key[:-1] + chr(ord(first_key[-1]) + STREAMS.index(streams))
    rtt = out["round_trip_ms"]
    record(
        Row(
            key=key,
            item=10,
            name=f"ks-serve, {name}: {streams} WebSocket stream(s) at {FPS:g} fps",
            figure=out["served_fps"],
            unit=" fps",
            model=model,
            boundary=f"{streams} WebSocket client(s) in the test process, each sending JPEG aligned 112 px SynthAU "
            f"crops at {FPS:g} fps for {seconds:g} s to a ks-serve subprocess (--face aligned, its defaults), "
            "reading results on its own thread; figure = results served per second, all streams; round trip = "
            "send() to the result's arrival",
            details=out,
            note=f"{out['served']}/{out['sent']} frames served, {out['dropped']} dropped; round trip p50 "
            f"{rtt['p50']:.0f} ms, p99 {rtt['p99']:.0f} ms; RSS {out['rss_before_mib']:.0f} -> "
            f"{out['rss_after_mib']:.0f} MiB",
        )
    )
    assert out["unaccounted"] == 0 and out["stopped_messages"] == streams and out["settled"]
