"""`ks-run`: stream a video, a webcam, an image folder or a SynthAU sequence through a model bundle.

    ks-run BUNDLE --input video.mp4 [--csv out.csv] [--plot [out.png]] [--overlay [out.mp4]] [--policy last|...]
    ks-run BUNDLE --input 0 --show                                 (webcam 0, live window; q or Esc stops)
    ks-run --bundle BUNDLE -f video.mp4 -out_dir processed        (OpenFace's FeatureExtraction flags; -device 0)
    ks-run BUNDLE --policy-report                                  (accuracy and latency of every policy)

Writes the OpenFace-compatible CSV (by default processed/<input name>.csv, as OpenFace does), optionally
the AU timeline PNG and the overlay video, and prints a summary (with the frames a webcam dropped when the
engine fell behind; Ctrl-C ends a webcam run and still prints it). Faces: `--face auto` (default) takes
square frames of at most 256 px as aligned crops and runs the Haar detector on anything else.
Exit codes: 0 done, 1 an error (bad input, bundle, device), 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from ks_runtime.core.errors import KSError
from ks_runtime.core.policy import POLICIES
from ks_runtime.faces.registry import face_stage_names
from ks_runtime.io.sources import is_camera_spec

log = logging.getLogger("ks_runtime.cli")

DEFAULT_OUT_DIR = "processed"  # OpenFace's FeatureExtraction default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ks-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle_pos", nargs="?", metavar="BUNDLE", help="model bundle folder written by ks-export")
    p.add_argument("--bundle", help="model bundle folder (instead of the positional BUNDLE)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                   help="video file, webcam index (0), image folder, or synthau:SIZE:SUBJECT:TASK (repeatable)")
    p.add_argument("-f", dest="openface_file", action="append", default=[], metavar="FILE",
                   help="OpenFace alias of --input for a video file")
    p.add_argument("-fdir", dest="openface_dir", action="append", default=[], metavar="DIR",
                   help="OpenFace alias of --input for an image folder")
    p.add_argument("-device", dest="openface_device", action="append", default=[], type=int, metavar="N",
                   help="OpenFace alias of --input for webcam N")
    p.add_argument("--csv", help="CSV path (one input only); default OUT_DIR/<input name>.csv")
    p.add_argument("--out-dir", "-out_dir", dest="out_dir", default=None,
                   help=f"folder for CSVs and plots (default {DEFAULT_OUT_DIR}/)")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="write the AU timeline PNG (default path OUT_DIR/<input name>_timeline.png)")
    p.add_argument("--overlay", nargs="?", const="", default=None, metavar="VIDEO",
                   help="write the overlay video: face box, eye points, AU bars (.mp4, or .mkv/.avi lossless; "
                        "default path OUT_DIR/<input name>_overlay.mp4)")
    p.add_argument("--show", action="store_true",
                   help="show the overlay in a window as it runs (needs a display and a non-headless OpenCV)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--engine", default="ort", help="inference engine: ort (onnxruntime) or trt")
    p.add_argument("--policy", choices=POLICIES,
                   help="key-slot policy (default: the bundle's, `last` from ks-export: no look-ahead)")
    p.add_argument("--face", default="auto", choices=face_stage_names(),
                   help="face stage: auto (default: aligned for square frames up to 256 px, else haar), aligned "
                        "(frames are aligned crops), haar (OpenCV cascades), dlib (the dlib extra)")
    p.add_argument("--batch-size", type=int, default=8, help="most frames per encoder batch")
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the engine's default)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="longest a frame waits for its batch to fill")
    p.add_argument("--fps", type=float, help="frame rate of an image folder (default 30, as OpenFace)")
    p.add_argument("--realtime", action="store_true",
                   help="replay the input at its frame rate, as a camera would deliver it (for latency figures)")
    p.add_argument("--openface-separators", action="store_true",
                   help="write ', ' between CSV fields as OpenFace 2 does (default: no spaces)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--policy-report", action="store_true",
                   help="run every key-slot policy on SynthAU (default: the bundle's held-out test part) and print "
                        "the accuracy and latency table")
    p.add_argument("--report-sequences", type=int, default=0,
                   help="--policy-report: use only the first N test sequences (0: all)")
    p.add_argument("--report-latency-frames", type=int, default=0,
                   help="--policy-report: replay only the first N frames of the first sequence for latency (0: all)")
    p.add_argument("--report-out", help="--policy-report: also write the table (Markdown) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def input_stem(spec: str) -> str:
    """A file name for an input's outputs: the video's or folder's name, or the synthau spec's fields."""
    if spec.startswith("synthau:"):
        return re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
    if is_camera_spec(spec):
        return f"webcam{spec}"
    path = Path(spec)
    return (path.stem if path.suffix else path.name) or "input"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    bundle = args.bundle or args.bundle_pos
    if args.bundle and args.bundle_pos:
        parser.error("give the bundle once: positional BUNDLE or --bundle")
    if not bundle:
        parser.error("a model bundle is required (BUNDLE or --bundle)")
    inputs = args.input + args.openface_file + args.openface_dir + [str(d) for d in args.openface_device]
    if args.csv and len(inputs) > 1:
        parser.error("--csv names one file; with several inputs use --out-dir")
    if args.overlay and len(inputs) > 1:
        parser.error("--overlay VIDEO names one file; with several inputs give --overlay alone (OUT_DIR/...)")
    if not inputs and not args.policy_report:
        parser.error("no input: give --input PATH (or -f FILE / -fdir DIR, or --policy-report)")
    try:
        if args.policy_report:
            return _policy_report(args, bundle, inputs)
        return _run_inputs(args, bundle, inputs)
    except (KSError, OSError) as error:
        print(f"ks-run: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ks-run: interrupted", file=sys.stderr)
        return 130


def _run_inputs(args: argparse.Namespace, bundle: str, inputs: list[str]) -> int:
    from ks_runtime.detector import Detector
    from ks_runtime.io.live_view import LiveView
    from ks_runtime.io.sources import Paced

    detector = Detector(bundle, device=args.device, engine=args.engine, policy=args.policy, face=args.face,
                        batch_size=args.batch_size, threads=args.threads, max_wait_ms=args.max_wait_ms)
    if args.show:
        LiveView().close()  # no display: refused now, before any input is opened
    out_dir = Path(args.out_dir or DEFAULT_OUT_DIR)
    failed = 0
    for spec in inputs:
        stem = input_stem(spec)
        csv = Path(args.csv) if args.csv else out_dir / f"{stem}.csv"
        plot = overlay = None
        if args.plot is not None:
            plot = Path(args.plot) if args.plot else out_dir / f"{stem}_timeline.png"
        if args.overlay is not None:
            overlay = Path(args.overlay) if args.overlay else out_dir / f"{stem}_overlay.mp4"
        outputs = {"csv": csv, "plot": plot, "overlay": overlay}
        detector.summary = None
        try:
            source = detector.open(spec, fps=args.fps)
            if args.realtime and not source.live:  # a camera is real time already
                source = Paced(source)
            detector.detect(source, csv=csv, plot=plot, progress=not args.no_progress,
                            csv_sep=", " if args.openface_separators else ",", overlay=overlay, show=args.show)
        except KSError as error:
            failed += 1
            _print_summary(args, spec, detector, outputs)
            print(f"ks-run: error: {error}", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # how a webcam run ends: what was processed is written and summed up
            _print_summary(args, spec, detector, outputs)
            raise
        _print_summary(args, spec, detector, outputs)
    return 1 if failed else 0


def _print_summary(args: argparse.Namespace, spec: str, detector, outputs: dict[str, Path | None]) -> None:
    summary = detector.summary
    if summary is None:
        return
    if args.json:
        print(json.dumps({"input": spec, **{k: str(v) if v else None for k, v in outputs.items()},
                          **summary.to_dict()}))
        return
    written = ", ".join(f"{name} -> {path}" for name, path in outputs.items() if path and name != "csv")
    print(f"{spec}: {summary.frames} rows -> {outputs['csv']}" + (f", {written}" if written else ""))
    print(summary.text())


def _policy_report(args: argparse.Namespace, bundle: str, inputs: list[str]) -> int:
    from ks_runtime.tools.policy_report import policy_report

    report = policy_report(bundle, inputs or None, device=args.device, engine=args.engine,
                           batch_size=args.batch_size, threads=args.threads, max_sequences=args.report_sequences,
                           latency_frames=args.report_latency_frames, progress=not args.no_progress)
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
