"""The CLI's entry points: :func:`main` (testable, on given streams) and :func:`console_main`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from ..lineprotocol import MissingExtraError
from .args import build_parser, parse_args, prog_name, split_command
from .exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, CLIError
from .logs import make_logger
from .output import report
from .session import Input, Session, make_udf, open_inputs, supervised

__all__ = ["main", "console_main"]


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: Any = None,
    stdout: IO[Any] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    err_stream: IO[str] = sys.stderr if stderr is None else stderr
    ours, command = split_command(argv)
    parser = build_parser(prog_name())
    try:
        try:
            args = parse_args(parser, ours)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
    except CLIError as exc:
        report(err_stream, str(exc))
        return exc.code
    logger, handler = make_logger(err_stream, args.verbose, args.quiet)

    def report_error(message: str) -> None:
        handler.show_held(message)  # held log lines this message repeats are dropped
        report(err_stream, message)

    try:
        return _run_command(args, command, stdin, stdout, err_stream, logger, report_error)
    except CLIError as exc:
        report_error(str(exc))
        return exc.code
    except MissingExtraError as exc:  # installed without the "cli" extra
        report_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        report_error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        handler.show_held()
        logger.removeHandler(handler)


def _run_command(
    args: argparse.Namespace,
    command: list[str],
    stdin: Any,
    stdout: IO[Any],
    stderr: IO[str],
    logger: logging.Logger,
    report_error: Callable[[str], None],
) -> int:
    restore: bytes | None = None
    inputs: list[Input] = []
    if args.command == "run":
        if args.batch_size and args.batch_period:
            raise CLIError("use --batch-size or --batch-period, not both")
        if args.batch_period < 0:
            raise CLIError("--batch-period must be positive")
        if args.restore is not None:
            try:
                with open(args.restore, "rb") as f:
                    restore = f.read()
            except OSError as exc:
                raise CLIError(f"cannot read snapshot: {exc.filename}: {exc.strerror}") from None
    udf = make_udf(args, command, logger)
    if args.command == "run" and args.restart:
        udf = supervised(udf, lambda: make_udf(args, command, logger), logger)
    if args.command == "run":
        inputs = open_inputs(args.inputs, stdin)
    session = Session(
        args, udf, stdout=stdout, stderr=stderr, logger=logger, report=report_error, restore=restore, inputs=inputs
    )
    try:
        return session.run()
    finally:
        for _, stream, ours in inputs:
            if ours:
                stream.close()


def console_main() -> int:
    """Entry point of ``python -m udf`` and the console script: :func:`main` on the real streams."""
    code = main()
    if code == EXIT_BROKEN_PIPE:
        # stdout's reader went away: keep Python's final flush of stdout from complaining.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    return code
