"""The base of the transports whose conversation runs on a :class:`udf.Server` (``udf.Process``, ``udf.Socket``).

A transport's life is one :class:`TransportState`, moved only by
:data:`TRANSPORT_TABLE` under its lock (docs/transports.md draws the table).
Facts beside it decide no state: the error ``abort()`` recorded before the
server existed (``open()`` raises it), the outcome of the shutdown, and the
events that wake waiters (a connect retry wait, the ``close()`` callers).

The shutdown runs once, in a ``udf-closer`` thread: ``close()`` callers wait
for it (each with its own ``timeout``), and a ``udf-close-watch`` thread
(:mod:`udf.closing`) escalates against an agent that stops making progress
and warns about a close that makes none. The server never calls its
transport: a subclass reports what it knows (a child's exit) to the server.
"""

from __future__ import annotations

import abc
import datetime
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .channel import Channel
from .closing import CloseWatch, Escalation, Stall, describe_wait
from .convert import Info
from .errors import CloseTimeoutError, UDFError
from .interface import Inlet, Interface
from .lifecycle import Lifecycle, transition_table
from .models import Batch, Point
from .options import Options
from .server import Server
from .stats import Stats

__all__ = ["ServerBacked", "TransportState", "TransportEvent", "TRANSPORT_TABLE", "KILL_WAIT"]

#: After ``close(timeout)`` ran out and killed the agent: how long ``close()`` still
#: waits for the shutdown to finish before raising anyway.
KILL_WAIT = 5.0


class TransportState(enum.Enum):
    """Where a transport (:class:`ServerBacked`: ``udf.Process``, ``udf.Socket``) is in its life."""

    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class TransportEvent(enum.Enum):
    """What moves a transport: ``open()`` and how it ends, ``close()``, and the end of the shutdown."""

    OPEN = "open"
    OPENED = "opened"
    OPEN_FAILED = "open failed"
    CLOSE = "close"
    SHUT_DOWN = "shut down"


_NEW, _OPENING, _OPEN, _CLOSING, _CLOSED = TransportState
_OPEN_, _OPENED, _OPEN_FAILED, _CLOSE, _SHUT_DOWN = TransportEvent

TRANSPORT_TABLE = transition_table(
    "udf.ServerBacked",
    TransportState,
    TransportEvent,
    {
        (_NEW, _OPEN_): _OPENING,
        (_NEW, _OPEN_FAILED): _CLOSED,  # aborted before open(): open() raises the abort error
        (_NEW, _CLOSE): _CLOSED,  # nothing to release
        (_OPENING, _OPENED): _OPEN,
        (_OPENING, _OPEN_FAILED): _CLOSED,
        (_OPENING, _CLOSE): _CLOSING,  # cancels a connect; open() finishes the close
        (_OPEN, _CLOSE): _CLOSING,  # the shutdown starts
        (_CLOSING, _OPENED): _CLOSING,  # closed while opening: open() starts the shutdown
        (_CLOSING, _OPEN_FAILED): _CLOSED,
        (_CLOSING, _CLOSE): _CLOSING,  # waits for the one shutdown
        (_CLOSING, _SHUT_DOWN): _CLOSED,
        (_CLOSED, _CLOSE): _CLOSED,  # raises the same
    },
    doc="A transport's life: open() and how it ends, close(), and the end of the shutdown.",
)


class ServerCalls(Interface):
    """Go's API forwarded to the :class:`udf.Server` a transport owns (before ``open()``: "not opened")."""

    @abc.abstractmethod
    def _require_server(self) -> Server:
        """The server; raises ``UDFError("... not opened")`` before ``open()``."""

    def info(self) -> Info:
        """Ask the agent what it wants, provides and accepts (Go: ``Info``)."""
        return self._require_server().info()

    def init(self, options: Options = None) -> None:
        """Initialize the agent (Go: ``Init``): ``agent_pb2.Option``s or a mapping (see :mod:`udf.options`)."""
        self._require_server().init(options)

    def snapshot(self) -> bytes:
        """The agent's state (Go: ``Snapshot``)."""
        return self._require_server().snapshot()

    def snapshot_with_position(self) -> tuple[bytes, int]:
        """A snapshot and how many items ``put()`` accepted before it (:meth:`udf.Server.snapshot_with_position`)."""
        return self._require_server().snapshot_with_position()

    def restore(self, snapshot: bytes) -> None:
        """Restore the agent's state (Go: ``Restore``)."""
        self._require_server().restore(snapshot)

    def stats(self) -> Stats:
        """The server's health counters (see :class:`udf.Stats`)."""
        return self._require_server().stats()

    @property
    def point_in(self) -> Inlet:
        """Send side for stream points."""
        return self._require_server().point_in

    @property
    def batch_in(self) -> Inlet:
        """Send side for batches."""
        return self._require_server().batch_in

    @property
    def point_out(self) -> Channel[Point]:
        """Points the agent produced."""
        return self._require_server().point_out

    @property
    def batch_out(self) -> Channel[Batch]:
        """Batches the agent produced."""
        return self._require_server().batch_out


class ServerBacked(ServerCalls):
    """An :class:`Interface` whose conversation runs on a :class:`udf.Server` it owns.

    Subclasses start the agent and build the server in :meth:`_start_agent`,
    end it at once in :meth:`_kill`, escalate against it in :meth:`_escalate`
    and release it in :meth:`_release`; the life cycle and every request and
    channel are here. ``close()`` is safe from any thread, the library's own
    included (an abort callback): there it starts the shutdown and raises the
    error known so far instead of waiting for itself.
    """

    #: What ``open()`` opens, for messages ("process", "socket").
    _what = "udf"

    def __init__(
        self,
        logger: logging.Logger | None,
        timeout: float | datetime.timedelta,
        abort_callback: Callable[[], Any] | None,
        max_frame_size: int,
        in_queue_size: int,
        out_queue_size: int,
        max_batch_bytes: int,
    ) -> None:
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._timeout = timeout
        self._abort_callback = abort_callback
        self._max_frame_size = max_frame_size
        self._max_batch_bytes = max_batch_bytes
        self._queue_sizes = (in_queue_size, out_queue_size)
        self._lock = threading.Lock()
        self._life = Lifecycle(TRANSPORT_TABLE, _NEW)
        self._server: Server | None = None
        #: abort() before the server existed: open() raises it (and a connect wait is cancelled).
        self._early_error: BaseException | None = None
        #: Wakes a connect retry wait: set by abort() or close() while opening.
        self._cancel = threading.Event()
        self._listeners: list[Callable[[BaseException], Any]] = []
        #: Set with SHUT_DOWN (or when nothing was opened): wakes every close() waiting.
        self._closed = threading.Event()
        self._close_error: BaseException | None = None
        self._closer: threading.Thread | None = None
        self._watch: CloseWatch | None = None
        #: What the close watcher had to do to a stuck agent.
        self._escalation = Escalation()

    # --- life cycle -------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        """This transport's :class:`TransportState`."""
        return self._life.state

    @property
    def error(self) -> BaseException | None:
        """The first error (the one cause every call raises), readable without closing; ``None`` if none yet."""
        server = self._server
        if server is not None and server.error is not None:
            return server.error
        return self._close_error if self._close_error is not None else self._early_error

    def open(self) -> None:
        """Start the agent and the server talking to it (Go: ``Open``)."""
        with self._lock:
            if self._life.state is not _NEW:
                raise UDFError(f"{self._what} already opened")
            early = self._early_error
            self._life.fire(_OPEN_ if early is None else _OPEN_FAILED)
        if early is not None:
            self._closed.set()
            raise early
        try:
            server = self._start_agent()
        except BaseException:
            with self._lock:
                self._life.fire(_OPEN_FAILED)
            self._closed.set()
            raise
        with self._lock:  # abort() and close() decide under the same lock: none is lost
            self._server = server
            listeners = list(self._listeners)
            self._life.fire(_OPENED)
            cancelled = self._early_error
            closer = self._new_closer() if self._life.state is _CLOSING else None
        for listener in listeners:
            server.add_abort_callback(listener)
        server.start()
        self._after_start()
        if closer is not None and cancelled is None:
            cancelled = UDFError(f"{self._what} closed while opening")
        if cancelled is not None:
            server.abort(cancelled)
            if closer is not None:  # close() came during the open: finish it
                closer.start()
                self._closed.wait()  # set by the closer
                closer.join()
            raise cancelled

    def close(self, timeout: float | None = None, *, discard_output: bool = False) -> None:
        """Stop the server, release everything and raise the first error (Go: ``Close``).

        Keep draining ``point_out``/``batch_out`` while this runs, or pass
        ``discard_output=True`` to drop what the agent still sends (requests
        are still answered). With ``timeout`` (seconds) this returns or raises
        within about that long whatever the consumer does: what still runs is
        killed and a :class:`~udf.errors.CloseTimeoutError` names what the close
        waited for. Later calls raise the same error.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout}")
        ours = self._in_own_thread()
        with self._lock:
            state = self._life.state
            self._life.fire(_CLOSE)
            server = self._server
            aborted_before = server is None or server.error is not None
            closer = self._new_closer() if state is _OPEN else None
        if state is _NEW:
            self._closed.set()
            return
        if discard_output and server is not None:
            server.discard_output()
        if state is _OPENING:
            self._cancel.set()  # wakes a connect retry wait; open() finishes the close
        if closer is not None:
            closer.start()
        if ours:  # cannot wait here for the threads we run in
            err = self._close_error if self._closed.is_set() else self.error
        else:
            err = self._wait_closed(timeout)
            if server is not None and not aborted_before:
                server.wait_abort_callbacks()  # those of an abort that came during the close
        if err is not None:
            raise err

    def _new_closer(self) -> threading.Thread:
        """The thread that runs the one shutdown (call with _lock held, start outside it)."""
        self._closer = threading.Thread(target=self._finish_close, name="udf-closer", daemon=True)
        return self._closer

    def _wait_closed(self, timeout: float | None) -> BaseException | None:
        """Wait for the shutdown (at most ``timeout``, then kill and a little more); return its error."""
        # Set by the closer when the shutdown is over (or by open() when it failed).
        if not self._closed.wait(timeout):
            assert timeout is not None
            self._time_out(timeout)
            if not self._closed.wait(KILL_WAIT):
                self._logger.error("%s: still not shut down %gs after it was killed", self, KILL_WAIT)
                return self.error
        closer = self._closer
        if closer is not None and closer is not threading.current_thread():
            closer.join()
        return self._close_error

    def _time_out(self, timeout: float) -> None:
        """``close(timeout)`` ran out: abort with an error naming what it waited for, and kill."""
        server = self._server
        if server is None:
            what = f"the {self._what} to open"
        else:
            what = describe_wait(server, server.wait_io(0), self._exit_wait())
        err = CloseTimeoutError(f"close() timed out after {timeout:g}s waiting for {what}")
        self._logger.error("%s: killing the agent", err)
        self.abort(err)  # the first error, if there was none: the one cause from now on
        if server is not None:
            self._kill()

    def _finish_close(self) -> None:
        """The ``udf-closer`` thread: shut down (once), record the outcome, release every close() waiting."""
        try:
            err = self._shutdown()
        except BaseException as exc:  # never leave close() callers waiting
            err = exc
        with self._lock:
            self._close_error = err
            self._life.fire(_SHUT_DOWN)
        self._closed.set()

    def _shutdown(self) -> BaseException | None:
        """Stop the server, watched (escalation, warnings), then release the transport; return the first error."""
        server = self._server
        assert server is not None
        watch = CloseWatch(
            server, self._finish_events(), self._grace(), self._escalate, self._exit_wait(), self._logger
        )
        self._watch = watch
        watch.start()
        err: BaseException | None = None
        try:
            server.stop(wait_callbacks=False)  # the close() callers wait for the callbacks, after the shutdown
        except Exception as exc:
            err = exc
        watch.join()  # returns once the agent finished: its I/O ended (and, for a process, it exited)
        return self._release(err)

    def _in_own_thread(self) -> bool:
        """Whether the caller is one of the threads this transport or its server runs."""
        me = threading.current_thread()
        server = self._server
        watch = self._watch
        return (
            (server is not None and server.in_server_thread())
            or me is self._closer
            or (watch is not None and me is watch.thread)
            or me in self._helper_threads()
        )

    def _new_server(self, reader: Any, writer: Any, **kwargs: Any) -> Server:
        """The server for this transport's streams; its kill callback is :meth:`_kill`."""
        return Server(
            reader,
            writer,
            self._logger,
            self._timeout,
            self._abort_callback,
            self._kill,
            max_frame_size=self._max_frame_size,
            max_batch_bytes=self._max_batch_bytes,
            in_queue_size=self._queue_sizes[0],
            out_queue_size=self._queue_sizes[1],
            **kwargs,
        )

    def _cancelled_error(self) -> BaseException:
        """Why a connect was cancelled: the abort error, or a close() while opening."""
        early = self._early_error
        return early if early is not None else UDFError(f"{self._what} closed while opening")

    # --- what a transport supplies ----------------------------------------------

    @abc.abstractmethod
    def _start_agent(self) -> Server:
        """open()'s work: start or reach the agent and return the (unstarted) server on its streams."""

    def _after_start(self) -> None:
        """Called by open() once the server runs (udf.Process starts its helper threads here)."""

    def _helper_threads(self) -> list[threading.Thread]:
        """The transport's own threads besides the server's (udf.Process's waiter, ...)."""
        return []

    @abc.abstractmethod
    def _kill(self) -> None:
        """End the agent now (the server's kill callback, kill(), close(timeout) running out)."""

    @abc.abstractmethod
    def _grace(self) -> float:
        """Seconds without progress, while closing, before each escalation step."""

    @abc.abstractmethod
    def _escalate(self, step: int, grace: float, stall: Stall) -> bool:
        """Escalation step ``step`` against an agent idle ``grace`` s (stuck at ``stall``); False when none is left."""

    def _finish_events(self) -> Sequence[threading.Event]:
        """What marks the agent's end besides its I/O (udf.Process: its exit)."""
        return ()

    def _exit_wait(self) -> str:
        """What a close waits for once the agent's I/O ended, for messages."""
        return f"the {self._what} to finish"

    @abc.abstractmethod
    def _release(self, err: BaseException | None) -> BaseException | None:
        """After the server stopped (``err``): release the transport, return the error close() raises."""

    def _require_server(self) -> Server:
        server = self._server
        if server is None:
            raise UDFError(f"{self._what} not opened: call open() first")
        return server

    # --- what only the transport does ----------------------------------------------

    def abort(self, err: BaseException) -> None:
        """Abort the server with ``err`` (Go: ``Abort``); ``close()`` still releases everything.

        Before or during ``open()`` it cancels the open, which raises ``err``.
        """
        with self._lock:
            server = self._server
            if server is None and self._early_error is None:
                self._early_error = err
        if server is None:
            self._cancel.set()
            return
        server.abort(err)

    def kill(self) -> None:
        """End the agent now, without waiting (a hung agent): the server then sees its end.

        ``udf.Process`` sends SIGKILL to the agent's process group, ``udf.Socket``
        shuts the connection down. ``close()`` afterwards reports what happened.
        Once ``close()`` has finished there is nothing left to end: a no-op
        (a process group id may have been reused by then).
        """
        self._require_server()
        if self._closed.is_set():
            return
        self._kill()

    def add_abort_callback(self, callback: Callable[[BaseException], Any]) -> None:
        """Call ``callback(err)`` once when the server aborts (see :meth:`udf.Server.add_abort_callback`).

        May be called before ``open()``; the constructor's ``abort_callback``
        is kept as it is.
        """
        with self._lock:
            server = self._server
            if server is None:
                self._listeners.append(callback)
        if server is not None:
            server.add_abort_callback(callback)
