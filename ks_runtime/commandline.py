"""The prologue the three console scripts share (`ks-train`, `ks-export`, `ks-run`).

    add_common_flags(parser)    -v/--verbose (debug logging), -q/--quiet (warnings only, no summary), --version
    add_command(sub, name, run) a subcommand taking the same -v/-q after its name
    with_default_command(...)   the spellings from before the subcommands: the default subcommand put in front
    dispatch(parser, argv)      parse, set up logging, run the subcommand, and turn its failures into exit codes
    run_main(prog, fn)          the exit codes alone: a KSError is one line on stderr and exit 1, Ctrl-C exits 130

Exit codes: 0 done, 1 an error the user can act on (the message names the file or field), 2 bad arguments
(argparse's), 130 interrupted. Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from ks_runtime import __version__
from ks_runtime.core.errors import KSError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# -v turns on the debug records of our own packages; other libraries' stay at INFO (matplotlib and PIL's debug
# records are pages of font and PNG chunk lines)
OUR_LOGGERS = ("ks_runtime", "ks_train", "ks_export", "cpp_ext")
VERBOSE_FLAGS = ("-v", "--verbose")
QUIET_FLAGS = ("-q", "--quiet")
TOP_LEVEL_ONLY = ("-h", "--help", "--version")

Handled = tuple[type[BaseException], ...]


class UsageError(Exception):
    """Arguments argparse accepted one by one but that do not go together: exit 2 with the subcommand's usage."""


def add_common_flags(parser: argparse.ArgumentParser, *, top: bool = True, version: bool = True) -> None:
    """-v/--verbose and -q/--quiet, and on a program's top parser --version.

    A subcommand's copies default to SUPPRESS, so that `ks-train -v fit` keeps the -v given before the
    subcommand's name (argparse would otherwise overwrite it with the subcommand's default)."""
    default = False if top else argparse.SUPPRESS
    group = parser.add_argument_group("output")
    group.add_argument(*VERBOSE_FLAGS, action="store_true", default=default, help="debug logging")
    group.add_argument(
        *QUIET_FLAGS,
        action="store_true",
        default=default,
        help="warnings and errors only: no info logging, no progress bar, no summary",
    )
    if top and version:
        group.add_argument(
            "--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit"
        )


def add_command(
    sub: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int | None], **kwargs
) -> argparse.ArgumentParser:
    """A subcommand's parser: `run(args)` runs it; it takes -v/-q after its name as well as before."""
    parser = sub.add_parser(name, **kwargs)
    add_common_flags(parser, top=False)
    parser.set_defaults(run=run, command_parser=parser)
    return parser


def with_default_command(argv: Sequence[str], commands: Iterable[str], default: str) -> list[str]:
    """`argv` with `default` put before its first argument that is not -v/-q, unless that argument already
    names a subcommand or asks for the program's help or version: how a spelling from before the subcommands
    (`ks-export --ckpt C --out D`, `ks-run BUNDLE --input X`) reaches the subcommand that does it now."""
    argv = list(argv)
    at = next((i for i, arg in enumerate(argv) if arg not in VERBOSE_FLAGS + QUIET_FLAGS), len(argv))
    if at < len(argv) and (argv[at] in set(commands) or argv[at] in TOP_LEVEL_ONLY):
        return argv
    return argv[:at] + [default] + argv[at:]


def number_in(kind: type, low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse `type` for a number flag: the value as `kind` (int or float), or an error that argparse puts after
    the flag's name, with the value and the allowed range (exit 2 before anything is opened). NaN is refused."""
    allowed = f"{low}..{high}" if kind is int else f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}; allowed: {allowed}"
            ) from None
        if not ((low < value) if low_open else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {allowed}")
        return value

    parse.__name__ = kind.__name__  # what argparse calls the type in its own messages
    return parse


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def summary(args: argparse.Namespace, text: str) -> None:
    """Print a summary line (or block) unless -q asked for none."""
    if not quiet(args):
        print(text, flush=True)


def log_level(verbose: bool = False, quiet: bool = False) -> int:
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


@contextmanager
def logging_configured(level: int) -> Iterator[None]:
    """Log records of `level` and above to stderr (our packages' debug records too with DEBUG); the previous
    levels come back afterwards, for a `main()` called in-process (tests, benchmarks)."""
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in OUR_LOGGERS]
    before = [root.level] + [logger.level for logger in ours]
    logging.basicConfig(format=LOG_FORMAT)  # a stderr handler, unless the root logger has one already
    root.setLevel(max(level, logging.INFO))
    for logger in ours:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in zip([root, *ours], before, strict=True):
            logger.setLevel(previous)


def error_line(prog: str, error: BaseException) -> str:
    return f"{prog}: error: {error}"


def run_main(prog: str, fn: Callable[[], int | None], handled: Handled = (KSError,)) -> int:
    """`fn()`'s exit status; an error of a `handled` type becomes one line on stderr and 1, Ctrl-C 130."""
    try:
        return int(fn() or 0)
    except handled as error:
        print(error_line(prog, error), file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None, handled: Handled = (KSError,)) -> int:
    """Parse `argv` (default: sys.argv[1:]) with a parser whose subcommands come from `add_command`, then run
    the subcommand under the logging -v/-q ask for and with `run_main`'s exit codes."""
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    verbose, quiet_ = bool(getattr(args, "verbose", False)), quiet(args)
    if verbose and quiet_:
        command_parser.error("-v/--verbose and -q/--quiet contradict each other: give one")
    with logging_configured(log_level(verbose, quiet_)):
        try:
            return run_main(command_parser.prog, lambda: args.run(args), handled)
        except UsageError as error:
            command_parser.error(str(error))
    return EXIT_USAGE  # not reached: error() exits
