"""ks_runtime/commandline.py, the prologue ks-train, ks-export and ks-run share: -v/-q, --version, a KSError as
one line and exit 1, Ctrl-C as exit 130, and the spellings from before the subcommands.

The commands' work is replaced by stand-ins here (no bundle, no checkpoint): tests/runtime/test_cli_subcommands.py
and tests/export/test_cli_subcommands.py run the real thing."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging

import pytest

import ks_export.cli as export_cli
import ks_export.export as export_module
import ks_runtime.cli as run_cli
import ks_train.cli as train_cli
from ks_runtime import __version__, commandline
from ks_runtime.core.errors import BundleError, ConfigError
from ks_train.commands import synth_preview

LOGGER = logging.getLogger("ks_runtime.test_commandline")


# --- the prologue alone ------------------------------------------------------------------------------------------


def tool(run) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ks-tool")
    commandline.add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    commandline.add_command(sub, "go", run)
    return parser


def test_run_main_turns_a_ks_error_into_one_line_and_exit_1(capsys):
    def fail():
        raise ConfigError("field 'x': expected an int")

    assert commandline.run_main("ks-tool go", fail) == 1
    assert capsys.readouterr().err == "ks-tool go: error: field 'x': expected an int\n"


def test_run_main_turns_ctrl_c_into_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert commandline.run_main("ks-tool", interrupted) == 130
    assert capsys.readouterr().err == "ks-tool: interrupted\n"


def test_run_main_lets_anything_else_propagate_and_passes_the_status_on():
    def bug():
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        commandline.run_main("ks-tool", bug)
    with pytest.raises(OSError):
        commandline.run_main("ks-tool", lambda: open("/nonexistent/x"))
    assert commandline.run_main("ks-tool", lambda: None) == 0 and commandline.run_main("ks-tool", lambda: 3) == 3


def test_verbose_and_quiet_before_or_after_the_subcommand(caplog):
    seen = []

    def run(args):
        seen.append((args.verbose, args.quiet))
        LOGGER.debug("debug record")
        LOGGER.info("info record")
        LOGGER.warning("warning record")

    levels, before = {}, logging.getLogger("ks_runtime").level
    for argv in (["go"], ["-v", "go"], ["go", "-v"], ["-q", "go"], ["go", "--quiet"]):
        caplog.clear()
        assert commandline.dispatch(tool(run), argv) == 0
        levels[" ".join(argv)] = [r.levelname for r in caplog.records if r.name == LOGGER.name]
    assert seen == [(False, False), (True, False), (True, False), (False, True), (False, True)]
    assert levels == {
        "go": ["INFO", "WARNING"],
        "-v go": ["DEBUG", "INFO", "WARNING"],
        "go -v": ["DEBUG", "INFO", "WARNING"],
        "-q go": ["WARNING"],
        "go --quiet": ["WARNING"],
    }
    assert logging.getLogger("ks_runtime").level == before  # restored for whatever runs next in this process


def test_verbose_and_quiet_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        commandline.dispatch(tool(lambda args: 0), ["-v", "go", "-q"])
    assert exit_.value.code == 2 and "contradict" in capsys.readouterr().err


def test_a_usage_error_from_the_command_exits_2_with_its_usage(capsys):
    def run(args):
        raise commandline.UsageError("--a needs --b")

    with pytest.raises(SystemExit) as exit_:
        commandline.dispatch(tool(run), ["go"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: ks-tool go" in err and "ks-tool go: error: --a needs --b" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["run"]),
        (["B", "--input", "x"], ["run", "B", "--input", "x"]),
        (["-q", "B"], ["-q", "run", "B"]),
        (["-v", "--quiet", "--bundle", "B"], ["-v", "--quiet", "run", "--bundle", "B"]),
        (["report", "B"], ["report", "B"]),
        (["-q", "run", "B"], ["-q", "run", "B"]),
        (["--help"], ["--help"]),
        (["-v", "--version"], ["-v", "--version"]),
    ],
)
def test_the_default_subcommand_goes_in_front_of_an_old_spelling(argv, expected):
    assert commandline.with_default_command(argv, ("run", "report"), "run") == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["B", "--input", "x"], ["run", "B", "--input", "x"]),
        (["B", "--policy-report", "--report-out", "t.md"], ["report", "B", "--report-out", "t.md"]),
        (["-q", "--policy-report", "--bundle", "B"], ["-q", "report", "--bundle", "B"]),
        (["report", "B"], ["report", "B"]),
    ],
)
def test_ks_run_maps_its_old_spellings_onto_run_and_report(argv, expected):
    assert run_cli.with_subcommand(argv) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--ckpt", "c", "--out", "o"], ["export", "--ckpt", "c", "--out", "o"]),
        (["-v", "--ckpt", "c"], ["-v", "export", "--ckpt", "c"]),
        (["verify", "b"], ["verify", "b"]),
    ],
)
def test_ks_export_maps_its_old_spelling_onto_export(argv, expected):
    assert export_cli.with_subcommand(argv) == expected


# --- the three programs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("main", "prog"), [(run_cli.main, "ks-run"), (export_cli.main, "ks-export"), (train_cli.main, "ks-train")]
)
def test_version(main, prog, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"{prog} {__version__}\n"


def test_the_version_is_the_installed_package_metadata():
    assert __version__ == importlib.metadata.version("knowledge-spreader")


@pytest.mark.parametrize("main", [run_cli.main, export_cli.main, train_cli.main])
def test_help_lists_the_subcommands(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "COMMAND" in out and "-q, --quiet" in out and "-v, --verbose" in out
    commands = {
        run_cli.main: ("run", "report"),
        export_cli.main: ("export", "verify"),
        train_cli.main: ("fit", "eval", "params", "synth-stats", "calibrate"),
    }[main]
    assert all(f"    {name}" in out for name in commands)


class FakeDetector:
    """Stands in for ks_runtime.Detector in `ks-run run`: `behaviour` says how its constructor fails."""

    behaviour = "error"

    def __init__(self, bundle, **kwargs):
        LOGGER.debug("detector debug")
        LOGGER.info("detector info")
        if self.behaviour == "error":
            raise BundleError(f"{bundle}: no such bundle")
        if self.behaviour == "interrupt":
            raise KeyboardInterrupt


def run_ks_run(monkeypatch, behaviour: str, *flags: str) -> int:
    monkeypatch.setattr(FakeDetector, "behaviour", behaviour)
    monkeypatch.setattr(run_cli, "Detector", FakeDetector)
    return run_cli.main([*flags, "B", "--input", "synthau:tiny:S01:T1"])


def test_ks_run_error_interrupt_and_logging(monkeypatch, capsys, caplog):
    assert run_ks_run(monkeypatch, "error") == 1
    assert capsys.readouterr().err == "ks-run run: error: B: no such bundle\n"
    assert run_ks_run(monkeypatch, "interrupt") == 130
    assert capsys.readouterr().err == "ks-run run: interrupted\n"
    caplog.clear()
    run_ks_run(monkeypatch, "error", "-q")
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == []
    caplog.clear()
    run_ks_run(monkeypatch, "error", "-v")
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == ["DEBUG", "INFO"]
    caplog.clear()
    run_ks_run(monkeypatch, "error")
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == ["INFO"]


def test_ks_run_keeps_turning_an_os_error_into_one_line(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError("[Errno 13] Permission denied: 'processed'")

    monkeypatch.setattr(run_cli, "Detector", refuse)
    assert run_cli.main(["B", "--input", "x.mp4"]) == 1
    assert capsys.readouterr().err == "ks-run run: error: [Errno 13] Permission denied: 'processed'\n"


class FakeReport:
    def text(self) -> str:
        return "export report"


def test_ks_export_error_interrupt_quiet_and_verbose(monkeypatch, capsys, caplog):
    def verify(path):
        LOGGER.debug("verify debug")
        LOGGER.info("verify info")
        if path == "bad":
            raise BundleError("bad/encoder.onnx: sha256 does not match field 'files.encoder.onnx'")
        if path == "stop":
            raise KeyboardInterrupt
        return "bundle OK"

    monkeypatch.setattr(export_module, "verify_bundle", verify)
    assert export_cli.main(["verify", "bad"]) == 1
    assert capsys.readouterr().err == (
        "ks-export verify: error: bad/encoder.onnx: sha256 does not match field 'files.encoder.onnx'\n"
    )
    assert export_cli.main(["verify", "stop"]) == 130 and capsys.readouterr().err == "ks-export verify: interrupted\n"
    caplog.clear()
    assert export_cli.main(["-q", "verify", "good"]) == 0 and capsys.readouterr().out == ""
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == []
    assert export_cli.main(["verify", "good", "-v"]) == 0 and capsys.readouterr().out == "bundle OK\n"
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == ["DEBUG", "INFO"]
    monkeypatch.setattr(export_module, "export_bundle", lambda *args, **kwargs: FakeReport())
    assert export_cli.main(["--ckpt", "c", "--out", "o"]) == 0 and capsys.readouterr().out == "export report\n"
    assert export_cli.main(["-q", "--ckpt", "c", "--out", "o"]) == 0 and capsys.readouterr().out == ""


def test_ks_export_usage_errors(capsys):
    for argv, message in (
        (["--out", "o"], "a checkpoint is required"),
        (["export", "c", "--ckpt", "c", "--out", "o"], "give the checkpoint once"),
        (["--ckpt", "c", "--out", "o", "--calib", "8"], "--calib needs --int8"),
    ):
        with pytest.raises(SystemExit) as exit_:
            export_cli.main(argv)
        assert exit_.value.code == 2 and f"ks-export export: error: {message}" in capsys.readouterr().err


def test_ks_train_error_interrupt_quiet_and_verbose(monkeypatch, capsys, caplog, tmp_path):
    assert train_cli.main(["synth-preview", "--size", "8", "--out", str(tmp_path / "p.png")]) == 1
    assert capsys.readouterr().err == "ks-train synth-preview: error: --size 8: use 32 to 512 pixels\n"

    def render(path, **kwargs):
        LOGGER.debug("render debug")
        LOGGER.info("render info")
        if "stop" in str(path):
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(synth_preview, "render_preview", render)
    assert train_cli.main(["synth-preview", "--out", "stop.png"]) == 130
    assert capsys.readouterr().err == "ks-train synth-preview: interrupted\n"
    caplog.clear()
    assert train_cli.main(["-q", "synth-preview", "--out", "p.png"]) == 0 and capsys.readouterr().out == ""
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == []
    assert train_cli.main(["synth-preview", "-v", "--out", "p.png"]) == 0
    assert capsys.readouterr().out == "wrote p.png\n"
    assert [r.levelname for r in caplog.records if r.name == LOGGER.name] == ["DEBUG", "INFO"]


def test_ks_train_calibrate_names_an_unknown_setting_in_one_line(capsys):
    assert train_cli.main(["calibrate", "no-such-setting"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ks-train calibrate: error: unknown setting no-such-setting; known: default, easy")
    assert err.count("\n") == 1
