"""The ``dcsnas`` command.

Each subcommand lives in a module of :mod:`dcsnas.commands` that defines ``register(subparsers)``; the
modules are discovered here, so adding a command touches no shared file. Command modules import heavy
dependencies inside their handlers, so ``dcsnas --help`` stays fast.

User errors (:class:`~dcsnas.errors.DcsnasError`) print ``dcsnas: error: <message>`` and exit with 2 (an
error raised in a DataLoader worker arrives wrapped with the worker's traceback: only its message is
printed); so do the file system's errors (an ``OSError`` with an errno: read-only, no space left, no
permission), as one line naming the path and the cause. SIGINT and SIGTERM end the command with one line
and exit 130 and 143; checkpoints are written atomically, so the last one is intact.

Before any command imports torch, OpenMP's wait policy is made passive unless the user set one
(:mod:`dcsnas.utils.threads`: busy-waiting threads make a run many times slower beside other work).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import warnings

import dcsnas.commands as commands
from dcsnas import __version__
from dcsnas.errors import DcsnasError
from dcsnas.utils.threads import passive_openmp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcsnas",
        description="Person re-identification with self-attention and differentiable architecture search.",
    )
    parser.add_argument("--version", action="version", version=f"dcsnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(commands=sub.choices)  # name → parser: an unknown flag is reported with its command's usage
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"dcsnas.commands.{info.name}").register(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"dcsnas: warning: {message}\n"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and exit handlers run."""


def _terminate(signum, frame) -> None:
    raise Terminated


def error_message(exc: DcsnasError) -> str:
    """The user's message; for an error re-raised from a DataLoader worker, without the worker's traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return text


def os_error_message(exc: OSError) -> str:
    """``'<path>': <cause>`` of a file-system error (both paths of a rename), e.g. ``No space left on device``."""
    paths = " -> ".join(f"'{p}'" for p in (exc.filename, exc.filename2) if p is not None)
    cause = exc.strerror or str(exc)
    return f"{paths}: {cause}" if paths else f"file system error: {cause}"


def main(argv: list[str] | None = None) -> int:
    passive_openmp()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    warnings.formatwarning = _format_warning
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = args.func(args)
    except DcsnasError as exc:
        print(f"dcsnas: error: {error_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno is None:  # not the file system's: a bug, shown with its traceback
            raise
        print(f"dcsnas: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcsnas: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("dcsnas: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
