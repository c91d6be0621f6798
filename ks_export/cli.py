"""`ks-export`: export a checkpoint to a verified model bundle, or re-verify a bundle.

    ks-export export CKPT --out bundles/demo [--int8 [--calib N]] [--triton] [--fp16] [--trt] [--opset N]
    ks-export verify bundles/demo

`export` is the default: the spelling from before the subcommands, `ks-export --ckpt CKPT --out DIR ...`, is
`ks-export export --ckpt CKPT --out DIR ...`. Every bundle carries trt/build_engines.sh, the trtexec commands
that build its TensorRT engines on the target. -v: debug logging; -q: warnings only, no progress bar and no
report. Exit codes: 0 done, 1 an error (checkpoint, export, bundle), 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ks_runtime import commandline
from ks_runtime.core.policy import POLICIES

PROG = "ks-export"
COMMANDS = ("export", "verify")
DEFAULT_COMMAND = "export"
EXPORT_DESCRIPTION = (
    "Export a Knowledge-Spreader checkpoint to a verified ONNX model bundle (encoder.onnx, "
    "head.onnx, clip.onnx, manifest.json)."
)
VERIFY_DESCRIPTION = "Re-check a model bundle: hashes, fields, graphs, tensor shapes, and one inference."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commandline.add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_export_arguments(
        commandline.add_command(
            sub,
            "export",
            export_command,
            help="export a checkpoint to a verified bundle (default)",
            description=EXPORT_DESCRIPTION,
        )
    )
    add_verify_arguments(
        commandline.add_command(sub, "verify", verify_command, help="re-check a bundle", description=VERIFY_DESCRIPTION)
    )
    return parser


def export_parser() -> argparse.ArgumentParser:
    """`ks-export export`'s arguments alone, as a parser of its own."""
    parser = argparse.ArgumentParser(prog=f"{PROG} export", description=EXPORT_DESCRIPTION)
    add_export_arguments(parser)
    commandline.add_common_flags(parser, version=False)
    parser.set_defaults(run=export_command, command_parser=parser)
    return parser


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ckpt_pos", nargs="?", metavar="CKPT", help="checkpoint file, or a run folder (best.pt, else last.pt)"
    )
    parser.add_argument("--ckpt", help="the checkpoint (instead of the positional CKPT)")
    parser.add_argument(
        "--out",
        required=True,
        help="bundle folder to write (a bundle already there is replaced; one holding files its manifest does not "
        "list needs --force)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the bundle at --out even when it holds files its manifest does not list (they are deleted)",
    )
    parser.add_argument("--int8", action="store_true", help="add the INT8 encoder variant (static QDQ)")
    parser.add_argument(
        "--calib",
        type=int,
        default=None,
        metavar="N",
        help="calibration frames for --int8 (default 256, from the training part)",
    )
    parser.add_argument("--triton", action="store_true", help="add a Triton model repository (triton/ks_clip)")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="add FP16 variants of the graphs for GPU providers, verified against FP32 on the CPU",
    )
    parser.add_argument(
        "--trt",
        action="store_true",
        help="TensorRT engines for this GPU (needs tensorrt and a GPU; implies --fp16; with --int8 "
        "also the symmetric Q/DQ encoder TensorRT takes). The trtexec recipe is always written",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "legacy"),
        default="dynamo",
        help="torch exporter; dynamo falls back to legacy on failure (default dynamo)",
    )
    parser.add_argument(
        "--policy",
        default=None,
        choices=POLICIES,
        help="key-slot policy of the test-fold F1 (default: the one training evaluated with)",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the test-fold F1 evaluation")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder")


def with_subcommand(argv: list[str]) -> list[str]:
    """The spelling from before the subcommands: `--ckpt C --out D ...` -> `export --ckpt C --out D ...`."""
    return commandline.with_default_command(argv, COMMANDS, DEFAULT_COMMAND)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return commandline.dispatch(build_parser(), with_subcommand(argv))


def export_command(args: argparse.Namespace) -> int:
    if args.ckpt and args.ckpt_pos:
        raise commandline.UsageError("give the checkpoint once: positional CKPT or --ckpt")
    ckpt = args.ckpt or args.ckpt_pos
    if not ckpt:
        raise commandline.UsageError("a checkpoint is required (CKPT or --ckpt)")
    if args.calib is not None and not args.int8:
        raise commandline.UsageError("--calib needs --int8")
    # --help, --version and a usage error answer in 0.2-0.4 s; importing ks_export.export takes 3-4 s more.
    # deferred: torch and onnx (the train and export extras)
    from ks_export.export import export_bundle

    calib = {"calib": args.calib} if args.calib else {}  # else export_bundle's default (DEFAULT_CALIB)
    report = export_bundle(
        ckpt,
        args.out,
        int8=args.int8,
        triton=args.triton,
        opset=args.opset,
        exporter=args.exporter,
        policy=args.policy,
        evaluate=not args.no_eval,
        progress=sys.stderr.isatty() and not commandline.quiet(args),
        fp16=args.fp16,
        trt=args.trt,
        force=args.force,
        **calib,
    )
    commandline.summary(args, report.text())
    return 0


def verify_command(args: argparse.Namespace) -> int:
    # deferred: torch and onnx (the train and export extras), as in export_command
    from ks_export.export import verify_bundle

    commandline.summary(args, verify_bundle(args.bundle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
