"""`ks-export export CKPT --out DIR` does what the spelling from before the subcommands does
(`ks-export --ckpt CKPT --out DIR`): the same call, the same bundle, which `ks-export verify` passes."""

from __future__ import annotations

import json

import pytest

import ks_export.export as export_module
from ks_export.cli import main
from ks_runtime.core.bundle import MANIFEST

FAST = ["--exporter", "legacy", "--no-eval"]  # seconds: no dynamo, no test-fold F1


def recorded_calls(monkeypatch, argvs: list[list[str]]) -> list[tuple[tuple, dict]]:
    calls = []

    class Report:
        def text(self) -> str:
            return "report"

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return Report()

    monkeypatch.setattr(export_module, "export_bundle", record)
    for argv in argvs:
        assert main(argv) == 0
    return calls


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--int8", "--calib", "32", "--triton", "--fp16", "--opset", "17"],
        ["--trt", "--policy", "shift", "--no-eval", "--exporter", "legacy", "--force"],
    ],
)
def test_every_spelling_makes_the_same_call(monkeypatch, flags):
    calls = recorded_calls(
        monkeypatch,
        [
            ["--ckpt", "c.pt", "--out", "b", *flags],
            ["export", "c.pt", "--out", "b", *flags],
            ["export", "--ckpt", "c.pt", "--out", "b", *flags],
            ["-v", "--ckpt", "c.pt", "--out", "b", *flags],
        ],
    )
    assert len(calls) == 4 and all(call == calls[0] for call in calls)
    assert calls[0][0] == ("c.pt", "b") and calls[0][1]["int8"] == ("--int8" in flags)
    assert ("calib" in calls[0][1]) == ("--calib" in flags)
    assert calls[0][1]["force"] == ("--force" in flags)


def test_export_then_verify_in_both_spellings(checkpoint, tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    assert main(["--ckpt", str(checkpoint), "--out", str(old), *FAST]) == 0
    old_report = capsys.readouterr().out
    assert main(["export", str(checkpoint), "--out", str(new), *FAST]) == 0
    new_report = capsys.readouterr().out
    assert old_report.startswith(f"bundle {old}") and new_report.startswith(f"bundle {new}")
    manifests = [json.loads((bundle / MANIFEST).read_text()) for bundle in (old, new)]
    assert manifests[0]["files"] == manifests[1]["files"]  # the same graphs, hash for hash
    for bundle in (old, new):
        assert main(["verify", str(bundle)]) == 0
        assert capsys.readouterr().out.rstrip().endswith("bundle OK")
        assert main(["-q", "verify", str(bundle)]) == 0 and capsys.readouterr().out == ""


def test_export_errors_are_one_line_in_either_spelling(tmp_path, capsys):
    for argv in (
        ["--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "b")],
        ["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "b")],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("ks-export export: error: ") and "none.pt" in err and err.count("\n") == 1
