"""`ks-serve`: it refuses to listen beyond loopback without a token, takes the token from the environment, and
hands uvicorn the app on the host and port asked for."""

from __future__ import annotations

import pytest

from ks_runtime.serve import cli


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
