"""``python -m udf``: look at a UDF, or run one on InfluxDB line protocol.

::

    python -m udf info -- python examples/moving_avg.py
    python -m udf run -o field=usage_user -o size=10 examples/data/cpu.lp -- python examples/moving_avg.py

``info`` prints what the UDF wants and provides and its options; ``run`` starts
the UDF (a program after ``--``, ``--socket ADDR``, or ``--config FILE --function
NAME``), initializes it with ``-o NAME=VALUE`` options typed from its own info,
feeds it line protocol (files or stdin) as stream points or as batches, and
writes what it returns to stdout as line protocol. See docs/cli.md.

Exit codes: 0 success; 1 the UDF failed; 2 a usage error (command line, option,
configuration, input file); 3 a bad input line; 130 interrupted; 141 stdout closed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import time
from typing import IO, Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import agent_pb2

from . import config as udf_config
from .channel import Channel
from .convert import Info
from .errors import AgentClosedError, ChannelClosed, InitError, ProcessExitedError, UDFError
from .interface import Interface
from .lineprotocol import PRECISIONS, LineProtocolError, MissingExtraError, ParsedLine, format_line, read_lines
from .models import Batch, BatchPoint, Dimensions, Point

__all__ = [
    "main",
    "console_main",
    "CLIError",
    "parse_option_value",
    "build_options",
    "describe_options",
    "group_id",
    "Batcher",
    "EXIT_OK",
    "EXIT_UDF_FAILED",
    "EXIT_USAGE",
    "EXIT_BAD_INPUT",
]

EXIT_OK = 0
EXIT_UDF_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: TICKscript duration units the option parser accepts besides Go's.
_TICK_UNITS = {"u": 1_000, "\u00b5": 1_000, "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_TYPE_NAMES = {v: k for k, v in agent_pb2.ValueType.items()}
_EDGE_NAMES = {agent_pb2.STREAM: "stream", agent_pb2.BATCH: "batch"}


class CLIError(Exception):
    """An error the tool reports as ``udf: error: MESSAGE`` with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --- options ---------------------------------------------------------------------


def _type_name(value_type: int) -> str:
    return str(_TYPE_NAMES.get(value_type, f"ValueType({value_type})"))


def describe_options(info: Info) -> str:
    """The UDF's options as ``"as (STRING), size (INT)"``, sorted by name."""
    if not info.options:
        return "none"
    parts = []
    for name in sorted(info.options):
        types = ", ".join(_type_name(t) for t in info.options[name].valueTypes) or "no value"
        parts.append(f"{name} ({types})")
    return ", ".join(parts)


def parse_option_value(text: str, value_type: int) -> Any:
    """Type one option value from text: an ``agent_pb2.OptionValue``; ``ValueError`` saying why.

    INT: a decimal int64; DOUBLE: a decimal float (``1``, ``1.5``, ``2e-3``);
    BOOL: ``true``/``false`` (any case); STRING: the text as is; DURATION: a Go or
    TICKscript duration (``10s``, ``1m30s``, ``500ms``, ``1d``) sent as nanoseconds.
    """
    value = agent_pb2.OptionValue(type=value_type)
    if value_type == agent_pb2.STRING:
        value.stringValue = text
    elif value_type == agent_pb2.INT:
        if not _INT_RE.match(text):
            raise ValueError(f"{text!r} is not an INT (a decimal integer)")
        number = int(text)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"{text!r} does not fit in an INT (int64)")
        value.intValue = number
    elif value_type == agent_pb2.DOUBLE:
        if not _FLOAT_RE.match(text):
            raise ValueError(f"{text!r} is not a DOUBLE (a decimal number like 1.5)")
        value.doubleValue = float(text)
    elif value_type == agent_pb2.BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"{text!r} is not a BOOL (true or false)")
        value.boolValue = lowered == "true"
    elif value_type == agent_pb2.DURATION:
        try:
            value.durationValue = udf_config.parse_duration(text, _TICK_UNITS)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a DURATION (like 10s, 1m30s, 500ms): {exc}") from None
    else:
        raise ValueError(f"the UDF declares an unknown value type {value_type}")
    return value


def build_options(specs: Sequence[str], info: Info) -> List[Any]:
    """Turn ``-o NAME=VALUE`` specs into ``agent_pb2.Option``s typed from the UDF's ``info``.

    An option declaring several value types takes as many comma-separated values
    (the last one keeps any further commas); one declaring none is given as
    ``-o NAME``. A repeated ``-o`` sends the option again, as a repeated
    TICKscript property does. Raises :class:`CLIError` listing the UDF's options.
    """
    options = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        listing = f"the UDF's options are: {describe_options(info)}"
        if not name:
            raise CLIError(f"bad option {spec!r}: expected NAME=VALUE; {listing}")
        option_info = info.options.get(name)
        if option_info is None:
            raise CLIError(f"unknown option {name!r}; {listing}")
        types = list(option_info.valueTypes)
        if not types:
            if sep and text:
                raise CLIError(f"option {name!r} takes no value, got {text!r}; {listing}")
            options.append(agent_pb2.Option(name=name))
            continue
        if not sep:
            raise CLIError(f"option {name!r} needs a value: -o {name}=VALUE; {listing}")
        texts = [text] if len(types) == 1 else text.split(",", len(types) - 1)
        if len(texts) != len(types):
            raise CLIError(
                f"unexpected number of args to {name}, got {len(texts)} expected {len(types)}"
                f" (comma-separated {', '.join(_type_name(t) for t in types)}); {listing}"
            )
        values = []
        for value_text, value_type in zip(texts, types):
            try:
                values.append(parse_option_value(value_text, value_type))
            except ValueError as exc:
                raise CLIError(f"option {name!r}: {exc}; {listing}") from None
        options.append(agent_pb2.Option(name=name, values=values))
    return options


# --- grouping and batching -----------------------------------------------------------


def group_id(name: str, tags: Dict[str, str], tag_names: Sequence[str], by_name: bool = True) -> str:
    """Kapacitor's group ID (``models.ToGroupID``): ``name\\nk1=v1,k2=v2`` with sorted tag names."""
    if not tag_names:
        return name if by_name else ""
    dims = ",".join(f"{k}={tags.get(k, '')}" for k in tag_names)
    return f"{name}\n{dims}" if by_name else dims


def _dimensions(tags: Dict[str, str], group_by: Optional[List[str]]) -> List[str]:
    """Sorted group-by tag names of a point: all its tags (``*``) or the chosen ones."""
    if group_by is None:
        return sorted(tags)
    return group_by


class Batcher:
    """Cut a sequence of points into batches per measurement and group.

    A group is a measurement and its group-by tags (all tags by default). Without
    limits a group's batch holds all its points and is emitted at the end (in
    order of first appearance); ``size`` emits a group's batch when it holds that
    many points; ``period`` (ns) cuts batches at epoch-aligned time windows: when
    a point of a later window arrives, every open batch is emitted.
    """

    def __init__(self, group_by: Optional[List[str]] = None, size: int = 0, period: int = 0) -> None:
        self._group_by = group_by
        self._size = size
        self._period = period
        self._open: Dict[str, Tuple[Batch, int]] = {}  # group ID -> (batch, window)
        self._window: Optional[int] = None

    def add(self, point: ParsedLine) -> List[Batch]:
        """Add one point; return the batches it completed."""
        assert point.time is not None
        done: List[Batch] = []
        window = point.time // self._period if self._period else 0
        if self._period and (self._window is None or window > self._window):
            if self._window is not None:
                done.extend(self.flush())
            self._window = window
        dims = _dimensions(point.tags, self._group_by)
        gid = group_id(point.measurement, point.tags, dims)
        entry = self._open.get(gid)
        if entry is not None and entry[1] != window:
            done.append(self._close(gid))
            entry = None
        if entry is None:
            batch = Batch(
                name=point.measurement,
                group=gid,
                by_name=True,
                tags={k: point.tags.get(k, "") for k in dims},
            )
            self._open[gid] = (batch, window)
        else:
            batch = entry[0]
        batch.points.append(BatchPoint(time=point.time, fields=point.fields, tags=point.tags))
        if point.time > batch.tmax or len(batch.points) == 1:
            batch.tmax = point.time
        if self._size and len(batch.points) >= self._size:
            done.append(self._close(gid))
        return done

    def _close(self, gid: str) -> Batch:
        return self._open.pop(gid)[0]

    def flush(self) -> List[Batch]:
        """Emit every open batch, in order of first appearance."""
        batches = [batch for batch, _ in self._open.values()]
        self._open.clear()
        return batches


def to_stream_point(point: ParsedLine, group_by: Optional[List[str]]) -> Point:
    """A parsed line as a stream :class:`Point` grouped like ``|from().groupBy(...)`` by measurement."""
    assert point.time is not None
    dims = _dimensions(point.tags, group_by)
    return Point(
        name=point.measurement,
        group=group_id(point.measurement, point.tags, dims),
        dimensions=Dimensions(by_name=True, tag_names=list(dims)),
        tags=point.tags,
        fields=point.fields,
        time=point.time,
    )


# --- output ------------------------------------------------------------------------


class _Output:
    """Line protocol to stdout from the drain threads: serialized, counted, failure-aware."""

    MAX_WARNINGS = 5

    def __init__(self, stream: IO[Any], logger: logging.Logger) -> None:
        binary = getattr(stream, "buffer", None)
        self._binary: Optional[BinaryIO] = binary if binary is not None else None
        self._text = stream
        self._logger = logger
        self._lock = threading.Lock()
        self.written = 0
        self.skipped = 0
        self.error: Optional[BaseException] = None

    def write_lines(self, lines: List[str]) -> None:
        if not lines or self.error is not None:
            return
        data = "\n".join(lines) + "\n"
        with self._lock:
            if self.error is not None:
                return
            try:
                if self._binary is not None:
                    self._binary.write(data.encode("utf-8"))
                else:
                    self._text.write(data)
                self.written += len(lines)
            except (OSError, ValueError) as exc:
                self.error = exc

    def flush(self) -> None:
        with self._lock:
            if self.error is not None:
                return
            try:
                if self._binary is not None:
                    self._binary.flush()
                self._text.flush()
            except (OSError, ValueError) as exc:
                self.error = exc

    def skip(self, reason: str) -> None:
        with self._lock:
            self.skipped += 1
            n = self.skipped
        if n <= self.MAX_WARNINGS:
            self._logger.warning("skipping an output point: %s", reason)

    def format_point(self, p: Point) -> Optional[str]:
        try:
            return format_line(p.name, p.tags, p.fields, p.time)
        except (TypeError, ValueError) as exc:
            self.skip(str(exc))
            return None

    def format_batch(self, b: Batch) -> List[str]:
        lines = []
        for bp in b.points:
            tags = {**b.tags, **bp.tags} if b.tags else bp.tags
            try:
                lines.append(format_line(b.name, tags, bp.fields, bp.time))
            except (TypeError, ValueError) as exc:
                self.skip(str(exc))
        return lines


def _drain(channel: Channel[Any], output: _Output, is_batch: bool, on_error: Any) -> None:
    """Write everything a UDF output channel delivers until it closes."""
    for item in channel:
        if is_batch:
            output.write_lines(output.format_batch(item))
        else:
            line = output.format_point(item)
            if line is not None:
                output.write_lines([line])
        if output.error is not None:
            on_error(output.error)
            # Keep draining (and discarding) so the UDF can always finish.
    output.flush()


# --- progress ----------------------------------------------------------------------


class _Progress:
    """A one-line progress report on stderr, rewritten in place at most every ``interval`` s."""

    def __init__(self, stream: IO[str], enabled: bool, interval: float = 0.5) -> None:
        self._stream = stream
        self.enabled = enabled
        self._interval = interval
        self._next = time.monotonic() + interval
        self._shown = False

    def _text(self, lines: int, sent: int, written: int) -> str:
        return f"udf: {lines:,} lines read, {sent:,} sent, {written:,} points written"

    def update(self, lines: int, sent: int, written: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        self._write("\r" + self._text(lines, sent, written) + "\x1b[K")
        self._shown = True

    def finish(self, lines: int, sent: int, written: int) -> None:
        if not self.enabled:
            return
        self._write("\r" + self._text(lines, sent, written) + ", done\x1b[K\n")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self.enabled = False


# --- the command line --------------------------------------------------------------


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
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        description="Run a Kapacitor UDF agent outside Kapacitor: inspect it, or feed it line protocol.",
        epilog="Exit codes: 0 ok, 1 UDF failed, 2 usage/option/config error, 3 bad input line.",
    )
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
        "--progress", dest="progress", action="store_true", default=None, help="always show progress"
    )
    prog_group.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    parser.set_defaults(_subparsers={"info": info, "run": run})
    return parser


def _parse_args(parser: _Parser, argv: List[str]) -> argparse.Namespace:
    """Parse ``argv``; a subcommand's options and inputs may be intermixed (``a.lp -o x=1 b.lp``)."""
    subparsers: Dict[str, _Parser] = parser.get_default("_subparsers")
    if argv and argv[0] in subparsers:
        args = subparsers[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --help, or an error naming the commands


def _split_command(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split at the first ``--``: the tool's arguments, then the UDF program and its arguments."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _make_logger(stderr: IO[str], verbose: bool, quiet: bool) -> Tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger("udf.cli")
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s! %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def _make_udf(args: argparse.Namespace, command: List[str], logger: logging.Logger) -> Interface:
    """The UDF the command line names, not yet opened."""
    sources = [bool(command), args.socket is not None, args.config is not None]
    if sum(sources) != 1:
        raise CLIError("name exactly one UDF: a program after --, --socket ADDR, or --config FILE --function NAME")
    if args.function is not None and args.config is None:
        raise CLIError("--function needs --config FILE")
    timeout_ns: Optional[int] = args.timeout
    connect = args.connect_timeout / 1e9
    if args.config is not None:
        try:
            conf = udf_config.load(args.config)
        except udf_config.ConfigError as exc:
            raise CLIError(str(exc)) from None
        if args.function is None:
            raise CLIError(f"--config needs --function NAME (configured UDFs: {', '.join(conf.names()) or 'none'})")
        try:
            function = conf.function(args.function)
        except udf_config.ConfigError as exc:
            raise CLIError(str(exc)) from None
        if timeout_ns is not None:
            function = dataclasses.replace(function, timeout=timeout_ns)
        return function.create(logger=logger, connect_timeout=connect)
    timeout = (10_000_000_000 if timeout_ns is None else timeout_ns) / 1e9
    if args.socket is not None:
        from .socket import Socket

        return Socket(args.socket, logger=logger, timeout=timeout, connect_timeout=connect)
    from .process import Process

    return Process(command[0], command[1:], logger=logger, timeout=timeout)


def _supervised(first: Interface, make: Callable[[], Interface], logger: logging.Logger) -> Interface:
    """``--restart``: a Supervisor whose first agent is ``first`` and whose later ones ``make()`` builds."""
    from .supervisor import Supervisor

    made = [first]
    return Supervisor(lambda: made.pop() if made else make(), logger=logger)


def _open_inputs(names: List[str], stdin: Any) -> List[Tuple[str, Any, bool]]:
    """Open every input up front: (name, binary stream, whether we close it)."""
    if not names:
        names = ["-"]
    opened: List[Tuple[str, Any, bool]] = []
    try:
        for name in names:
            if name == "-":
                stream = getattr(stdin, "buffer", stdin)
                opened.append(("<stdin>", stream, False))
            else:
                opened.append((name, open(name, "rb"), True))
    except OSError as exc:
        for _, stream, ours in opened:
            if ours:
                stream.close()
        raise CLIError(f"cannot read input: {exc.filename}: {exc.strerror}") from None
    return opened


def _print_info(info: Info, as_json: bool, out: IO[str]) -> None:
    if as_json:
        doc = {
            "wants": _EDGE_NAMES.get(info.wants, str(info.wants)),
            "provides": _EDGE_NAMES.get(info.provides, str(info.provides)),
            "options": {
                name: [_type_name(t) for t in info.options[name].valueTypes] for name in sorted(info.options)
            },
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return
    lines = [
        f"wants: {_EDGE_NAMES.get(info.wants, info.wants)}",
        f"provides: {_EDGE_NAMES.get(info.provides, info.provides)}",
    ]
    if info.options:
        lines.append("options:")
        width = max(len(name) for name in info.options)
        for name in sorted(info.options):
            types = ", ".join(_type_name(t) for t in info.options[name].valueTypes) or "(no value)"
            lines.append(f"  {name:<{width}}  {types}")
    else:
        lines.append("options: none")
    out.write("\n".join(lines) + "\n")
    out.flush()


class _Run:
    """One ``run``: feed the input, drain the output, snapshot, close."""

    def __init__(
        self,
        args: argparse.Namespace,
        udf: Interface,
        info: Info,
        stdout: IO[Any],
        stderr: IO[str],
        logger: logging.Logger,
    ) -> None:
        self.args = args
        self.udf = udf
        self.info = info
        self.logger = logger
        self.output = _Output(stdout, logger)
        enabled = args.progress if args.progress is not None else _isatty(stderr)
        self.progress = _Progress(stderr, enabled)
        self.lines = 0
        self.sent = 0
        self.group_by: Optional[List[str]] = None
        if args.group_by.strip() != "*":
            self.group_by = sorted({t.strip() for t in args.group_by.split(",") if t.strip()})
        self.batch_mode = info.wants == agent_pb2.BATCH
        self._threads: List[threading.Thread] = []

    def start_output(self) -> None:
        def failed(exc: BaseException) -> None:
            self.udf.abort(UDFError(f"write error: stdout: {exc}"))

        for name, channel, is_batch in (
            ("udf-cli-points", self.udf.point_out, False),
            ("udf-cli-batches", self.udf.batch_out, True),
        ):
            t = threading.Thread(target=_drain, args=(channel, self.output, is_batch, failed), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def join_output(self) -> None:
        for t in self._threads:
            t.join()

    def _send(self, inlet: Any, item: Any) -> bool:
        try:
            inlet.put(item)
        except ChannelClosed:
            return False  # the UDF stopped: close() says why
        self.sent += 1
        return True

    def feed(self, inputs: List[Tuple[str, Any, bool]]) -> None:
        """Send every input point (or batch); raise LineProtocolError at a bad line."""
        args = self.args
        batcher = Batcher(self.group_by, args.batch_size, args.batch_period) if self.batch_mode else None
        inlet = self.udf.batch_in if self.batch_mode else self.udf.point_in
        for source, stream, _ in inputs:
            for _, point in read_lines(_counting(stream, self), source, args.precision):
                if batcher is not None:
                    for batch in batcher.add(point):
                        if not self._send(inlet, batch):
                            return
                elif not self._send(inlet, to_stream_point(point, self.group_by)):
                    return
                if self.lines & 255 == 0:
                    self.progress.update(self.lines, self.sent, self.output.written)
        if batcher is not None:
            for batch in batcher.flush():
                if not self._send(inlet, batch):
                    return

    def snapshot(self, path: str) -> None:
        # The server writes a request behind the data already queued, so this
        # snapshot covers every point sent so far.
        data = self.udf.snapshot()
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise CLIError(f"cannot write snapshot: {exc.filename}: {exc.strerror}", EXIT_UDF_FAILED) from None
        self.logger.debug("saved a %d-byte snapshot to %s", len(data), path)


def _counting(stream: Iterable[bytes], run: _Run) -> Iterator[bytes]:
    for line in stream:
        run.lines += 1
        yield line


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _run_command(
    args: argparse.Namespace, command: List[str], stdin: Any, stdout: IO[Any], stderr: IO[str], logger: logging.Logger
) -> int:
    restore: Optional[bytes] = None
    inputs: List[Tuple[str, Any, bool]] = []
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
    udf = _make_udf(args, command, logger)
    if args.command == "run" and args.restart:
        udf = _supervised(udf, lambda: _make_udf(args, command, logger), logger)
    if args.command == "run":
        inputs = _open_inputs(args.inputs, stdin)
    try:
        return _converse(args, udf, restore, inputs, stdout, stderr, logger)
    finally:
        for _, stream, ours in inputs:
            if ours:
                stream.close()


def _converse(
    args: argparse.Namespace,
    udf: Interface,
    restore: Optional[bytes],
    inputs: List[Tuple[str, Any, bool]],
    stdout: IO[Any],
    stderr: IO[str],
    logger: logging.Logger,
) -> int:
    """Open the UDF, do the command, close the UDF exactly once whatever happens."""
    try:
        udf.open()
    except (UDFError, OSError) as exc:
        raise CLIError(f"cannot start the UDF: {exc}", EXIT_UDF_FAILED) from None
    closed = False
    run: Optional[_Run] = None

    def close() -> Optional[BaseException]:
        nonlocal closed
        if closed:
            return None
        closed = True
        try:
            udf.close()
        except (UDFError, OSError) as exc:
            return exc
        return None

    def give_up(err: BaseException) -> None:
        udf.abort(err)
        error = close()
        if error is not None:
            logger.debug("closing the UDF: %s", error)
        if run is not None:
            run.join_output()

    try:
        info = udf.info()
        if args.command == "info":
            _print_info(info, args.json, stdout)
            error = close()
            if error is not None:
                raise CLIError(_failure(error, logger), EXIT_UDF_FAILED)
            return EXIT_OK

        wants = _EDGE_NAMES.get(info.wants, str(info.wants))
        if (args.batch and info.wants != agent_pb2.BATCH) or (args.stream and info.wants != agent_pb2.STREAM):
            raise CLIError(f"{'--batch' if args.batch else '--stream'} given, but the UDF wants a {wants}")
        if info.wants != agent_pb2.BATCH and (args.batch_size or args.batch_period):
            raise CLIError(f"--batch-size/--batch-period apply to batch UDFs; this one wants a {wants}")
        options = build_options(args.options, info)
        try:
            udf.init(options)
        except InitError as exc:
            raise CLIError(f"{exc}; the UDF's options are: {describe_options(info)}", EXIT_USAGE) from None
        if restore is not None:
            udf.restore(restore)

        run = _Run(args, udf, info, stdout, stderr, logger)
        run.start_output()
        input_error: Optional[LineProtocolError] = None
        try:
            run.feed(inputs)
        except LineProtocolError as exc:
            input_error = exc  # stop feeding; what came before is still processed and written
        if input_error is None and args.snapshot_out is not None:
            run.snapshot(args.snapshot_out)
        close_error = close()
        run.join_output()
        run.output.flush()
        run.progress.finish(run.lines, run.sent, run.output.written)
        if run.output.skipped:
            logger.warning("skipped %d output points that line protocol cannot carry", run.output.skipped)
        if run.output.error is not None:
            if isinstance(run.output.error, BrokenPipeError):
                return EXIT_BROKEN_PIPE
            raise CLIError(f"cannot write output: {run.output.error}", EXIT_UDF_FAILED)
        if input_error is not None:
            if close_error is not None:
                _report(stderr, _failure(close_error, logger))
            raise CLIError(str(input_error), EXIT_BAD_INPUT)
        if close_error is not None:
            raise CLIError(_failure(close_error, logger), EXIT_UDF_FAILED)
        return EXIT_OK
    except CLIError as exc:
        give_up(UDFError(str(exc)))
        raise
    except UDFError as exc:
        # info/init/restore/snapshot failed, or the UDF died meanwhile.
        reason: BaseException = exc
        if isinstance(exc, AgentClosedError):
            # The agent is exiting: its exit status (and stderr) says more.
            reason = close() or exc
            if run is not None:
                run.join_output()
        else:
            give_up(exc)
        raise CLIError(_failure(reason, logger), EXIT_UDF_FAILED) from None
    except BaseException as exc:
        give_up(UDFError(f"interrupted: {type(exc).__name__}"))
        raise


def _failure(err: BaseException, logger: logging.Logger) -> str:
    """``the UDF failed: ...``; a dead process's stderr tail only if its lines were not shown live."""
    text = str(err)
    if isinstance(err, ProcessExitedError) and logger.isEnabledFor(logging.INFO):
        text = text.split("\n", 1)[0]  # its stderr was logged line by line as it came
    return f"the UDF failed: {text}"


def _report(stderr: IO[str], message: str) -> None:
    try:
        stderr.write(f"udf: error: {message}\n")
        stderr.flush()
    except (OSError, ValueError):
        pass


def _prog_name() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "__main__.py", "-c") or argv0.endswith(".py"):
        return "python -m udf"
    return argv0


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdin: Any = None,
    stdout: Optional[IO[Any]] = None,
    stderr: Optional[IO[str]] = None,
) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    ours, command = _split_command(argv)
    parser = _parser(_prog_name())
    try:
        try:
            args = _parse_args(parser, ours)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
    except CLIError as exc:
        _report(stderr, str(exc))
        return exc.code
    logger, handler = _make_logger(stderr, args.verbose, args.quiet)
    try:
        return _run_command(args, command, stdin, stdout, stderr, logger)
    except CLIError as exc:
        _report(stderr, str(exc))
        return exc.code
    except MissingExtraError as exc:  # installed without the "cli" extra
        _report(stderr, str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _report(stderr, "interrupted")
        return EXIT_INTERRUPTED
    finally:
        logger.removeHandler(handler)


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
