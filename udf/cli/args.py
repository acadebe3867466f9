"""The CLI's command line: ``info`` and ``run``, their options, and the UDF after ``--``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from .. import config as udf_config
from ..lineprotocol import PRECISIONS
from ..tls import add_tls_arguments
from .exits import EXIT_CODES, EXIT_USAGE, CLIError

__all__ = ["build_parser", "parse_args", "split_command", "prog_name"]


def _duration_arg(text: str) -> int:
    try:
        return udf_config.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become :class:`CLIError` (printed and mapped to exit 2 by main)."""

    def error(self, message: str) -> Any:
        raise CLIError(f"{message}\n{self.format_usage().rstrip()}", EXIT_USAGE)


def _add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the UDF (one of: a program after --, --socket, --config with --function)")
    g.add_argument("--socket", metavar="ADDR", help="connect to a UDF server: a unix socket path or tcp://host:port")
    g.add_argument("--config", metavar="FILE", help="a kapacitor.conf with [udf.functions.NAME] sections")
    g.add_argument("--function", metavar="NAME", help="the function of --config to run")
    g.add_argument(
        "--timeout",
        metavar="DURATION",
        type=_duration_arg,
        help="keepalive timeout, e.g. 10s; 0 disables (default: the config's, else 10s)",
    )
    g.add_argument(
        "--connect-timeout",
        metavar="DURATION",
        type=_duration_arg,
        default=10_000_000_000,
        help="how long to retry connecting to a socket (default 10s)",
    )
    add_tls_arguments(p, server_side=False)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors; no progress")


def build_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        description="Run a Kapacitor UDF agent outside Kapacitor: inspect it, or feed it line protocol.",
        epilog="Exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES) + ".",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    info = sub.add_parser(
        "info",
        help="print what the UDF wants and provides and its options",
        usage=f"{prog} info [options] (-- PROG [ARGS...] | --socket ADDR | --config FILE --function NAME)",
    )
    _add_source_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")

    run = sub.add_parser(
        "run",
        help="feed the UDF line protocol and print its output as line protocol",
        usage=(
            f"{prog} run [options] [-o NAME=VALUE]... [INPUT...] "
            "(-- PROG [ARGS...] | --socket ADDR | --config FILE --function NAME)"
        ),
    )
    _add_run_args(run)
    parser.set_defaults(_subparsers={"info": info, "run": run})
    return parser


def _add_run_args(run: _Parser) -> None:
    """The ``run`` subcommand's arguments."""
    _add_source_args(run)
    run.add_argument("inputs", nargs="*", metavar="INPUT", help="line protocol files; - or none: stdin")
    run.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a UDF option, typed from the UDF's info; several values comma-separated; repeatable",
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--batch", action="store_true", help="require a batch UDF (the mode follows the UDF's info)")
    mode.add_argument("--stream", action="store_true", help="require a stream UDF")
    run.add_argument(
        "--batch-size", type=_positive_int, default=0, metavar="N", help="emit a group's batch every N points"
    )
    run.add_argument(
        "--batch-period",
        type=_duration_arg,
        default=0,
        metavar="DURATION",
        help="cut batches at epoch-aligned time windows, e.g. 1m",
    )
    run.add_argument(
        "--group-by",
        default="*",
        metavar="TAGS",
        help="comma-separated tags that form a group (with the measurement); * all tags (default), '' none",
    )
    run.add_argument(
        "--precision",
        default="ns",
        choices=sorted(PRECISIONS, key=lambda k: (PRECISIONS[k], len(k))),
        help="timestamp unit of the input (default ns); output is always ns",
    )
    run.add_argument("--restore", metavar="FILE", help="restore this snapshot before the input")
    run.add_argument("--snapshot-out", metavar="FILE", help="save the UDF's snapshot here after the input")
    run.add_argument(
        "--restart",
        action="store_true",
        help="run the UDF under a udf.Supervisor: when it fails, restart it, restore its last snapshot "
        "and replay the input since (outputs may repeat); gives up after 5 restarts within 60s",
    )
    prog_group = run.add_mutually_exclusive_group()
    prog_group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr even when it is not a terminal or the input not a file",
    )
    prog_group.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")


def parse_args(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a subcommand's options and inputs may be intermixed (``a.lp -o x=1 b.lp``)."""
    subparsers: dict[str, _Parser] = parser.get_default("_subparsers")
    if argv and argv[0] in subparsers:
        args = subparsers[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --help, or an error naming the commands


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: the tool's arguments, then the UDF program and its arguments."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def prog_name() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "__main__.py", "-c") or argv0.endswith(".py"):
        return "python -m udf"
    return argv0
