"""`ks-serve`: it refuses to listen beyond loopback without a token, takes the token from the environment, hands
uvicorn the app on the host and port asked for, keeps the token out of uvicorn's logs, and exits 0 on Ctrl-C."""

from __future__ import annotations

import json
import logging
import logging.config
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import uvicorn.config
from uvicorn.logging import AccessFormatter
from websockets.sync.client import connect

from ks_runtime.serve import cli
from ks_runtime.serve.redact import REDACTOR, UVICORN_LOGGERS


@pytest.fixture()
def uvicorn_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    return calls


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("example.org", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert cli.is_loopback(host) is loopback


def test_beyond_loopback_without_a_token_it_refuses_to_start(bundle, uvicorn_calls, capsys):
    assert cli.main([str(bundle), "--host", "0.0.0.0", "-q"]) == 1
    assert "--token" in capsys.readouterr().err and not uvicorn_calls


def test_with_a_token_from_the_environment_it_serves_there(bundle, uvicorn_calls, monkeypatch):
    monkeypatch.setenv(cli.TOKEN_ENV, "s3cret")
    assert cli.main([str(bundle), "--host", "0.0.0.0", "--port", "8123", "--max-frame-bytes", "100000", "-q"]) == 0
    ((app, kwargs),) = uvicorn_calls
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8123 and kwargs["ws_max_size"] == 400000
    assert any(m.kwargs.get("token") == "s3cret" for m in app.user_middleware)


def test_a_limit_out_of_range_is_a_usage_error(bundle, uvicorn_calls, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([str(bundle), "--max-streams", "0"])
    assert exited.value.code == 2 and "--max-streams" in capsys.readouterr().err


def uvicorn_record(logger: str, msg: str, *args) -> logging.LogRecord:
    """A record as uvicorn makes it: a %-style message and its arguments (protocols/websockets/*_impl.py,
    protocols/http/h11_impl.py and httptools_impl.py)."""
    return logging.LogRecord(logger, logging.INFO, "impl.py", 1, msg, args, None)


def test_the_token_is_redacted_from_uvicorns_websocket_lines():
    accepted = uvicorn_record(
        "uvicorn.error", '%s - "WebSocket %s" [accepted]', "127.0.0.1:40028", "/ws?token=s3cr%22t"
    )
    refused = uvicorn_record(
        "uvicorn.error", '%s - "WebSocket %s" %d', "127.0.0.1:40028", "/ws?x=1&token=s3cret&y=2", 403
    )
    assert REDACTOR.filter(accepted) and REDACTOR.filter(refused)
    assert accepted.getMessage() == '127.0.0.1:40028 - "WebSocket /ws?token=***" [accepted]'
    assert refused.getMessage() == '127.0.0.1:40028 - "WebSocket /ws?x=1&token=***&y=2" 403'


def test_an_access_line_keeps_the_five_arguments_uvicorns_formatter_reads():
    record = uvicorn_record(
        "uvicorn.access", '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/healthz?token=s3cret", "1.1", 200
    )
    assert REDACTOR.filter(record)
    assert record.args == ("127.0.0.1:1", "GET", "/healthz?token=***", "1.1", 200)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert line == '127.0.0.1:1 - "GET /healthz?token=*** HTTP/1.1" 200 OK'


def test_a_token_outside_the_string_arguments_is_redacted_from_the_whole_message():
    inline = uvicorn_record("uvicorn.error", "cannot upgrade /ws?token=s3cret")
    in_object = uvicorn_record("uvicorn.error", "failed: %s", ValueError("GET /ws?token=s3cret 'x'"))
    plain = uvicorn_record("uvicorn.error", "%s - %s", "127.0.0.1:1", "/healthz")
    for record in (inline, in_object, plain):
        assert REDACTOR.filter(record)
    assert inline.getMessage() == "cannot upgrade /ws?token=***"
    assert in_object.getMessage() == "failed: GET /ws?token=*** 'x'" and in_object.args == ()
    assert plain.args == ("127.0.0.1:1", "/healthz")  # nothing to redact: untouched


@pytest.fixture()
def uvicorn_loggers():
    """uvicorn's loggers as they were: the test configures them as uvicorn does."""
    loggers = [logging.getLogger(name) for name in ("uvicorn", *UVICORN_LOGGERS)]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    yield
    for lg, (handlers, filters, level, propagate, disabled) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.filters[:], lg.level, lg.propagate, lg.disabled = (
            handlers,
            filters,
            level,
            propagate,
            disabled,
        )


def test_ks_serve_installs_the_filter_where_uvicorns_logging_configuration_keeps_it(
    bundle, uvicorn_calls, uvicorn_loggers
):
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).removeFilter(REDACTOR)
    assert cli.main([str(bundle), "-q"]) == 0
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # what uvicorn.run does before it serves
    assert all(REDACTOR in logging.getLogger(name).filters for name in UVICORN_LOGGERS)


LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
# ks-serve with Python's own SIGINT handler, which a process started in the background (pytest under CI) lacks
AS_IN_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('ks_runtime.serve.cli', run_name='__main__')"
)


def ks_serve_until_interrupted(bundle, token: str, visit) -> tuple[int, str]:
    """Run ks-serve in a process of its own (SIGINT raising KeyboardInterrupt, as in a terminal), call `visit(port)`
    once it listens, then interrupt it: its exit status and everything it printed."""
    command = [sys.executable, "-c", AS_IN_A_TERMINAL, str(bundle), "--port", "0", "--token", token]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not (ports := [m.group(1) for line in lines if (m := LISTENING.search(line))]):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        visit(int(ports[0]))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()  # it would outlive the test
            raise
        reader.join(5)
    return status, "".join(lines)


def test_a_running_server_logs_no_token_and_exits_0_on_ctrl_c(bundle):
    token = "s3cret-b6a1f0"

    def visit(port: int) -> None:
        with connect(f"ws://127.0.0.1:{port}/ws?token={token}", open_timeout=20) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "hello"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?token={token}", timeout=20) as answer:
            assert answer.status == 200

    status, printed = ks_serve_until_interrupted(bundle, token, visit)
    assert token not in printed, printed
    assert '"WebSocket /ws?token=***" [accepted]' in printed and '"GET /healthz?token=*** HTTP/1.1" 200' in printed
    assert status == 0, printed  # uvicorn takes SIGINT, shuts down and returns: not 130


def test_the_encoders_precision_is_asked_for_as_in_ks_run(bundle, uvicorn_calls, monkeypatch):
    made = []
    real = cli.Detector
    monkeypatch.setattr(cli, "Detector", lambda *a, **kw: made.append(kw) or real(*a, **kw))
    assert cli.main([str(bundle), "--precision", "fp32", "-q"]) == 0
    assert made[-1]["precision"] == "fp32" and made[-1]["insist_int8"] is False
    with pytest.raises(SystemExit):
        cli.main([str(bundle), "--precision", "int4"])
