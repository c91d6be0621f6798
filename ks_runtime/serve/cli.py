"""`ks-serve`: a model bundle behind a web page and an API, in one process (docs/serving.md).

    ks-serve BUNDLE                                   http://127.0.0.1:8000/ : the camera page
    ks-serve BUNDLE --host 0.0.0.0 --token SECRET     reachable from other machines: a token is then required
    ks-serve BUNDLE --policy center --max-streams 4 --max-fps 30
    ks-serve BUNDLE --engine triton --url triton-host:8001    clips scored by a Triton server (docs/serving.md)

Beyond the loopback interface every request needs the token (--token, or the KS_SERVE_TOKEN environment
variable); without one ks-serve refuses to start there. The token is written as token=*** in uvicorn's logs.
Exit codes: 0 stopped (Ctrl-C while serving: uvicorn shuts down and returns), 1 an error (bundle, device, a missing
token), 2 bad arguments, 130 Ctrl-C before serving (the bundle loading); on SIGTERM uvicorn shuts down the same way,
then ends the process by that signal (143 in a shell).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

import uvicorn

from ks_runtime import commandline
from ks_runtime.cli import add_engine_flags, add_precision_flags, detector_options
from ks_runtime.core.errors import ConfigError, KSError
from ks_runtime.core.policy import POLICIES
from ks_runtime.detector import Detector
from ks_runtime.faces.registry import face_stage_names
from ks_runtime.serve.app import create_app
from ks_runtime.serve.protocol import LIMIT_RANGES, Limits
from ks_runtime.serve.redact import redact_uvicorn_logs
from ks_runtime.serve.service import StreamService
from ks_runtime.stream import LIMITS as STREAM_LIMITS

PROG = "ks-serve"
TOKEN_ENV = "KS_SERVE_TOKEN"
LOCAL_NAMES = ("localhost",)
DEFAULT_QUEUE_SIZE = 4  # frames a stream may have waiting before its oldest is dropped: ~130 ms of a 30 fps camera
# Past this many times max_frame_bytes, uvicorn closes the connection (1009) instead of the server answering.
WS_MESSAGE_SLACK = 4
HANDLED = (KSError, OSError)


def _limit_type(name: str, kind: type):
    low, high = LIMIT_RANGES[name]
    return commandline.number_in(kind, kind(low), kind(high))


def _stream_type(name: str, kind: type):
    low, high = STREAM_LIMITS[name]
    return commandline.number_in(kind, kind(low), kind(high))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commandline.add_common_flags(parser)
    parser.add_argument("bundle", metavar="BUNDLE", help="model bundle folder written by ks-export")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=commandline.number_in(int, 0, 65535), default=8000, help="port (default 8000)")
    parser.add_argument(
        "--token", help=f"token every request must carry (default: ${TOKEN_ENV}); required off loopback"
    )
    parser.add_argument("--record", metavar="DIR", help="save each decoded frame as PNG, DIR/<session>/frame_N.png")
    _add_model_flags(parser)
    _add_limit_flags(parser)
    return parser


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", choices=POLICIES, help="key-slot policy (default: the bundle's)")
    p.add_argument("--face", default="auto", choices=face_stage_names(), help="face stage (default auto)")
    p.add_argument("--max-faces", type=commandline.number_in(int, 0, 1024), help="most faces scored a frame (0: all)")
    add_engine_flags(p)  # --device, --engine, --url, --batch-size, --threads: ks-run's
    add_precision_flags(p)
    p.add_argument(
        "--max-wait-ms", type=_stream_type("max_wait_ms", float), default=10.0, help="longest a frame waits for a batch"
    )
    p.add_argument(
        "--queue-size",
        type=_stream_type("queue_size", int),
        default=DEFAULT_QUEUE_SIZE,
        help=f"frames a stream may have waiting; past it the oldest is dropped (default {DEFAULT_QUEUE_SIZE})",
    )


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    defaults = Limits()
    p.add_argument("--max-streams", type=_limit_type("max_streams", int), default=defaults.max_streams)
    p.add_argument(
        "--max-frame-bytes",
        type=_limit_type("max_frame_bytes", int),
        default=defaults.max_frame_bytes,
        help="largest encoded frame",
    )
    p.add_argument("--max-side", type=_limit_type("max_side", int), default=defaults.max_side, help="pixels")
    p.add_argument(
        "--max-fps", type=_limit_type("max_fps", float), default=defaults.max_fps, help="frames per second per stream"
    )
    p.add_argument("--max-video-bytes", type=_limit_type("max_video_bytes", int), default=defaults.max_video_bytes)
    p.add_argument(
        "--video-jobs", type=_limit_type("video_jobs", int), default=defaults.video_jobs, help="videos scored at once"
    )


def is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond the loopback interface without a token: the camera stream is a face."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is reachable from other machines: give --token TOKEN (or set {TOKEN_ENV}) so that "
            "only clients with it can stream, or listen on 127.0.0.1"
        )


def serve(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, token)  # before the bundle is opened: the mistake costs nothing
    limits = Limits(
        max_streams=args.max_streams,
        max_frame_bytes=args.max_frame_bytes,
        max_side=args.max_side,
        max_fps=args.max_fps,
        max_video_bytes=args.max_video_bytes,
        video_jobs=args.video_jobs,
    )
    detector = Detector(args.bundle, queue_size=args.queue_size, **detector_options(args))  # as ks-run's flags
    app = create_app(StreamService(detector, limits, record=args.record), token)
    level = "debug" if args.verbose else "warning" if args.quiet else "info"
    redact_uvicorn_logs()  # /ws takes the token in its query string, which uvicorn logs
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=level, ws_max_size=WS_MESSAGE_SLACK * limits.max_frame_bytes
    )
    return commandline.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet contradict each other: give one")
    with commandline.logging_configured(commandline.log_level(args.verbose, args.quiet)):
        return commandline.run_main(PROG, lambda: serve(args), HANDLED)


if __name__ == "__main__":
    sys.exit(main())
