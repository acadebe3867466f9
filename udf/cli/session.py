"""One conversation with the UDF: open it, do ``info`` or ``run``, close it exactly once.

:class:`Session` owns the UDF from ``open()`` on. Every way out -- success, a
usage error found after the UDF started, a UDF failure, Ctrl-C -- goes through
:meth:`Session.close`, which aborts the UDF first when giving up, closes it
once, and joins the threads writing its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import agent_pb2

from .. import config as udf_config
from ..address import TCP_PREFIX
from ..convert import Info
from ..errors import AgentClosedError, ChannelClosed, InitError, ProcessExitedError, UDFError
from ..interface import Interface
from ..lineprotocol import LineProtocolError, read_lines
from ..tls import context_from_arguments
from .batching import Batcher, to_stream_point
from .exits import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_OK, EXIT_UDF_FAILED, EXIT_USAGE, CLIError
from .options import build_options, describe_options
from .output import EDGE_NAMES, Output, drain, isatty, print_info
from .progress import UPDATE_EVERY, Progress, input_size, is_regular_file

__all__ = ["Session", "make_udf", "supervised", "open_inputs", "failure", "Input"]

#: An input: (name for messages, binary stream, whether the session closes it).
Input = tuple[str, Any, bool]


def make_udf(args: argparse.Namespace, command: list[str], logger: logging.Logger) -> Interface:
    """The UDF the command line names, not yet opened."""
    sources = [bool(command), args.socket is not None, args.config is not None]
    if sum(sources) != 1:
        raise CLIError("name exactly one UDF: a program after --, --socket ADDR, or --config FILE --function NAME")
    if args.function is not None and args.config is None:
        raise CLIError("--function needs --config FILE")
    timeout_ns: int | None = args.timeout
    connect = args.connect_timeout / 1e9
    try:
        ssl_context = context_from_arguments(args, server_side=False)
    except UDFError as exc:
        raise CLIError(str(exc)) from None
    if ssl_context is not None and (args.socket is None or not args.socket.startswith(TCP_PREFIX)):
        raise CLIError("the --tls-* flags need --socket tcp://HOST:PORT")
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
        from ..socket import Socket

        return Socket(args.socket, logger=logger, timeout=timeout, connect_timeout=connect, ssl_context=ssl_context)
    from ..process import Process

    return Process(command[0], command[1:], logger=logger, timeout=timeout)


def supervised(first: Interface, make: Callable[[], Interface], logger: logging.Logger) -> Interface:
    """``--restart``: a Supervisor whose first agent is ``first`` and whose later ones ``make()`` builds."""
    from ..supervisor import Supervisor

    made = [first]
    return Supervisor(lambda: made.pop() if made else make(), logger=logger)


def open_inputs(names: list[str], stdin: Any) -> list[Input]:
    """Open every input up front: (name, binary stream, whether we close it)."""
    if not names:
        names = ["-"]
    opened: list[Input] = []
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


class Session:
    """One ``info`` or ``run`` on ``udf``: :meth:`run` returns the exit code or raises :class:`CLIError`.

    ``report(message)`` writes a ``udf: error:`` line (used when a run ends
    with a bad input line *and* a UDF failure: the failure is reported first).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        udf: Interface,
        *,
        stdout: IO[Any],
        stderr: IO[str],
        logger: logging.Logger,
        report: Callable[[str], None],
        restore: bytes | None = None,
        inputs: Iterable[Input] = (),
    ) -> None:
        self.args = args
        self.udf = udf
        self.logger = logger
        self._stdout = stdout
        self._stderr = stderr
        self._report = report
        self._restore = restore
        self._inputs = list(inputs)
        self.output = Output(stdout, logger)
        self.lines = 0
        self.sent = 0
        self._read_before = 0  # bytes of the inputs already read to the end
        self._reading: Any = None  # the input being read
        self._drains: list[threading.Thread] = []
        self._closed = False
        self._close_error: BaseException | None = None

    # --- the one way out ---------------------------------------------------------

    def close(self, give_up: BaseException | None = None) -> BaseException | None:
        """Close the UDF once (aborting it with ``give_up`` first, if given); join the output.

        Returns the error the UDF's close raised, if any (the same on every call).
        """
        if give_up is not None:
            self.udf.abort(give_up)  # also when closing already: it ends a close() that waits
        if not self._closed:
            self._closed = True
            try:
                self.udf.close()
            except (UDFError, OSError) as exc:
                self._close_error = exc
                if give_up is not None:
                    self.logger.debug("closing the UDF: %s", exc)
        for thread in self._drains:
            thread.join()
        return self._close_error

    def run(self) -> int:
        """Open the UDF, do the command, close the UDF exactly once whatever happens."""
        try:
            self.udf.open()
        except (UDFError, OSError) as exc:
            raise CLIError(f"cannot start the UDF: {exc}", EXIT_UDF_FAILED) from None
        try:
            info = self.udf.info()
            if self.args.command == "info":
                return self._info(info)
            return self._run(info)
        except CLIError as exc:
            self.close(give_up=UDFError(str(exc)))
            raise
        except AgentClosedError as exc:
            # The agent is exiting: its exit status (and stderr) says more.
            reason = self.close() or exc
            raise CLIError(failure(reason, self.logger), EXIT_UDF_FAILED) from None
        except UDFError as exc:
            # info/init/restore/snapshot failed, or the UDF died meanwhile.
            self.close(give_up=exc)
            raise CLIError(failure(exc, self.logger), EXIT_UDF_FAILED) from None
        except BaseException as exc:
            self.close(give_up=UDFError(f"interrupted: {type(exc).__name__}"))
            raise

    # --- the commands ------------------------------------------------------------------

    def _info(self, info: Info) -> int:
        print_info(info, self.args.json, self._stdout)
        error = self.close()
        if error is not None:
            raise CLIError(failure(error, self.logger), EXIT_UDF_FAILED)
        return EXIT_OK

    def _run(self, info: Info) -> int:
        args = self.args
        wants = EDGE_NAMES.get(info.wants, str(info.wants))
        if (args.batch and info.wants != agent_pb2.BATCH) or (args.stream and info.wants != agent_pb2.STREAM):
            raise CLIError(f"{'--batch' if args.batch else '--stream'} given, but the UDF wants a {wants}")
        if info.wants != agent_pb2.BATCH and (args.batch_size or args.batch_period):
            raise CLIError(f"--batch-size/--batch-period apply to batch UDFs; this one wants a {wants}")
        options = build_options(args.options, info)
        try:
            self.udf.init(options)
        except InitError as exc:
            raise CLIError(f"{exc}; the UDF's options are: {describe_options(info)}", EXIT_USAGE) from None
        if self._restore is not None:
            self.udf.restore(self._restore)

        progress = self._progress()
        self._start_output()
        input_error: LineProtocolError | None = None
        try:
            self._feed(info.wants == agent_pb2.BATCH, progress)
        except LineProtocolError as exc:
            input_error = exc  # stop feeding; what came before is still processed and written
        if input_error is None and args.snapshot_out is not None:
            self._snapshot(args.snapshot_out)
        close_error = self.close()
        self.output.flush()
        progress.finish(self.lines, self.sent, self.output.written)
        if self.output.skipped:
            self.logger.warning("skipped %d output points that line protocol cannot carry", self.output.skipped)
        if self.output.error is not None:
            if isinstance(self.output.error, BrokenPipeError):
                return EXIT_BROKEN_PIPE
            raise CLIError(f"cannot write output: {self.output.error}", EXIT_UDF_FAILED)
        if input_error is not None:
            if close_error is not None:
                self._report(failure(close_error, self.logger))
            raise CLIError(str(input_error), EXIT_BAD_INPUT)
        if close_error is not None:
            raise CLIError(failure(close_error, self.logger), EXIT_UDF_FAILED)
        return EXIT_OK

    # --- run's parts -----------------------------------------------------------------

    def _progress(self) -> Progress:
        """Progress on stderr: forced on or off, else when stderr is a terminal, the inputs are files and not -q."""
        args = self.args
        streams = [stream for _, stream, _ in self._inputs]
        if args.progress is not None:
            wanted = bool(args.progress)
        else:
            wanted = not args.quiet and isatty(self._stderr) and all(is_regular_file(s) for s in streams)
        return Progress(
            self._stderr,
            wanted,
            total_bytes=input_size(streams) if wanted else None,
            position=self._position,
            forced=bool(args.progress),
        )

    def _position(self) -> int | None:
        """Bytes of the input read so far (for the progress line's percentage)."""
        reading = self._reading
        return self._read_before + (0 if reading is None else int(reading.tell()))

    def _start_output(self) -> None:
        """Drain the UDF's point and batch outputs to stdout, each in a thread."""

        def failed(exc: BaseException) -> None:
            self.udf.abort(UDFError(f"write error: stdout: {exc}"))

        for name, channel, is_batch in (
            ("udf-cli-points", self.udf.point_out, False),
            ("udf-cli-batches", self.udf.batch_out, True),
        ):
            t = threading.Thread(target=drain, args=(channel, self.output, is_batch, failed), name=name, daemon=True)
            t.start()
            self._drains.append(t)

    def _send(self, inlet: Any, item: Any) -> bool:
        try:
            inlet.put(item)
        except ChannelClosed:
            return False  # the UDF stopped: close() says why
        self.sent += 1
        return True

    def _feed(self, batch_mode: bool, progress: Progress) -> None:
        """Send every input point (or batch); raise LineProtocolError at a bad line."""
        args = self.args
        group_by: list[str] | None = None
        if args.group_by.strip() != "*":
            group_by = sorted({t.strip() for t in args.group_by.split(",") if t.strip()})
        batcher = Batcher(group_by, args.batch_size, args.batch_period) if batch_mode else None
        inlet = self.udf.batch_in if batch_mode else self.udf.point_in
        for source, stream, _ in self._inputs:
            self._reading = stream
            for _, point in read_lines(self._counting(stream), source, args.precision):
                if batcher is not None:
                    for batch in batcher.add(point):
                        if not self._send(inlet, batch):
                            return
                elif not self._send(inlet, to_stream_point(point, group_by)):
                    return
                if self.lines & (UPDATE_EVERY - 1) == 0:
                    progress.update(self.lines, self.sent, self.output.written)
            self._reading = None
            if progress.enabled:
                try:
                    self._read_before += stream.tell()
                except (OSError, ValueError):  # a pipe: no percentage anyway
                    pass
        if batcher is not None:
            for batch in batcher.flush():
                if not self._send(inlet, batch):
                    return

    def _counting(self, stream: Iterable[bytes]) -> Iterator[bytes]:
        for line in stream:
            self.lines += 1
            yield line

    def _snapshot(self, path: str) -> None:
        # Queued behind the data sent: the snapshot covers every point sent so far.
        data = self.udf.snapshot()
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise CLIError(f"cannot write snapshot: {exc.filename}: {exc.strerror}", EXIT_UDF_FAILED) from None
        self.logger.debug("saved a %d-byte snapshot to %s", len(data), path)


def failure(err: BaseException, logger: logging.Logger) -> str:
    """``the UDF failed: ...``; a dead process's stderr tail only if its lines were not shown live."""
    text = str(err)
    if isinstance(err, ProcessExitedError) and logger.isEnabledFor(logging.INFO):
        text = text.split("\n", 1)[0]  # its stderr was logged line by line as it came
    return f"the UDF failed: {text}"
