"""`ks-export`: export a checkpoint to a verified model bundle, or re-verify a bundle.

    ks-export --ckpt runs/demo/ks --out bundles/demo [--int8 [--calib N]] [--triton] [--fp16] [--trt] [--opset N]
    ks-export verify bundles/demo

Every bundle carries trt/build_engines.sh, the trtexec commands that build its TensorRT engines on the target.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ks_runtime.core.errors import KSError
from ks_runtime.core.policy import POLICIES


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ks-export", description="Export a Knowledge-Spreader checkpoint to a verified ONNX model bundle "
        "(encoder.onnx, head.onnx, clip.onnx, manifest.json). `ks-export verify BUNDLE` re-checks a bundle.")
    parser.add_argument("--ckpt", required=True, help="checkpoint file, or a run folder (best.pt, else last.pt)")
    parser.add_argument("--out", required=True, help="bundle folder to write (a bundle already there is replaced)")
    parser.add_argument("--int8", action="store_true", help="add the INT8 encoder variant (static QDQ)")
    parser.add_argument("--calib", type=int, default=None, metavar="N",
                        help="calibration frames for --int8 (default 256, from the training part)")
    parser.add_argument("--triton", action="store_true", help="add a Triton model repository (triton/ks_clip)")
    parser.add_argument("--fp16", action="store_true",
                        help="add FP16 variants of the graphs for GPU providers, verified against FP32 on the CPU")
    parser.add_argument("--trt", action="store_true",
                        help="TensorRT engines for this GPU (needs tensorrt and a GPU; implies --fp16; with --int8 "
                             "also the symmetric Q/DQ encoder TensorRT takes). The trtexec recipe is always written")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                        help="torch exporter; dynamo falls back to legacy on failure (default dynamo)")
    parser.add_argument("--policy", default=None, choices=POLICIES,
                        help="key-slot policy of the test-fold F1 (default: the one training evaluated with)")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-fold F1 evaluation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ks-export verify", description="Re-check a model bundle: hashes, "
                                     "fields, graphs, tensor shapes, and one inference.")
    parser.add_argument("bundle", help="bundle folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verify = bool(argv) and argv[0] == "verify"
    if verify:
        args = verify_parser().parse_args(argv[1:])
    else:
        parser = export_parser()
        args = parser.parse_args(argv)
        if args.calib is not None and not args.int8:
            parser.error("--calib needs --int8")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    command = "verify" if verify else "export"
    try:
        if verify:
            from ks_export.export import verify_bundle

            print(verify_bundle(args.bundle))
        else:
            from ks_export.export import export_bundle
            from ks_export.quantize import DEFAULT_CALIB

            report = export_bundle(args.ckpt, args.out, int8=args.int8, triton=args.triton, opset=args.opset,
                                   calib=args.calib or DEFAULT_CALIB, exporter=args.exporter, policy=args.policy,
                                   evaluate=not args.no_eval, progress=sys.stderr.isatty(), fp16=args.fp16,
                                   trt=args.trt)
            print(report.text())
    except KSError as error:
        print(f"ks-export {command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ks-export {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
