"""The abstract interface every UDF transport implements (Go: ``udf.Interface``)."""

from __future__ import annotations

import abc
import datetime
import enum
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Protocol, Tuple, Union

from .channel import Channel
from .convert import Info
from .errors import UDFError
from .models import Batch, Point
from .options import Options
from .stats import Stats

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Inlet", "Interface", "ServerBacked", "TransportState"]


class Inlet(Protocol):
    """The send side of ``point_in``/``batch_in``: what producers and the Supervisor call."""

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send an item, blocking while the queue is full (backpressure); a bad item raises at once."""

    def put_encoded(self, frame: bytes, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send an item already encoded by ``udf.convert.encode_point``/``encode_batch`` (a replay log's frames)."""


class Interface(abc.ABC):
    """A UDF you can open, talk to and close: ``udf.Process``, ``udf.Socket``, ..."""

    @abc.abstractmethod
    def open(self) -> None:
        """Start the UDF and the server talking to it (Go: ``Open``)."""

    @abc.abstractmethod
    def close(self, timeout: Optional[float] = None, *, discard_output: bool = False) -> None:
        """Stop cleanly and release everything; raise the first error (Go: ``Close``)."""

    @abc.abstractmethod
    def info(self) -> Info:
        """The UDF's edge types and options (Go: ``Info``)."""

    @abc.abstractmethod
    def init(self, options: Options) -> None:
        """Initialize the UDF (Go: ``Init``): a list of ``agent_pb2.Option`` or a mapping ``{name: value or [values]}``."""

    @abc.abstractmethod
    def abort(self, err: BaseException) -> None:
        """Tear down now, recording ``err`` (Go: ``Abort``)."""

    @abc.abstractmethod
    def snapshot(self) -> bytes:
        """The UDF's state (Go: ``Snapshot``)."""

    @abc.abstractmethod
    def restore(self, snapshot: bytes) -> None:
        """Restore the UDF's state (Go: ``Restore``)."""

    @property
    @abc.abstractmethod
    def point_in(self) -> Inlet:
        """Send side for points (an :class:`Inlet`)."""

    @property
    @abc.abstractmethod
    def batch_in(self) -> Inlet:
        """Send side for batches (an :class:`Inlet`)."""

    @property
    @abc.abstractmethod
    def point_out(self) -> Channel[Point]:
        """Points the UDF produced."""

    @property
    @abc.abstractmethod
    def batch_out(self) -> Channel[Batch]:
        """Batches the UDF produced."""

    # What udf.Supervisor and the adapters (udf.beam, udf.flink) use besides Go's API.

    @property
    @abc.abstractmethod
    def error(self) -> Optional[BaseException]:
        """The first error (the one cause every call raises once the agent failed), or ``None``."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the agent now, without waiting (a hung agent); ``close()`` then reports what happened."""

    @abc.abstractmethod
    def add_abort_callback(self, callback: Callable[[BaseException], Any]) -> None:
        """Call ``callback(err)`` once when the conversation aborts, ``err`` being its first error."""

    @abc.abstractmethod
    def snapshot_with_position(self) -> Tuple[bytes, int]:
        """A snapshot, and how many items ``put()`` had accepted before it was asked for."""

    def stats(self) -> Stats:
        """Health counters of the server underneath (see :class:`udf.Stats`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report stats")

    def __enter__(self) -> "Interface":
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        """Close; if the body raised, abort with its exception first (no output is wanted any more).

        The body's exception then propagates unmasked: an error from closing
        is logged instead of raised.
        """
        if exc is None:
            self.close()
            return
        try:
            self.abort(exc)
            self.close()
        except BaseException as close_error:
            if close_error is not exc:
                logging.getLogger("udf").warning("closing after %s: %s", type(exc).__name__, close_error)


class TransportState(enum.Enum):
    """Where a transport (:class:`ServerBacked`: ``udf.Process``, ``udf.Socket``) is in its life.

    ::

        state     open()              abort(err)             close()                       open() ends
        NEW       OPENING             remember err           CLOSED (returns None)         -
        OPENING   error               remember err, cancel   cancel; open() closes         OPEN (or closes)
        OPEN      error               server.abort(err)      CLOSING, shut down, CLOSED    -
        CLOSING   error               server.abort(err)      wait, raise the same          -
        CLOSED    error               server.abort(err)      raise the same                -
    """

    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_NEW, _OPENING, _OPEN, _CLOSING, _CLOSED = TransportState


class ServerBacked(Interface):
    """An :class:`Interface` whose conversation runs on a :class:`udf.Server` it owns.

    Subclasses (``udf.Process``, ``udf.Socket``) start the agent and build the
    server in :meth:`_start_agent`, release it in :meth:`_shutdown` and end it
    at once in :meth:`_kill`; the life cycle (one :class:`TransportState`,
    decided under ``_lock``) and every request and channel are here.

    ``close()`` is safe from any thread, the library's own included (an abort
    callback, for instance): there it starts the shutdown in a ``udf-closer``
    thread and raises the error known so far instead of waiting for itself.
    """

    #: What ``open()`` opens, for messages ("process", "socket").
    _what = "udf"

    def __init__(
        self,
        logger: Optional[logging.Logger],
        timeout: Union[float, datetime.timedelta],
        abort_callback: Optional[Callable[[], Any]],
        max_frame_size: int,
        in_queue_size: int,
        out_queue_size: int,
    ) -> None:
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._timeout = timeout
        self._abort_callback = abort_callback
        self._max_frame_size = max_frame_size
        self._queue_sizes = (in_queue_size, out_queue_size)
        self._lock = threading.Lock()
        self._state = _NEW
        self._server: Optional["Server"] = None
        #: abort() before the server exists: open() refuses, or aborts the new server.
        self._pending_abort: Optional[BaseException] = None
        #: Set by abort() or close() during open(): wakes a connect retry wait.
        self._cancel = threading.Event()
        self._abort_listeners: List[Callable[[BaseException], Any]] = []
        self._closed = threading.Event()  # set once the shutdown has finished
        self._close_error: Optional[BaseException] = None
        self._closer: Optional[threading.Thread] = None

    # --- life cycle -------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        """This transport's :class:`TransportState`."""
        return self._state

    @property
    def error(self) -> Optional[BaseException]:
        """The first error (the server's abort error), readable without closing; ``None`` if none yet."""
        server = self._server
        if server is not None and server.error is not None:
            return server.error
        return self._close_error if self._close_error is not None else self._pending_abort

    def open(self) -> None:
        """Start the agent and the server talking to it (Go: ``Open``)."""
        with self._lock:
            if self._state is not _NEW:
                raise UDFError(f"{self._what} already opened")
            if self._pending_abort is not None:
                self._state = _CLOSED
                self._closed.set()
                raise self._pending_abort
            self._state = _OPENING
        try:
            server = self._start_agent()
        except BaseException:
            with self._lock:
                self._state = _CLOSED
            self._closed.set()
            raise
        with self._lock:
            self._server = server
            listeners = list(self._abort_listeners)
            cancelled = self._pending_abort
            if self._state is _OPENING:
                self._state = _OPEN
        for listener in listeners:
            server.add_abort_callback(listener)
        server.start()
        self._after_start()
        if cancelled is not None:  # abort() or close() came during the open
            server.abort(cancelled)
            if self._state is _CLOSING:
                self._finish_close()
            raise cancelled

    def close(self, timeout: Optional[float] = None, *, discard_output: bool = False) -> None:
        """Stop the server, release everything and raise the first error (Go: ``Close``).

        Keep draining ``point_out``/``batch_out`` while this runs, or pass
        ``discard_output=True`` to drop what the agent still sends (requests
        are still answered). Later calls raise the same error.
        """
        ours = self._in_own_thread()
        with self._lock:
            state = self._state
            if state is _NEW:
                self._state = _CLOSED
            elif state is _OPENING or state is _OPEN:
                self._state = _CLOSING
            if state is _OPENING and self._pending_abort is None:
                # open() reads this under the same lock: it finishes the close.
                self._pending_abort = UDFError(f"{self._what} closed while opening")
            server = self._server
        if state is _NEW:
            self._closed.set()
            return
        if discard_output and server is not None:
            server.discard_output()
        if state is _OPENING:
            self._cancel.set()  # wakes a connect retry wait
        elif state is _OPEN:
            if ours:  # cannot wait here for the thread we run in
                self._closer = threading.Thread(target=self._finish_close, name="udf-closer", daemon=True)
                self._closer.start()
            else:
                self._finish_close()
        if ours:
            err = self._close_error if self._closed.is_set() else self.error
        else:
            self._closed.wait()  # set by _finish_close, in this thread, the closer, or open()
            closer = self._closer
            if closer is not None and closer is not threading.current_thread():
                closer.join()
            err = self._close_error
        if err is not None:
            raise err

    def _finish_close(self) -> None:
        """Shut down (once), record the outcome, and release every close() waiting for it."""
        try:
            err = self._shutdown()
        except BaseException as exc:  # never leave close() callers waiting
            err = exc
        with self._lock:
            self._close_error = err
            self._state = _CLOSED
        self._closed.set()

    def _in_own_thread(self) -> bool:
        """Whether the caller is one of the threads this transport or its server runs."""
        me = threading.current_thread()
        server = self._server
        return (server is not None and server.in_server_thread()) or me is self._closer or me in self._helper_threads()

    def _helper_threads(self) -> List[threading.Thread]:
        """The transport's own threads besides the server's (udf.Process's waiter, ...)."""
        return []

    def _new_server(self, reader: Any, writer: Any, **kwargs: Any) -> "Server":
        """The server for this transport's streams; its kill callback is :meth:`_kill`."""
        from .server import Server

        return Server(
            reader,
            writer,
            self._logger,
            self._timeout,
            self._abort_callback,
            self._kill,
            max_frame_size=self._max_frame_size,
            in_queue_size=self._queue_sizes[0],
            out_queue_size=self._queue_sizes[1],
            **kwargs,
        )

    @abc.abstractmethod
    def _start_agent(self) -> "Server":
        """open()'s work: start or reach the agent and return the (unstarted) server on its streams."""

    def _after_start(self) -> None:
        """Called by open() once the server runs (udf.Process starts its helper threads here)."""

    @abc.abstractmethod
    def _kill(self) -> None:
        """End the agent now (the server's kill callback after a keepalive timeout)."""

    @abc.abstractmethod
    def _shutdown(self) -> Optional[BaseException]:
        """Stop the server and release the transport, once; return the first error."""

    def _require_server(self) -> "Server":
        server = self._server
        if server is None:
            raise UDFError(f"{self._what} not opened: call open() first")
        return server

    # --- the server's API ------------------------------------------------------

    def info(self) -> Info:
        """Ask the agent what it wants, provides and accepts (Go: ``Info``)."""
        return self._require_server().info()

    def init(self, options: Options = None) -> None:
        """Initialize the agent (Go: ``Init``): ``agent_pb2.Option``s or a mapping (see :mod:`udf.options`)."""
        self._require_server().init(options)

    def abort(self, err: BaseException) -> None:
        """Abort the server with ``err`` (Go: ``Abort``); ``close()`` still releases everything.

        Before or during ``open()`` it cancels the open, which raises ``err``.
        """
        with self._lock:
            server = self._server
            if server is None:
                if self._pending_abort is None:
                    self._pending_abort = err
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
                self._abort_listeners.append(callback)
        if server is not None:
            server.add_abort_callback(callback)

    def snapshot(self) -> bytes:
        """The agent's state (Go: ``Snapshot``)."""
        return self._require_server().snapshot()

    def snapshot_with_position(self) -> Tuple[bytes, int]:
        """A snapshot and how many items ``put()`` had accepted before it (see :meth:`udf.Server.snapshot_with_position`)."""
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
