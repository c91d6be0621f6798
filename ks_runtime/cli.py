"""`ks-run`: stream a video, a webcam, images or a SynthAU sequence through a model bundle.

    ks-run run BUNDLE --input video.mp4 [--csv out.csv] [--plot [out.png]] [--overlay [out.mp4]] [--policy last]
    ks-run run BUNDLE --input photos/ [--sequence]                 (each image alone; --sequence: one video)
    ks-run run BUNDLE --input video.mp4 --precision int8 [--insist-int8]   (the bundle's INT8 encoder, checked)
    ks-run run BUNDLE --input 0 --show                             (webcam 0, live window; q or Esc stops)
    ks-run run BUNDLE --input videos/ --workers 4 [--ray auto]     (a corpus: a CSV per video, resumable)
    ks-run run --bundle BUNDLE -f video.mp4 -out_dir processed    (OpenFace's FeatureExtraction flags; -device 0)
    ks-run report BUNDLE [--input SPEC] [--out table.md]           (accuracy and latency of every policy)

`run` is the default: `ks-run BUNDLE --input ...` is `ks-run run BUNDLE --input ...`, and the spelling from
before the subcommands, `ks-run BUNDLE --policy-report [--report-sequences N] [--report-out F]`, is `ks-run report`.
`run` writes the CSV (by default processed/<input name>.csv in OpenFace 2's columns, as OpenFace does; `--format ks`
for ours, with the probabilities), optionally the AU timeline PNG, the overlay video and the aligned crops
(`--save-crops`, OpenFace's -simalign), and prints a summary (with the frames a webcam dropped when the
engine fell behind; Ctrl-C ends a webcam run and still prints it). Faces: `--face auto` (default) takes
square frames of at most 256 px as aligned crops and runs the Haar detector on anything else.
-v: debug logging; -q: warnings only, no progress bar and no summary (--json and the report still print).
Exit codes: 0 done (a video shorter than its container promises is a warning in the summary), 1 an error (bad
input, bundle, device; the rows before it are written), 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ks_runtime import commandline, corpus
from ks_runtime.core.errors import KSError
from ks_runtime.core.policy import POLICIES
from ks_runtime.detector import Detector
from ks_runtime.engine import PRECISIONS
from ks_runtime.faces.registry import face_stage_names
from ks_runtime.io.formats import CSV_FORMATS
from ks_runtime.io.live_view import LiveView
from ks_runtime.io.sources import MAX_FPS, Paced, is_camera_spec
from ks_runtime.stream import MAX_BATCH_SIZE, MAX_WAIT_MS

PROG = "ks-run"
COMMANDS = ("run", "report")
DEFAULT_COMMAND = "run"
LEGACY_REPORT_FLAG = "--policy-report"  # the spelling of `ks-run report` before the subcommands
DEFAULT_OUT_DIR = "processed"  # OpenFace's FeatureExtraction default
DEFAULT_CSV_FORMAT = "openface"  # what a FeatureExtraction user's tools read; `--format ks` has the probabilities
# OSError too: a run's inputs and outputs are files and devices (a full disk, a permission, a camera unplugged)
HANDLED = (KSError, OSError)
# Every number flag's type and range, checked as the arguments are parsed: a bad value exits 2 naming the flag, the
# value and the range, before the bundle or any input is opened (and before any allocation sized by it).
BATCH = commandline.number_in(int, 1, MAX_BATCH_SIZE)
THREADS = commandline.number_in(int, 0, 1024)
WAIT_MS = commandline.number_in(float, 0.0, MAX_WAIT_MS)
MAX_FACES = commandline.number_in(int, 0, 1024)
FPS = commandline.number_in(float, 0.0, MAX_FPS, low_open=True)
COUNT = commandline.number_in(int, 0, 10**9)
CAMERA = commandline.number_in(int, 0, 1023)
WORKERS = commandline.number_in(int, 1, 1024)
# What a corpus run refuses: each names one file or folder, or is about one live or image input.
NOT_IN_A_CORPUS = {
    "csv": "--csv names one file: a corpus run writes OUT_DIR/<video>.csv",
    "plot": "--plot PNG names one file: give --plot alone (OUT_DIR/<video>_timeline.png)",
    "overlay": "--overlay VIDEO names one file: give --overlay alone (OUT_DIR/<video>_overlay.mp4)",
    "save_crops": "--save-crops DIR names one folder: give --save-crops alone (OUT_DIR/<video>_aligned)",
    "show": "--show opens one window: not with --workers/--ray",
    "realtime": "--realtime paces one live replay: not with --workers/--ray",
    "sequence": "--sequence is about image folders: --workers/--ray run videos",
    "fps": "--fps is about image folders: --workers/--ray run videos",
    "openface_dir": "-fdir is a folder of one video's frames: --workers/--ray run video files",
    "openface_device": "-device is a webcam: --workers/--ray run video files",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commandline.add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commandline.add_command(
        sub,
        "run",
        run_command,
        help="stream inputs through a bundle: CSV, timeline, overlay, summary (default)",
        description="Stream each input through the bundle; write its CSV (and the timeline PNG and overlay video "
        "when asked) and print its summary.",
    )
    _add_bundle_and_inputs(run)
    _add_output_flags(run)
    add_engine_flags(run)
    add_precision_flags(run)
    _add_stream_flags(run)
    _add_corpus_flags(run)
    report = commandline.add_command(
        sub,
        "report",
        report_command,
        help="every key-slot policy's accuracy and latency on SynthAU",
        description="Run every key-slot policy on SynthAU (default: the bundle's held-out test part) or on the "
        "inputs given, and print the accuracy and latency table.",
    )
    _add_bundle_and_inputs(report)
    add_engine_flags(report)
    report.add_argument(
        "--sequences",
        "--report-sequences",
        dest="report_sequences",
        type=COUNT,
        default=0,
        metavar="N",
        help="use only the first N test sequences (0: all)",
    )
    report.add_argument(
        "--latency-frames",
        "--report-latency-frames",
        dest="report_latency_frames",
        type=COUNT,
        default=0,
        metavar="N",
        help="replay only the first N frames of the first sequence for latency (0: all)",
    )
    report.add_argument(
        "--out", "--report-out", dest="report_out", metavar="FILE", help="also write the table (Markdown) to this file"
    )
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.add_argument("--json", action="store_true", help="also print the report as JSON")
    return parser


def _add_bundle_and_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle_pos", nargs="?", metavar="BUNDLE", help="model bundle folder written by ks-export")
    p.add_argument("--bundle", help="model bundle folder (instead of the positional BUNDLE)")
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="PATH",
        help="video file, image file or folder (each image scored alone; --sequence: a folder is one video), "
        "webcam index (0), or synthau:SIZE:SUBJECT:TASK (repeatable)",
    )
    p.add_argument(
        "-f",
        dest="openface_file",
        action="append",
        default=[],
        metavar="FILE",
        help="OpenFace alias of --input for a video file",
    )
    p.add_argument(
        "-fdir",
        dest="openface_dir",
        action="append",
        default=[],
        metavar="DIR",
        help="OpenFace alias of --input for a folder of one video's frames (FeatureExtraction's: as --sequence)",
    )
    p.add_argument(
        "-device",
        dest="openface_device",
        action="append",
        default=[],
        type=CAMERA,
        metavar="N",
        help="OpenFace alias of --input for webcam N",
    )


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", help="CSV path (one input only); default OUT_DIR/<input name>.csv")
    p.add_argument(
        "--out-dir",
        "-out_dir",
        dest="out_dir",
        default=None,
        help=f"folder for CSVs and plots (default {DEFAULT_OUT_DIR}/)",
    )
    p.add_argument(
        "--plot",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="write the AU timeline PNG (default path OUT_DIR/<input name>_timeline.png)",
    )
    p.add_argument(
        "--overlay",
        nargs="?",
        const="",
        default=None,
        metavar="VIDEO",
        help="write the overlay video: face box, eye points, AU bars (.mp4, or .mkv/.avi lossless; "
        "default path OUT_DIR/<input name>_overlay.mp4)",
    )
    p.add_argument(
        "--show",
        action="store_true",
        help="show the overlay in a window as it runs (needs a display and a non-headless OpenCV)",
    )
    p.add_argument(
        "--format",
        dest="csv_format",
        choices=CSV_FORMATS,
        default=DEFAULT_CSV_FORMAT,
        help="CSV columns: openface (OpenFace 2's FeatureExtraction columns: AUs as _r and _c, and landmarks and "
        "head pose with --face dlib; the default) or ks (ours: every AU's _c and probability _p)",
    )
    p.add_argument(
        "--openface-separators",
        action="store_true",
        help="--format ks: write ', ' between CSV fields as OpenFace 2 does (default: no spaces; --format openface "
        "always writes ', ')",
    )
    p.add_argument(
        "--save-crops",
        "-simalign",
        dest="save_crops",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="save the aligned face crops the network read, frame_det_00_<frame>.png, and their landmarks in "
        "faces.jsonl (default folder OUT_DIR/<input name>_aligned, as OpenFace's -simalign)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--engine",
        default="ort",
        help="inference engine: ort (onnxruntime), ort-trt, trt, openvino (the INT8 encoder on the CPU), or triton "
        "(clips scored by a Triton server, --url)",
    )
    # The server is where engine triton runs: its address takes the device's place (create_engine).
    p.add_argument(
        "--url",
        dest="device",
        metavar="URL",
        help="--engine triton: the Triton server's gRPC address, HOST:PORT or grpc://HOST:PORT[/MODEL]",
    )
    p.add_argument(
        "--batch-size",
        type=BATCH,
        default=8,
        help=f"most frames per encoder batch (1..{MAX_BATCH_SIZE}; never more than a file input's frames)",
    )
    p.add_argument("--threads", type=THREADS, default=0, help="engine threads (0: the engine's default)")


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the encoder's precision: auto (FP32 on the CPU, FP16 on a GPU where the bundle has it), fp32, or int8 "
        "(the bundle's INT8 encoder, checked against FP32 on this CPU when it opens; FP32 with a warning if the "
        "check fails)",
    )
    p.add_argument(
        "--insist-int8",
        action="store_true",
        help="with --precision int8: refuse to run or serve (exit 1) rather than fall back to FP32 when the check "
        "fails",
    )


def _add_stream_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        choices=POLICIES,
        help="key-slot policy (default: the bundle's, `last` from ks-export: no look-ahead)",
    )
    p.add_argument(
        "--face",
        default="auto",
        choices=face_stage_names(),
        help="face stage: auto (default: aligned for square frames up to 256 px, else haar), aligned "
        "(frames are aligned crops), haar (OpenCV cascades), dlib (the dlib extra)",
    )
    p.add_argument(
        "--max-faces",
        type=MAX_FACES,
        help="the most faces scored a frame, a row each with its face_id, each face tracked as its own stream "
        "(0: every face; default: every face in images, the largest in a video, as OpenFace)",
    )
    p.add_argument("--max-wait-ms", type=WAIT_MS, default=10.0, help="longest a frame waits for its batch to fill (ms)")
    p.add_argument(
        "--sequence",
        action="store_true",
        help="an image folder is one video's frames, in natural order (default: each image is scored alone, as its "
        "own one-frame sequence)",
    )
    p.add_argument(
        "--fps",
        type=FPS,
        help=f"frame rate of an image folder read with --sequence (default 30, as OpenFace; (0, {MAX_FPS:g}])",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="replay the input at its frame rate, as a camera would deliver it (for latency figures)",
    )


def _add_corpus_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=WORKERS,
        default=1,
        metavar="N",
        help="run a corpus of videos (folders of videos, .txt lists of them, video files) over N worker processes, "
        "each opening the bundle once: a CSV per video, videos done before with this bundle skipped, failures "
        "listed at the end (default 1: one input after another, as without it)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the corpus on --workers actors of a Ray cluster (the ray extra): auto (the running cluster, else a "
        "local one) or the cluster's address",
    )


def with_subcommand(argv: Sequence[str]) -> list[str]:
    """The spellings from before the subcommands, as subcommands: `BUNDLE --input X` -> `run BUNDLE --input X`,
    `BUNDLE --policy-report ...` -> `report BUNDLE ...`. An argv that names a subcommand is left as it is."""
    argv = list(argv)
    default = DEFAULT_COMMAND
    rewritten = commandline.with_default_command(argv, COMMANDS, default)
    if rewritten != argv and LEGACY_REPORT_FLAG in argv:  # a subcommand put in front: the old spelling
        argv.remove(LEGACY_REPORT_FLAG)
        return commandline.with_default_command(argv, COMMANDS, "report")
    return rewritten


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return commandline.dispatch(build_parser(), with_subcommand(argv), HANDLED)


def input_stem(spec: str) -> str:
    """A file name for an input's outputs: the video's or folder's name, or the synthau spec's fields."""
    if spec.startswith("synthau:"):
        return re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
    if is_camera_spec(spec):
        return f"webcam{spec}"
    path = Path(spec)
    return (path.stem if path.suffix else path.name) or "input"


def bundle_and_inputs(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The bundle (positional or --bundle, once) and every input, the OpenFace aliases' included."""
    if args.bundle and args.bundle_pos:
        raise commandline.UsageError("give the bundle once: positional BUNDLE or --bundle")
    bundle = args.bundle or args.bundle_pos
    if not bundle:
        raise commandline.UsageError("a model bundle is required (BUNDLE or --bundle)")
    inputs = args.input + args.openface_file + args.openface_dir + [str(d) for d in args.openface_device]
    return bundle, inputs


def run_command(args: argparse.Namespace) -> int:
    bundle, inputs = bundle_and_inputs(args)
    if args.workers > 1 or args.ray is not None:
        return corpus_command(args, bundle, inputs)
    if args.csv and len(inputs) > 1:
        raise commandline.UsageError("--csv names one file; with several inputs use --out-dir")
    if args.overlay and len(inputs) > 1:
        raise commandline.UsageError(
            "--overlay VIDEO names one file; with several inputs give --overlay alone (OUT_DIR/...)"
        )
    if args.save_crops and len(inputs) > 1:
        raise commandline.UsageError(
            "--save-crops DIR names one folder; with several inputs give --save-crops alone (OUT_DIR/..._aligned)"
        )
    if not inputs:
        raise commandline.UsageError(
            "no input: give --input PATH (or -f FILE / -fdir DIR; `ks-run report` for the policy report)"
        )
    _refuse_insist_without_int8(args)
    detector = Detector(bundle, **detector_options(args))
    if args.show:
        LiveView().close()  # no display: refused now, before any input is opened
    failed = 0
    for spec in inputs:
        failed += _run_input(args, detector, spec)
    return commandline.EXIT_ERROR if failed else commandline.EXIT_OK


def _refuse_insist_without_int8(args: argparse.Namespace) -> None:
    if args.insist_int8 and args.precision != "int8":
        raise commandline.UsageError("--insist-int8 insists on INT8: give it with --precision int8")


def detector_options(args: argparse.Namespace) -> dict:
    """The Detector's keyword arguments from the flags."""
    return {
        "device": args.device,
        "engine": args.engine,
        "policy": args.policy,
        "face": args.face,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "max_wait_ms": args.max_wait_ms,
        "precision": args.precision,
        "insist_int8": args.insist_int8,
        "max_faces": args.max_faces,
    }


def corpus_command(args: argparse.Namespace, bundle: str, inputs: list[str]) -> int:
    """`--workers N` / `--ray ADDRESS`: every video through ks_runtime.corpus, each with the outputs a one-video run
    gives it; 1 when any video failed (each listed with its error), else 0."""
    refused = [message for name, message in NOT_IN_A_CORPUS.items() if getattr(args, name)]  # "": the default path
    if refused:
        raise commandline.UsageError(refused[0])
    if not inputs:
        raise commandline.UsageError("no input: give --input with a folder of videos, a .txt list of them, or videos")
    _refuse_insist_without_int8(args)
    videos = [corpus.Video(path, output_paths(args, str(path))) for path in corpus.list_videos(inputs)]
    sep = ", " if args.openface_separators else ","
    level = commandline.log_level(getattr(args, "verbose", False), commandline.quiet(args))
    job = corpus.CorpusJob.create(bundle, detector_options(args), args.csv_format, sep, log_level=level)
    quiet = args.no_progress or commandline.quiet(args)
    report = corpus.run_corpus(job, videos, args.workers, args.ray, progress=not quiet)
    for failure in report.failed:
        where = "" if failure.input in (failure.error or "") else f"{failure.input}: "
        print(commandline.error_line(args.command_parser.prog, f"{where}{failure.error}"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        commandline.summary(args, report.text())
    return commandline.EXIT_ERROR if report.failed else commandline.EXIT_OK


def output_paths(args: argparse.Namespace, spec: str) -> dict[str, Path | None]:
    """Where an input's CSV, timeline PNG, overlay video and aligned crops go (None: not asked for)."""
    out_dir = Path(args.out_dir or DEFAULT_OUT_DIR)
    stem = input_stem(spec)
    plot = overlay = crops = None
    if args.plot is not None:
        plot = Path(args.plot) if args.plot else out_dir / f"{stem}_timeline.png"
    if args.overlay is not None:
        overlay = Path(args.overlay) if args.overlay else out_dir / f"{stem}_overlay.mp4"
    if args.save_crops is not None:
        crops = Path(args.save_crops) if args.save_crops else out_dir / f"{stem}_aligned"
    csv = Path(args.csv) if args.csv else out_dir / f"{stem}.csv"
    return {"csv": csv, "plot": plot, "overlay": overlay, "crops": crops}


def _run_input(args: argparse.Namespace, detector: Detector, spec: str) -> int:
    """One input through the detector: 0 (its warnings, such as a video shorter than its container says, are in
    the summary and the log), or 1 after printing its error line (the next input still runs)."""
    outputs = output_paths(args, spec)
    detector.summary = None
    try:
        # FeatureExtraction's -fdir is a video's frames; --input images are pictures of their own unless --sequence.
        source = detector.open(spec, fps=args.fps, sequence=args.sequence or spec in args.openface_dir)
        if args.realtime and not source.live:  # a camera is real time already
            source = Paced(source)
        table = detector.detect(
            source,
            csv=outputs["csv"],
            plot=outputs["plot"],
            overlay=outputs["overlay"],
            progress=not (args.no_progress or commandline.quiet(args)),
            csv_sep=", " if args.openface_separators else ",",
            show=args.show,
            csv_format=args.csv_format,
            save_crops=outputs["crops"],
        )
    except KSError as error:
        _print_summary(args, spec, detector, outputs)
        print(commandline.error_line(args.command_parser.prog, error), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # how a webcam run ends: what was processed is written and summed up
        _print_summary(args, spec, detector, outputs)
        raise
    _print_summary(args, spec, detector, outputs)
    failure = table.attrs.get("error")  # a failure part-way: the rows before it are written
    if failure is not None:
        print(commandline.error_line(args.command_parser.prog, failure), file=sys.stderr, flush=True)
        return 1
    return 0


def _print_summary(args: argparse.Namespace, spec: str, detector: Detector, outputs: dict[str, Path | None]) -> None:
    summary = detector.summary
    if summary is None:
        return
    if args.json:  # the output asked for: printed under -q too
        print(
            json.dumps({"input": spec, **{k: str(v) if v else None for k, v in outputs.items()}, **summary.to_dict()})
        )
        return
    written = ", ".join(f"{name} -> {path}" for name, path in outputs.items() if path and name != "csv")
    commandline.summary(
        args,
        f"{spec}: {summary.frames} rows -> {outputs['csv']}"
        + (f", {written}" if written else "")
        + "\n"
        + summary.text(),
    )


def report_command(args: argparse.Namespace) -> int:
    # deferred: onnxruntime (the cpu/gpu extra), which ks_runtime.engine.ort_graphs imports at its top
    from ks_runtime.tools.policy_report import policy_report

    bundle, inputs = bundle_and_inputs(args)
    report = policy_report(
        bundle,
        inputs or None,
        device=args.device,
        engine=args.engine,
        batch_size=args.batch_size,
        threads=args.threads,
        max_sequences=args.report_sequences,
        latency_frames=args.report_latency_frames,
        progress=not (args.no_progress or commandline.quiet(args)),
    )
    text = report.markdown()
    print(text)
    if args.report_out:
        Path(args.report_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report_out).write_text(text + "\n")
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
