"""The host side of a UDF conversation over a pair of byte streams (Go: ``udf.Server``).

:class:`Server` is a thin front with Go's API over parts with one job each:

* :mod:`.state` -- its life as a table (:class:`ServerState`), fired under its lock;
* :mod:`.outbox` -- the writer's bounded input, and ``point_in``/``batch_in`` over it;
* :mod:`.writer` -- the ``udf-writer`` thread: frames to the agent's input;
* :mod:`.reader` -- the ``udf-reader`` thread: the agent's output to the channels and callers;
* :mod:`.requests` -- Go's request calls, and the callers waiting, a queue per kind;
* :mod:`.keepalive` -- the ``udf-keepalive`` thread and its ``udf-killer``;
* :mod:`.progress` -- the agent's signs of life, stamped by the reader and the writer;
* :mod:`.ending` -- how the conversation ends: failures and the owner's cause, one decision;
* :mod:`.callbacks` -- the abort callbacks, run once.

The server never calls its owner: a transport that knows why its agent ended
(``udf.Process``: the exit status) says so with :meth:`Server.explain_end`.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..convert import Info, encode_batch, encode_point, encode_request
from ..errors import ServerStoppedError, UDFError
from ..lifecycle import Lifecycle
from ..models import Batch, Point
from ..stats import Stats
from ..wire import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FRAME_SIZE
from .callbacks import AbortCallbacks, AbortListener
from .ending import Ending
from .keepalive import Keepalive
from .outbox import BATCH_ITEMS, POINT_ITEMS, WRITE_BUDGET, Inlet, Outbox
from .progress import Progress
from .reader import READ_CHUNK, Reader
from .requests import PendingRequests, RequestCalls
from .state import SERVER_TABLE, ServerEvent, ServerState
from .writer import Writer, close_quietly

__all__ = ["Server", "ServerState", "Info", "OUTBOX_SIZE", "OUT_CHANNEL_SIZE", "READ_CHUNK", "WRITE_BUDGET"]

#: Default ``in_queue_size``: items (points, or whole batches) queued for the writer before ``put`` blocks.
OUTBOX_SIZE = 1024
#: Default ``out_queue_size``: points or batches queued for the consumer before the reader blocks.
OUT_CHANNEL_SIZE = 1024

_NEW, _RUNNING, _STOPPING, _STOPPED, _ABORTED = ServerState


def _seconds(timeout: float | datetime.timedelta) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be seconds (float) or a timedelta, got {type(timeout).__name__}")
    return float(timeout)


def _check_limits(max_frame_size: int, max_batch_bytes: int, in_size: int, out_size: int, grace: float) -> None:
    """ValueError naming the first of Server's limits that is out of range."""
    if max_frame_size <= 0:
        raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
    if max_batch_bytes <= 0:
        raise ValueError(f"max_batch_bytes must be positive, got {max_batch_bytes}")
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"queue sizes must be positive, got {in_size} and {out_size}")
    if grace < 0:
        raise ValueError(f"cause_grace must not be negative, got {grace}")


class Server(RequestCalls):
    """Talk to one UDF agent over ``reader`` (its output) and ``writer`` (its input).

    Go: ``udf.NewServer``. ``timeout`` is the keepalive timeout in seconds (or a
    ``timedelta``); ``<= 0`` disables keepalives. ``abort_callback`` runs exactly
    once when the server aborts; ``kill_callback`` runs if the I/O has not ended
    ``2 * timeout`` after a keepalive abort began. The server closes ``writer``
    when its writer thread ends. ``in_queue_size`` and ``out_queue_size`` bound
    the items queued for the writer and for each output channel;
    ``max_frame_size`` bounds one incoming frame and ``max_batch_bytes`` the
    bytes of one batch the agent sends (BeginBatch to EndBatch): past either the
    server aborts with a ``ProtocolError`` naming the limit (Go has neither).

    ``cause_grace``: an owner that will say why its agent ended
    (:meth:`explain_end`) passes how long the end of the agent's output, or a
    failed write, waits for that word before the server's own view stands.
    """

    def __init__(
        self,
        reader: Any,
        writer: Any,
        logger: logging.Logger | None = None,
        timeout: float | datetime.timedelta = 0.0,
        abort_callback: Callable[[], Any] | None = None,
        kill_callback: Callable[[], Any] | None = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        cause_grace: float = 0.0,
        in_queue_size: int = OUTBOX_SIZE,
        out_queue_size: int = OUT_CHANNEL_SIZE,
    ) -> None:
        _check_limits(max_frame_size, max_batch_bytes, in_queue_size, out_queue_size, cause_grace)
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._timeout = _seconds(timeout)

        # Decided under _lock, acted upon outside it: the state and the first error.
        self._lock = threading.Lock()
        self._life = Lifecycle(SERVER_TABLE, _NEW)
        self._err: BaseException | None = None
        self._errors = 0  # error events, for stats()
        self._callbacks = AbortCallbacks(abort_callback, self._logger)
        self._progress = progress = Progress()
        self._outbox = outbox = Outbox(in_queue_size)
        self._requests = PendingRequests()
        self._point_in = Inlet(encode_point, outbox, POINT_ITEMS)
        self._batch_in = Inlet(encode_batch, outbox, BATCH_ITEMS)
        self._point_out: Channel[Point] = Channel(out_queue_size)
        self._batch_out: Channel[Batch] = Channel(out_queue_size)
        outputs = (self._point_out, self._batch_out)
        self._ending = Ending(
            threading.Condition(self._lock), self._life, progress, outbox.unwritten, cause_grace,
            self._requests, outputs, self._abort_inside,
        )  # fmt: skip
        self._writer = Writer(writer, outbox, progress, self._ending.writer_ended)
        self._reader = Reader(
            reader, max_frame_size, max_batch_bytes, self._life, progress, outputs, self._answer, self._abort_inside,
            self._reader_ended, self._logger,
        )  # fmt: skip
        self._keepalive = Keepalive(
            self._timeout, progress, outbox, self._count_ping, self._abort_inside, kill_callback, self._logger
        )
        self._threads: tuple[threading.Thread, ...] = ()  # the I/O threads (joined)
        self._started_at: float | None = None  # for stats().uptime

    # --- channels -------------------------------------------------------------

    @property
    def point_in(self) -> Inlet:
        """Send side for stream points (Go: ``PointIn``); ``put(point)`` blocks when full."""
        return self._point_in

    @property
    def batch_in(self) -> Inlet:
        """Send side for batches (Go: ``BatchIn``)."""
        return self._batch_in

    @property
    def point_out(self) -> Channel[Point]:
        """Points the agent sent (Go: ``PointOut``); closed at the end of its output, or at abort."""
        return self._point_out

    @property
    def batch_out(self) -> Channel[Batch]:
        """Batches the agent sent (Go: ``BatchOut``); closed at the end of its output, or at abort."""
        return self._batch_out

    # --- lifecycle ------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        """The server's current :class:`ServerState`."""
        return self._life.state

    @property
    def error(self) -> BaseException | None:
        """The first error (the abort error), or ``None``; readable at any time."""
        return self._err

    @property
    def input_closed(self) -> bool:
        """Whether the writer has ended and closed the agent's input."""
        return self._progress.input_closed

    @property
    def progress(self) -> Progress:
        """The agent's signs of life (read-only facts: for an owner's patience while closing)."""
        return self._progress

    def start(self) -> None:
        """Start the reader, writer and (with a timeout) keepalive threads (Go: ``Start``)."""
        with self._lock:
            state = self._life.state
            if state is _NEW:
                self._life.fire(ServerEvent.START)
                threads = [
                    threading.Thread(target=self._writer.run, name="udf-writer", daemon=True),
                    threading.Thread(target=self._reader.run, name="udf-reader", daemon=True),
                ]
                if self._timeout > 0:
                    keepalive = self._keepalive.run
                    threads.append(
                        threading.Thread(target=keepalive, args=(self._ending.io_done,), name="udf-keepalive")
                    )
                    threads[-1].daemon = True
                self._threads = tuple(threads)
        if state is _RUNNING or state is _STOPPING:
            raise UDFError("server already started")
        if state is _STOPPED:
            raise ServerStoppedError()
        if state is _ABORTED:
            raise UDFError(f"server already aborted: {self._err}") from self._err
        self._progress.last_seen = self._started_at = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self, *, wait_callbacks: bool = True) -> None:
        """Finish cleanly (Go: ``Stop``) and raise the first error, if any.

        Call once you have stopped putting data, and keep draining ``point_out``/
        ``batch_out`` meanwhile: queued data is written, the agent's input is
        closed, and this returns when the agent's output has ended. Safe from
        any thread; from the server's own threads and its abort callbacks it
        does not wait. It then waits for the abort callbacks of an abort that
        came while it waited (not with ``wait_callbacks=False``); never for
        those already running when it was called: one may be waiting for it.
        """
        with self._lock:
            state = self._life.state
            self._life.fire(ServerEvent.STOP)
            aborted_before = self._err is not None
        if state is _NEW:  # never started: nothing to wait for
            self._release_unstarted(None)
        elif state is _RUNNING:
            self._keepalive.stop()
            self._outbox.close()
        self._wait_io(None)
        if wait_callbacks and not aborted_before:
            self.wait_abort_callbacks()
        err = self._err
        if err is not None:
            raise err

    def abort(self, err: BaseException) -> None:
        """Tear the server down now, recording ``err`` if it is the first error (Go: ``Abort``).

        Safe from any thread, including the callbacks; idempotent. The abort
        callback and the listeners of :meth:`add_abort_callback` run once, in
        the caller's thread.
        """
        self._abort(err, inline=True)

    def _abort_inside(self, err: BaseException) -> None:
        """An abort the server's own threads decide: the callbacks run in their own thread (see .callbacks)."""
        self._abort(err, inline=False)

    def _abort(self, err: BaseException, inline: bool) -> None:
        with self._lock:
            self._errors += 1
            first = self._err is None
            if first:
                self._err = err
            first_err = self._err if self._err is not None else err
            before = self._life.state
            self._life.fire(ServerEvent.ABORT)
            tear_down = before is not _STOPPED and before is not _ABORTED
            waiters = self._requests.close(first_err) if tear_down else []
            self._ending.aborted()
        if tear_down:
            self._keepalive.stop()
            self._outbox.abort(first_err)
            self._point_out.close(first_err)
            self._batch_out.close(first_err)
            for waiter in waiters:
                waiter.fail(first_err)
            if before is _NEW:  # no I/O thread will end it: release the streams now
                self._release_unstarted(first_err)
            self._ending.check_io_over()
        if first:
            self._callbacks.fire(first_err, inline)

    def add_abort_callback(self, callback: AbortListener) -> None:
        """Call ``callback(err)`` once when the server aborts, ``err`` being its first error.

        Unlike the constructor's ``abort_callback`` any number can be added,
        by anyone (a supervisor, a monitor); added after the abort, it is
        called at once.
        """
        self._callbacks.add(callback)

    def explain_end(self, cause: BaseException, *, fatal: bool = False) -> None:
        """The owner's word on how the agent ended (``udf.Process``: its exit); never blocks.

        ``cause`` replaces a failed write: every caller then sees it. A
        ``fatal`` cause (the agent died) also replaces any other I/O failure,
        and while the server runs it is an error in itself, raised once the
        agent's output is delivered. The first cause stays (see :mod:`.ending`).
        """
        self._ending.explain(cause, fatal)

    def discard_output(self) -> None:
        """Stop delivering the agent's points and batches: drop them, and close ``point_out``/``batch_out``.

        For an owner that wants no more output but a clean stop (``close()``
        without a consumer would otherwise wait for one): requests are still
        answered, and the agent can finish writing and exit.
        """
        self._reader.discarding = True
        self._point_out.close()
        self._batch_out.close()

    def wait_io(self, timeout: float | None = None, *, idle: float | None = None) -> bool:
        """Wait until the I/O has ended (Go: ``WaitIO``): both threads, and the end decided; False on timeout.

        ``idle``: also return False once the agent has made no progress for
        ``idle`` seconds (see :class:`.progress.Progress`). Abort callbacks are
        not waited for (see :meth:`wait_abort_callbacks`).
        """
        if self._life.state is _NEW:  # never started: nothing to wait for (a stop() or abort() ends it at once)
            return True
        return self._wait_io(timeout, idle)

    def _wait_io(self, timeout: float | None, idle: float | None = None) -> bool:
        event = self._ending.io_done
        if self.in_server_thread():
            # Called from the reader, the writer or a callback (e.g. stop() in an
            # abort callback): the server's end cannot be awaited here.
            return event.is_set()
        # Set by the ending (the last I/O thread's end, or the decision after it).
        done = event.wait(timeout) if idle is None else self._progress.wait_while_busy(event, idle, timeout)
        if done:
            for thread in self._helpers():  # they end promptly once the I/O is over
                if thread is not threading.current_thread():
                    thread.join()
        return done

    def wait_abort_callbacks(self) -> None:
        """Wait until abort callbacks running in their own thread (see :mod:`.callbacks`) have returned."""
        self._callbacks.wait()

    def _helpers(self) -> tuple[threading.Thread, ...]:
        """The server's threads besides the callbacks': the I/O threads, the settler, the killer."""
        extra = tuple(t for t in (self._ending.settler, self._keepalive.killer) if t is not None)
        return self._threads + extra

    def in_server_thread(self) -> bool:
        """Whether the caller runs in one of this server's threads (its callbacks do)."""
        me = threading.current_thread()
        return me in self._helpers() or me is self._callbacks.thread

    def stats(self) -> Stats:
        """A snapshot of counters and queue depths (cheap: no I/O, one short lock)."""
        with self._lock:
            requests = dict(self._requests.sent)
            errors = self._errors
            err = self._err
            state = self._life.state.value
        started = self._started_at
        accepted = self._outbox.accepted
        reader = self._reader
        return Stats(
            state=state,
            uptime=0.0 if started is None else time.monotonic() - started,
            points_in=accepted[POINT_ITEMS],
            batches_in=accepted[BATCH_ITEMS],
            points_out=reader.points_out,
            batches_out=reader.batches_out,
            bytes_in=reader.bytes_in,
            bytes_out=self._writer.bytes_out,
            requests=requests,
            errors=errors,
            error=None if err is None else str(err),
            in_queue=self._outbox.qsize(),
            point_out_queue=self._point_out.qsize(),
            batch_out_queue=self._batch_out.qsize(),
            keepalive_rtt=reader.keepalive_rtt,
            dropped=reader.dropped,
        )

    # --- what the parts call ------------------------------------------------------

    def _reader_ended(self, failure: UDFError | None) -> None:
        """The reader's last call: no keepalive can be answered any more; the ending decides the rest."""
        self._keepalive.stop()
        self._ending.reader_ended(failure)

    def _release_unstarted(self, err: BaseException | None) -> None:
        """stop() or abort() of a server never started: close the writer stream and the channels now."""
        close_quietly(self._writer.stream)
        self._point_out.close(err)
        self._batch_out.close(err)
        with self._lock:
            self._requests.close(err if err is not None else ServerStoppedError())
        self._ending.io_done.set()

    def _count_ping(self) -> None:
        with self._lock:
            self._requests.count("keepalive")

    # --- requests -------------------------------------------------------------

    def _request(self, kind: str, request: Any) -> tuple[Any, int]:
        """Send a request and wait for its response or the end; return it and the data items queued before it."""
        frame = encode_request(request)
        with self._lock:
            state = self._life.state
            if state is _STOPPING or state is _STOPPED:
                raise self._err if self._err is not None else ServerStoppedError()
            if state is _ABORTED:
                assert self._err is not None
                raise self._err
            if state is _NEW:
                raise UDFError("server not started")
            pending, position = self._requests.add(kind, frame, self._outbox)
        # Woken by the reader's answer, or by the end (abort, or the agent's output's end).
        return pending.wait(), position

    def _answer(self, kind: str, response: Any) -> None:
        """The reader's call: hand a response to the oldest caller waiting for its kind."""
        with self._lock:
            pending = self._requests.answer(kind)
            if pending is None:
                self._errors += 1
        if pending is None:
            self._logger.error("received %s response without requesting it", kind)
        else:
            pending.resolve(response)
