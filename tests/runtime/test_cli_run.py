"""ks_runtime/cli.py (`ks-run`): outputs, OpenFace's flags, exit codes on bad input, the policy report, and
the consistency with training: `ks-run` on a SynthAU video gives `ks-train eval`'s F1."""

import json

import numpy as np
import pytest

from ks_runtime.cli import input_stem, main
from ks_runtime.io.table import csv_columns, read_results_csv
from ks_runtime.tools.policy_report import write_lossless_video
from tests.runtime.conftest import synth_frames

SPEC = "synthau:tiny:S05:T1"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_lossless_video(synth_frames(20, size=32, seed=7)[0], tmp_path_factory.mktemp("cli") / "clip", 25.0)


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_ks_run_writes_the_csv_and_plot_and_prints_the_summary(bundle, video, tmp_path, capsys):
    code = main(
        [
            str(bundle),
            "--input",
            str(video),
            "--csv",
            str(tmp_path / "a.csv"),
            "--plot",
            str(tmp_path / "a.png"),
            "--policy",
            "center",
            "--batch-size",
            "3",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "fps" in out and "p50" in out and "p99" in out and "dropped 0" in out and "look-ahead 1 frames" in out
    table = read_results_csv(tmp_path / "a.csv")
    assert len(table) == 20 and (tmp_path / "a.png").is_file()


def test_openface_flags_are_aliases(bundle, video, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for i, frame in enumerate(synth_frames(6, size=32)[0]):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    code = main(
        [
            "--bundle",
            str(bundle),
            "-f",
            str(video),
            "-fdir",
            str(folder),
            "-out_dir",
            str(tmp_path / "out"),
            "--plot",
            "--no-progress",
            "--fps",
            "30",
        ]
    )
    assert code == 0
    for stem, rows in ((video.stem, 20), ("frames", 6)):
        table = read_results_csv(tmp_path / "out" / f"{stem}.csv")
        assert len(table) == rows and list(table.columns)[:5] == csv_columns(())
        assert (tmp_path / "out" / f"{stem}_timeline.png").is_file()
    assert read_results_csv(tmp_path / "out" / "frames.csv")["timestamp"].tolist()[1] == pytest.approx(0.033)


def test_a_video_shorter_than_its_container_promises_is_a_warning_and_exit_0(bundle, video, tmp_path, capsys):
    cut = tmp_path / f"cut{video.suffix}"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    argv = [str(bundle), "--input", str(cut), "--csv", str(tmp_path / "cut.csv"), "--no-progress"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    rows = read_results_csv(tmp_path / "cut.csv")
    summary = last_json(captured.out)
    assert 0 < len(rows) < 20 and summary["frames"] == len(rows) and summary["errors"] == []
    [warning] = summary["warnings"]
    assert str(cut) in warning and f"the container promises 20 frames, {len(rows)} decoded" in warning
    assert "error" not in captured.err
    assert main(argv) == 0
    assert f"warning: {warning}" in capsys.readouterr().out  # the text summary says it too


def test_errors_are_one_line_and_an_exit_code(bundle, tmp_path, capsys):
    assert main([str(tmp_path / "nobundle"), "--input", SPEC]) == 1
    assert "no such bundle" in capsys.readouterr().err
    assert main([str(bundle), "--input", str(tmp_path / "missing.mp4"), "--csv", str(tmp_path / "x.csv")]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(bundle)])
    assert exit_.value.code == 2


def test_input_stems():
    assert input_stem("/data/clip.mp4") == "clip" and input_stem("/data/frames/") == "frames"
    assert input_stem("synthau:small:S05:T1") == "synthau_small_S05_T1"


def test_ks_run_on_a_synthau_video_gives_ks_train_evals_f1(bundle, checkpoint, tmp_path, capsys):
    import torch

    from ks_runtime.inputs import SynthAUSource
    from ks_train import checkpoint as ckpt
    from ks_train.config import ExperimentConfig
    from ks_train.data.base import VideoSequence
    from ks_train.evaluate import evaluate
    from ks_train.methods import create_method

    code = main(
        [str(bundle), "--input", SPEC, "--policy", "shift", "--json", "--no-progress", "--csv", str(tmp_path / "s.csv")]
    )
    assert code == 0
    streamed = last_json(capsys.readouterr().out)["mean_f1"]

    source = SynthAUSource(SPEC)
    state = ckpt.load_checkpoint(checkpoint)
    cfg = ExperimentConfig.from_dict(state["config"])
    method = create_method(cfg)
    model = method.build_model()
    ckpt.load_model_state(model, state)
    sequence = VideoSequence("S05", "T1", source.labels, np.arange(len(source.labels)), frames=source.frames)
    trained = evaluate(
        method, model, [sequence], cfg.preprocess, "shift", torch.device("cpu"), list(state["au_columns"])
    )
    assert streamed == pytest.approx(trained.mean, abs=1e-6)
