"""The host side of a UDF conversation over a pair of byte streams (Go: ``udf.Server``).

The server is a thin threaded layer over the pure modules: a writer thread moves
encoded frames from a bounded outbox to the agent's input, a reader thread moves
decoded responses from the agent's output to bounded channels and to the
callers of :meth:`Server.info` and friends, and, when a keepalive timeout is set,
a keepalive thread pings the agent and aborts the server when it goes quiet.

Its life is one :class:`ServerState`, changed only under ``Server._lock`` by the
methods in this table (docs/api.md draws it too)::

    state     start()     stop()               abort(err)            I/O threads end
    NEW       RUNNING     STOPPED              ABORTED               -
    RUNNING   error       STOPPING             ABORTED               -
    STOPPING  error       wait for the I/O     ABORTED               STOPPED
    STOPPED   error       return / raise       record err if none    -
    ABORTED   error       wait for the I/O     keep the first error  -

* ``stop()`` -- no more requests; queued data is written, the agent's input is
  closed, and the agent's output is read to its end.
* ``abort(err)`` -- ``err`` is recorded (first error wins), queued data is
  dropped, output channels close at once (naming ``err``), blocked callers are
  woken with the error, and the reader discards the agent's output until EOF.

Two facts are kept beside the state: the first error, and whether requests can
still be answered (not once the agent's output ended or a write to it failed).
"""

from __future__ import annotations

import collections
import datetime
import enum
import logging
import queue
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import agent_pb2

from .channel import Channel
from .convert import BATCH, POINTS, Info, ResponseDecoder, encode_batch, encode_point, encode_request, info_from_message
from .errors import (
    AgentClosedError,
    AgentError,
    ChannelClosed,
    InitError,
    ReadError,
    RestoreError,
    ServerStoppedError,
    UDFError,
    KeepaliveTimeoutError,
    WriteError,
)
from .models import Batch, Point
from .options import Options, build_options
from .stats import Stats
from .streams import describe_error as _describe
from .wire import DEFAULT_MAX_FRAME_SIZE, FrameDecoder

__all__ = ["Server", "ServerState", "Info"]

#: Default ``in_queue_size``: items (points, or whole batches) queued for the
#: writer before ``put`` blocks.
OUTBOX_SIZE = 1024
#: Default ``out_queue_size``: points or batches queued for the consumer before
#: the reader blocks.
OUT_CHANNEL_SIZE = 1024
#: Bytes asked of the agent's output per read.
READ_CHUNK = 256 * 1024
#: Bytes the writer gathers into one write call at most.
WRITE_BUDGET = 256 * 1024
#: How long a failed write waits, while the agent makes no progress, for its output
#: to end, so that what it wrote before dying is delivered and its exit status can
#: explain the failure.
WRITE_FAILURE_GRACE = 5.0

_REQUEST_KINDS = ("info", "init", "snapshot", "restore")


class _Outbox:
    """The writer thread's input: urgent frames (keepalives), then data and requests in order.

    Data is bounded (``put_data`` blocks when full: backpressure); requests are
    few (one per blocked caller, plus keepalives) and never block. ``close``
    lets the writer drain what is queued and end; ``abort`` drops everything.
    """

    OPEN, CLOSING, CLOSED = range(3)

    def __init__(self, maxsize: int) -> None:
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # the writer waits here
        self._not_full = threading.Condition(self._lock)  # producers wait here
        self._requests: Deque[bytes] = collections.deque()
        self._data: Deque[bytes] = collections.deque()
        self._data_bytes = 0  # total size of the frames in _data
        self._maxsize = maxsize
        self._state = self.OPEN
        self._cause: Optional[BaseException] = None  # why it was aborted, for put()'s error
        # Who is waiting, so that the hot paths notify (a pure-Python call of a
        # few microseconds) only when someone is: the writer in take(), and how
        # many producers in put_data(). Both are guarded by _lock.
        self._writer_waiting = False
        self._producers_waiting = 0
        #: Items accepted by put_data, by kind (POINT_ITEMS, BATCH_ITEMS); guarded by _lock.
        self.accepted = [0, 0]

    def put_data(self, frame: bytes, block: bool = True, timeout: Optional[float] = None, kind: int = 0) -> None:
        with self._lock:
            data = self._data
            if len(data) >= self._maxsize or self._state != self.OPEN:
                self._wait_for_room(block, timeout)
            self.accepted[kind] += 1
            data.append(frame)
            self._data_bytes += len(frame)
            if self._writer_waiting:
                self._wake_writer()

    def _wait_for_room(self, block: bool, timeout: Optional[float]) -> None:
        """put_data's slow path (call with _lock held): return once there is room, or raise.

        Raises ``queue.Full`` (not blocking, or at the timeout) or ChannelClosed.
        """
        data = self._data
        if self._state == self.OPEN and len(data) >= self._maxsize:
            if not block:
                raise queue.Full
            deadline = None if timeout is None else time.monotonic() + timeout
            self._producers_waiting += 1
            try:
                # Woken by take() (room) and by close()/abort().
                while self._state == self.OPEN and len(data) >= self._maxsize:
                    if deadline is None:
                        self._not_full.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise queue.Full
                        self._not_full.wait(remaining)
            finally:
                self._producers_waiting -= 1
        if self._state != self.OPEN:
            raise self._closed_error()

    def _closed_error(self) -> ChannelClosed:
        """put()'s error once the outbox is closed: why, with the abort error as ``__cause__``."""
        cause = self._cause
        if cause is None:
            return ChannelClosed("put on a closed channel: the server is stopping")
        error = ChannelClosed(f"put on a closed channel: the server aborted: {cause}")
        error.__cause__ = cause
        return error

    def _wake_writer(self) -> None:
        """Wake the writer waiting in take() (call with _lock held)."""
        self._writer_waiting = False
        self._not_empty.notify()

    def put_request(self, frame: bytes, urgent: bool = False) -> int:
        """Queue a request frame without blocking; return how many data items were accepted before it.

        A request goes behind the data already queued, so that data put before
        a snapshot() is written before the SnapshotRequest (as Go's unbuffered
        channels guarantee); an ``urgent`` one (a keepalive) goes ahead of it.
        """
        with self._lock:
            if self._state == self.CLOSED:
                raise self._closed_error()
            if urgent:
                self._requests.append(frame)
            else:
                self._data.append(frame)
                self._data_bytes += len(frame)
            if self._writer_waiting:
                self._wake_writer()
            return self.accepted[0] + self.accepted[1]

    def close(self) -> None:
        """Refuse new data; the writer ends once the queue is drained."""
        with self._lock:
            if self._state == self.OPEN:
                self._state = self.CLOSING
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def abort(self, cause: BaseException) -> None:
        """Drop everything queued and end the writer at its next take(); ``put`` then names ``cause``."""
        with self._lock:
            self._state = self.CLOSED
            self._cause = cause
            self._requests.clear()
            self._data.clear()
            self._data_bytes = 0
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def qsize(self) -> int:
        return len(self._data)

    def take(self) -> Optional[List[bytes]]:
        """Wait for frames and take them all (up to WRITE_BUDGET bytes); ``None`` means end."""
        with self._lock:
            requests, data = self._requests, self._data
            # Woken by put_data()/put_request(), close() and abort().
            while not requests and not data and self._state == self.OPEN:
                self._writer_waiting = True
                self._not_empty.wait()
            self._writer_waiting = False
            if self._state == self.CLOSED or (not requests and not data):
                return None
            out = list(requests)
            requests.clear()
            if self._data_bytes <= WRITE_BUDGET:  # the usual case: take everything at once
                out.extend(data)
                data.clear()
                self._data_bytes = 0
            else:
                size = 0
                popleft = data.popleft
                while data and size < WRITE_BUDGET:
                    frame = popleft()
                    size += len(frame)
                    out.append(frame)
                self._data_bytes -= size
            if self._producers_waiting:
                self._not_full.notify_all()
            return out


class _Inlet:
    """The send side of ``point_in``/``batch_in``: validate and encode at ``put``.

    Encoding in the caller's thread means a bad point raises ``TypeError`` or
    ``ValueError`` naming the field before anything is queued or written.
    """

    __slots__ = ("_encode", "_outbox", "_kind")

    def __init__(self, encode: Callable[[Any], bytes], outbox: _Outbox, kind: int) -> None:
        self._encode = encode
        self._outbox = outbox
        self._kind = kind  # which of outbox.accepted counts this inlet's items

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send ``item`` to the agent, blocking while the outbox is full."""
        self._outbox.put_data(self._encode(item), block, timeout, self._kind)

    def put_encoded(self, frame: bytes, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send an item already encoded by ``udf.convert.encode_point``/``encode_batch``.

        For callers that keep items as frames (a replay log): the frame is
        written as it is, without validating it again.
        """
        self._outbox.put_data(frame, block, timeout, self._kind)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def qsize(self) -> int:
        return self._outbox.qsize()


class _Pending:
    """One request call waiting for its response; resolved by the reader or by abort."""

    __slots__ = ("event", "response", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: Any = None
        self.error: Optional[BaseException] = None

    def resolve(self, response: Any) -> None:
        self.response = response
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


class ServerState(enum.Enum):
    """Where a :class:`Server` is in its life (see the table in this module's docstring)."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ABORTED = "aborted"


_NEW, _RUNNING, _STOPPING, _STOPPED, _ABORTED = ServerState


class _Aborted(Exception):
    """Raised inside the reader when delivery meets the abort: switch to discarding."""


def _seconds(timeout: Union[float, datetime.timedelta]) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be seconds (float) or a timedelta, got {type(timeout).__name__}")
    return float(timeout)


#: ``explain_failure``: turns an I/O-level failure into the most specific error known.
FailureExplainer = Callable[[UDFError], BaseException]
#: ``add_abort_callback``: called once with the server's first error.
AbortListener = Callable[[BaseException], Any]


class Server:
    """Talk to one UDF agent over ``reader`` (its output) and ``writer`` (its input).

    Go: ``udf.NewServer``. ``timeout`` is the keepalive timeout in seconds (or a
    ``timedelta``); ``<= 0`` disables keepalives. ``abort_callback`` runs exactly
    once when the server aborts; ``kill_callback`` runs if the I/O has not ended
    ``2 * timeout`` after a keepalive abort began. The server closes ``writer``
    when its writer thread ends.

    ``explain_failure(err)``, if given, is called from a server thread with a
    failure seen at the I/O level (a read or write error, the agent's EOF with
    requests unanswered, a frame cut short by EOF) and returns the error to
    report instead, e.g. the child's exit status (``udf.Process`` passes one);
    it may block briefly. ``in_queue_size`` and ``out_queue_size`` bound the
    items queued for the writer and for each output channel.
    """

    def __init__(
        self,
        reader: Any,
        writer: Any,
        logger: Optional[logging.Logger] = None,
        timeout: Union[float, datetime.timedelta] = 0.0,
        abort_callback: Optional[Callable[[], Any]] = None,
        kill_callback: Optional[Callable[[], Any]] = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        explain_failure: Optional[FailureExplainer] = None,
        in_queue_size: int = OUTBOX_SIZE,
        out_queue_size: int = OUT_CHANNEL_SIZE,
    ) -> None:
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        if in_queue_size <= 0 or out_queue_size <= 0:
            raise ValueError(f"queue sizes must be positive, got {in_queue_size} and {out_queue_size}")
        self._reader = reader
        self._writer = writer
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._timeout = _seconds(timeout)
        self._abort_callback = abort_callback
        self._kill_callback = kill_callback
        self._max_frame_size = max_frame_size
        self._explain_failure = explain_failure

        self._outbox = _Outbox(in_queue_size)
        self._point_in = _Inlet(encode_point, self._outbox, 0)
        self._batch_in = _Inlet(encode_batch, self._outbox, 1)
        self._point_out: Channel[Point] = Channel(out_queue_size)
        self._batch_out: Channel[Batch] = Channel(out_queue_size)

        # Decided under _lock, acted upon outside it.
        self._lock = threading.Lock()
        self._state = _NEW
        self._err: Optional[BaseException] = None
        #: Why requests can no longer be answered: the agent's output ended
        #: (AgentClosedError) or a write to it failed (WriteError).
        self._unanswerable: Optional[UDFError] = None
        self._abort_listeners: List[AbortListener] = []
        self._abort_callbacks_ran = False
        self._discarding = False  # discard_output() was called
        self._waiters: Dict[str, Deque[_Pending]] = {kind: collections.deque() for kind in _REQUEST_KINDS}

        # Set once each. The keepalive thread waits on _quiet (stop, abort or
        # the reader's end); _reader_done and _io_done mark the I/O threads' ends.
        self._quiet = threading.Event()
        self._reader_done = threading.Event()
        self._io_done = threading.Event()
        self._threads: List[threading.Thread] = []
        self._io_running = 2

        # Progress of the agent: when it last sent bytes, when a write to it last
        # completed (or its input was closed), and whether the reader is blocked
        # handing results to a slow consumer (not the agent's fault).
        self._last_seen = time.monotonic()
        self._last_write = 0.0
        self._delivering = False
        self._input_closed = False

        # Health counters for stats(), each written by one thread only (the
        # reader, the writer) or under _lock (requests, errors).
        self._started_at: Optional[float] = None
        self._bytes_in = 0
        self._bytes_out = 0
        self._points_out = 0
        self._batches_out = 0
        self._dropped = 0
        self._requests_sent: Dict[str, int] = {}
        self._errors = 0
        self._keepalive_rtt: Optional[float] = None

    # --- channels -------------------------------------------------------------

    @property
    def point_in(self) -> _Inlet:
        """Send side for stream points (Go: ``PointIn``); ``put(point)`` blocks when full."""
        return self._point_in

    @property
    def batch_in(self) -> _Inlet:
        """Send side for batches (Go: ``BatchIn``)."""
        return self._batch_in

    @property
    def point_out(self) -> Channel[Point]:
        """Points the agent sent (Go: ``PointOut``); closed at EOF or abort."""
        return self._point_out

    @property
    def batch_out(self) -> Channel[Batch]:
        """Batches the agent sent (Go: ``BatchOut``); closed at EOF or abort."""
        return self._batch_out

    # --- lifecycle ------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        """The server's current :class:`ServerState`."""
        return self._state

    @property
    def error(self) -> Optional[BaseException]:
        """The first error recorded (the abort error), or ``None``; readable at any time."""
        return self._err

    @property
    def input_closed(self) -> bool:
        """Whether the writer has ended and closed the agent's input."""
        return self._input_closed

    def start(self) -> None:
        """Start the reader, writer and (with a timeout) keepalive threads (Go: ``Start``)."""
        with self._lock:
            state = self._state
            if state is _NEW:
                self._state = _RUNNING
        if state is _RUNNING or state is _STOPPING:
            raise UDFError("server already started")
        if state is _STOPPED:
            raise ServerStoppedError()
        if state is _ABORTED:
            raise UDFError(f"server already aborted: {self._err}") from self._err
        self._last_seen = self._started_at = time.monotonic()
        targets = [("udf-writer", self._write_loop), ("udf-reader", self._read_loop)]
        if self._timeout > 0:
            targets.append(("udf-keepalive", self._keepalive_loop))
        self._threads = [threading.Thread(target=t, name=n, daemon=True) for n, t in targets]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish cleanly (Go: ``Stop``) and raise the first error, if any.

        Call once you have stopped putting data, and keep draining ``point_out``/
        ``batch_out`` meanwhile: queued data is written, the agent's input is
        closed, and this returns when the agent's output has ended. Safe from
        any thread; from the server's own threads it does not wait for them.
        """
        with self._lock:
            state = self._state
            if state is _NEW:
                self._state = _STOPPED
            elif state is _RUNNING:
                self._state = _STOPPING
        if state is _NEW:  # never started: nothing to wait for
            self._close_writer()
            self._end_reader()
            self._io_done.set()
        elif state is _RUNNING:
            self._quiet.set()
            self._outbox.close()
        self.wait_io()
        err = self._err
        if err is not None:
            raise err

    def abort(self, err: BaseException) -> None:
        """Tear the server down now, recording ``err`` if it is the first error (Go: ``Abort``).

        Safe from any thread, including the callbacks; idempotent. The abort
        callback and the listeners of :meth:`add_abort_callback` run once.
        """
        with self._lock:
            self._errors += 1
            if self._err is None:
                self._err = err
            first_err = self._err
            never_started = self._state is _NEW
            tear_down = never_started or self._state is _RUNNING or self._state is _STOPPING
            if tear_down:
                self._state = _ABORTED
            waiters = self._take_waiters() if tear_down else []
            run_callbacks = not self._abort_callbacks_ran
            self._abort_callbacks_ran = True
            listeners = list(self._abort_listeners) if run_callbacks else []
        if tear_down:
            self._quiet.set()
            self._outbox.abort(first_err)
            self._point_out.close(first_err)
            self._batch_out.close(first_err)
            for waiter in waiters:
                waiter.fail(first_err)
            if never_started:  # no I/O thread will end it: release the streams now
                self._close_writer()
                self._end_reader()
                self._io_done.set()
        if run_callbacks:
            if self._abort_callback is not None:
                self._call_safely("abort callback", self._abort_callback)
            for listener in listeners:
                self._call_safely("abort listener", listener, first_err)

    def add_abort_callback(self, callback: AbortListener) -> None:
        """Call ``callback(err)`` once when the server aborts, ``err`` being its first error.

        Unlike the constructor's ``abort_callback`` any number can be added,
        by anyone (a supervisor, a monitor); added after the abort, it is
        called at once.
        """
        with self._lock:
            ran = self._abort_callbacks_ran
            if not ran:
                self._abort_listeners.append(callback)
            err = self._err
        if ran and err is not None:
            self._call_safely("abort listener", callback, err)

    def _call_safely(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a user callback; its exception is logged, never raised into our threads."""
        try:
            fn(*args)
        except Exception:
            self._logger.exception("%s failed", what)

    def discard_output(self) -> None:
        """Stop delivering the agent's points and batches: drop them, and close ``point_out``/``batch_out``.

        For an owner that wants no more output but a clean stop (``close()``
        without a consumer would otherwise wait for one): requests are still
        answered, and the agent can finish writing and exit.
        """
        with self._lock:
            self._discarding = True
        self._point_out.close()
        self._batch_out.close()

    def wait_io(
        self, timeout: Optional[float] = None, *, idle: Optional[float] = None, output_only: bool = False
    ) -> bool:
        """Wait until both I/O threads have ended (Go: ``WaitIO``); False on timeout.

        ``output_only``: wait for the reader only (the agent's output ended and
        everything read was delivered). ``idle``: also return False once the
        agent has made no progress for ``idle`` seconds -- progress being bytes
        from it, a completed write to it (or its input being closed), or the
        reader waiting on a slow consumer, which is not the agent's fault.
        """
        if self._started_at is None:
            return True
        if self.in_server_thread():
            # Called from the reader or writer itself (e.g. stop() in an abort
            # callback): its own end cannot be awaited here.
            return (self._reader_done if output_only else self._io_done).is_set()
        event = self._reader_done if output_only else self._io_done
        if idle is None:
            done = event.wait(timeout)
        else:
            done = self._wait_while_busy(event, idle, timeout)
        if done and not output_only:
            self._join_threads()
        return done

    def _wait_while_busy(self, event: threading.Event, idle: float, timeout: Optional[float]) -> bool:
        """Wait for ``event`` while the agent makes progress (see :meth:`wait_io`)."""
        begin = time.monotonic()
        deadline = None if timeout is None else begin + timeout
        while True:
            now = time.monotonic()
            last = now if self._delivering else max(begin, self._last_seen, self._last_write)
            wake = last + idle if deadline is None else min(last + idle, deadline)
            if wake <= now:
                return event.is_set()
            # Set by the reader's or the writer's end.
            if event.wait(wake - now):
                return True

    def in_server_thread(self) -> bool:
        """Whether the caller runs in one of this server's threads (its callbacks do)."""
        return threading.current_thread() in self._threads

    def stats(self) -> Stats:
        """A snapshot of counters and queue depths (cheap: no I/O, one short lock)."""
        with self._lock:
            requests = dict(self._requests_sent)
            errors = self._errors
            err = self._err
            state = self._state.value
        started = self._started_at
        accepted = self._outbox.accepted
        return Stats(
            state=state,
            uptime=0.0 if started is None else time.monotonic() - started,
            points_in=accepted[0],
            batches_in=accepted[1],
            points_out=self._points_out,
            batches_out=self._batches_out,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            requests=requests,
            errors=errors,
            error=None if err is None else str(err),
            in_queue=self._outbox.qsize(),
            point_out_queue=self._point_out.qsize(),
            batch_out_queue=self._batch_out.qsize(),
            keepalive_rtt=self._keepalive_rtt,
            dropped=self._dropped,
        )

    def _io_thread_ended(self) -> None:
        """Called last by each I/O thread; the second one ends the I/O (STOPPING -> STOPPED)."""
        with self._lock:
            self._io_running -= 1
            done = self._io_running == 0
            if done and self._state is _STOPPING:
                self._state = _STOPPED
        if done:
            self._io_done.set()

    def _join_threads(self) -> None:
        # Once the I/O is done the helper threads end promptly: the reader's
        # end set _quiet (keepalive) and _io_done (killer). The killer may be
        # appended while we join, hence the loop. Never join the calling thread.
        me = threading.current_thread()
        joined = 0
        while joined < len(self._threads):
            thread = self._threads[joined]
            if thread is not me:
                thread.join()
            joined += 1

    def _explain(self, error: UDFError) -> BaseException:
        """The most specific error for an I/O-level failure (see ``explain_failure``)."""
        explain = self._explain_failure
        return explain(error) if explain is not None else error

    # --- requests -------------------------------------------------------------

    def info(self) -> Info:
        """Ask the agent what it wants, provides and accepts (Go: ``Info``)."""
        response, _ = self._request("info", agent_pb2.Request(info=agent_pb2.InfoRequest()))
        return info_from_message(response.info)

    def init(self, options: Options = None) -> None:
        """Initialize the agent (Go: ``Init``); raises InitError.

        ``options``: a list of ``agent_pb2.Option``, or a mapping ``{name: value
        or [values]}`` typed by :func:`udf.options.build_options`.
        """
        built = build_options(options)
        request = agent_pb2.Request()
        init = request.init
        init.SetInParent()
        if built:
            init.options.extend(built)
        response, _ = self._request("init", request)
        if not response.init.success:
            raise InitError(response.init.error)

    def snapshot(self) -> bytes:
        """Ask the agent for a snapshot of its state (Go: ``Snapshot``)."""
        return self.snapshot_with_position()[0]

    def snapshot_with_position(self) -> Tuple[bytes, int]:
        """A snapshot, and how many items (points and batches) ``put()`` had accepted before it was asked for.

        The snapshot covers exactly those items: the request is queued behind
        them, under the same lock that counts them, without stopping producers
        for the round trip.
        """
        response, position = self._request("snapshot", agent_pb2.Request(snapshot=agent_pb2.SnapshotRequest()))
        return bytes(response.snapshot.snapshot), position

    def restore(self, snapshot: bytes) -> None:
        """Restore the agent's state from ``snapshot`` (Go: ``Restore``); raises RestoreError."""
        if not isinstance(snapshot, (bytes, bytearray, memoryview)):
            raise TypeError(f"snapshot must be bytes, got {type(snapshot).__name__}")
        request = agent_pb2.Request(restore=agent_pb2.RestoreRequest(snapshot=bytes(snapshot)))
        response, _ = self._request("restore", request)
        if not response.restore.success:
            raise RestoreError(response.restore.error)

    def _request(self, kind: str, request: Any) -> Tuple[Any, int]:
        """Send a request and wait for its response, the abort error or the agent's EOF.

        Returns the response and the number of data items queued before the request.
        """
        frame = encode_request(request)
        pending = _Pending()
        position = 0
        with self._lock:
            state = self._state
            if state is _STOPPING or state is _STOPPED:
                raise self._err if self._err is not None else ServerStoppedError()
            if state is _ABORTED:
                assert self._err is not None
                raise self._err
            if state is _NEW:
                raise UDFError("server not started")
            unanswerable = self._unanswerable
            if unanswerable is None:
                # Queue the frame and the waiter together, so that waiters are
                # in the order the agent answers.
                position = self._outbox.put_request(frame)
                self._waiters[kind].append(pending)
                self._requests_sent[kind] = self._requests_sent.get(kind, 0) + 1
        if unanswerable is not None:
            raise self._explain(unanswerable)
        # Woken by the reader (_answer, _end_reader) or by abort().
        pending.event.wait()
        if pending.error is not None:
            raise pending.error
        return pending.response, position

    def _take_waiters(self) -> List[_Pending]:
        """Remove and return every request call still waiting (call with _lock held)."""
        waiters = [w for waiting in self._waiters.values() for w in waiting]
        for waiting in self._waiters.values():
            waiting.clear()
        return waiters

    def _answer(self, kind: str, response: Any) -> None:
        with self._lock:
            waiters = self._waiters[kind]
            pending = waiters.popleft() if waiters else None
            if pending is None:
                self._errors += 1
        if pending is None:
            self._logger.error("received %s response without requesting it", kind)
        else:
            pending.resolve(response)

    # --- writer thread --------------------------------------------------------

    def _write_loop(self) -> None:
        """The writer thread: write until stop or abort, then report a write failure."""
        try:
            error = self._write_frames()
            if error is not None:
                self._write_failed(error)
        finally:
            self._io_thread_ended()

    def _write_frames(self) -> Optional[UDFError]:
        """Write queued frames, many per write call; close the stream at the end."""
        write = self._writer.write
        flush = getattr(self._writer, "flush", None)
        take = self._outbox.take
        monotonic = time.monotonic
        error: Optional[UDFError] = None
        try:
            while True:
                frames = take()
                if frames is None:
                    break
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                written = write(data)
                if written is not None and written < len(data):
                    _write_rest(write, memoryview(data)[written:])
                if flush is not None:
                    flush()
                self._bytes_out += len(data)
                self._last_write = monotonic()
        except Exception as exc:  # OSError (EPIPE, ...), ValueError (closed file), a broken writer
            error = WriteError(_describe(exc))
        finally:
            self._close_writer()
            self._input_closed = True
            self._last_write = monotonic()  # closing the agent's input starts its time to finish
        return error

    def _close_writer(self) -> None:
        try:
            self._writer.close()
        except (OSError, ValueError):
            pass  # the agent already stopped reading; nothing is lost by not flushing into a dead pipe

    def _write_failed(self, error: UDFError) -> None:
        """The agent stopped reading: refuse more data, then abort with the best explanation.

        What the agent wrote before its output ended is still delivered first.
        """
        with self._lock:
            if self._unanswerable is None:
                self._unanswerable = error
        self._outbox.abort(error)
        self._wait_while_busy(self._reader_done, WRITE_FAILURE_GRACE, None)
        self.abort(self._explain(error))

    # --- reader thread --------------------------------------------------------

    def _read_loop(self) -> None:
        """Read the agent's output to EOF, dispatching responses until an error or abort."""
        read = getattr(self._reader, "read1", None) or self._reader.read
        decoder = FrameDecoder(self._max_frame_size)
        responses = ResponseDecoder()
        try:
            while True:
                data = read(READ_CHUNK)
                if not data:
                    break
                self._last_seen = time.monotonic()
                self._bytes_in += len(data)
                if self._state is _ABORTED:
                    continue  # discard: the agent must be able to finish writing
                frames = decoder.feed_frames(data)
                if frames:
                    self._dispatch(frames, responses)
                    decoder.check()
            if self._state is not _ABORTED:
                self._check_complete(decoder, responses)
        except (OSError, ValueError) as exc:
            self.abort(self._explain(ReadError(_describe(exc))))
        except _Aborted:
            self._discard_rest(read)
        except UDFError as exc:
            self.abort(exc)
            self._discard_rest(read)
        except Exception as exc:  # a bug of ours: never let the reader die silently
            self._logger.exception("udf reader failed")
            self.abort(ReadError(f"unexpected {type(exc).__name__}: {exc}"))
            self._discard_rest(read)
        finally:
            self._end_reader()
            self._io_thread_ended()

    def _check_complete(self, decoder: FrameDecoder, responses: ResponseDecoder) -> None:
        """At EOF: a frame or a batch cut short is an error, explained (a dead child's exit says why)."""
        try:
            decoder.eof()
            responses.eof()
        except UDFError as exc:
            self.abort(self._explain(exc))

    def _discard_rest(self, read: Callable[[int], bytes]) -> None:
        try:
            while read(READ_CHUNK):
                self._last_seen = time.monotonic()
        except (OSError, ValueError):
            pass

    def _end_reader(self) -> None:
        """The agent's output ended: close the channels and release request callers."""
        with self._lock:
            if self._unanswerable is None:
                self._unanswerable = AgentClosedError()
            unanswerable = self._unanswerable
            waiters = self._take_waiters()
            err = self._err
        self._point_out.close(err)
        self._batch_out.close(err)
        if waiters:
            failure = err if err is not None else self._explain(unanswerable)
            for waiter in waiters:
                waiter.fail(failure)
        self._reader_done.set()
        self._quiet.set()

    def _dispatch(self, frames: List[bytes], responses: ResponseDecoder) -> None:
        """Decode a run of frames and hand each result to its destination, in order."""
        events, error = responses.decode_frames(frames)
        for kind, item in events:
            if kind is POINTS:
                if self._deliver(self._point_out, item):
                    self._points_out += len(item)
            elif kind is BATCH:
                if self._deliver(self._batch_out, [item]):
                    self._batches_out += 1
            elif kind == "keepalive":
                sent_ns = item.keepalive.time  # agents echo the request's time
                now_ns = time.time_ns()
                if 0 < sent_ns <= now_ns:
                    self._keepalive_rtt = (now_ns - sent_ns) / 1e9
            else:
                self._answer(kind, item)
        if error is not None:
            if isinstance(error, AgentError):
                self._logger.error("%s", error)
            raise error

    def _deliver(self, channel: Channel[Any], items: List[Any]) -> bool:
        """Hand ``items`` to the consumer; False if dropped (its channel was closed by the consumer)."""
        # While blocked on a slow consumer the agent is not to blame: the
        # keepalive watcher and close()'s escalation treat this time as progress.
        self._delivering = True
        try:
            channel.put_many(items)
            return True
        except ChannelClosed:
            if self._state is _ABORTED:
                raise _Aborted from None
            self._dropped_output(channel, len(items))
            return False
        finally:
            self._delivering = False
            self._last_seen = time.monotonic()

    def _dropped_output(self, channel: Channel[Any], count: int) -> None:
        """A closed output channel that was not closed by us: its consumer wants no more; drop."""
        first = self._dropped == 0
        self._dropped += count
        if first and not self._discarding:
            which = "point_out" if channel is self._point_out else "batch_out"
            self._logger.warning(
                "%s was closed by its consumer: dropping what the agent sends there (requests are still answered)",
                which,
            )

    # --- keepalive thread -----------------------------------------------------

    def _keepalive_loop(self) -> None:
        """Send a KeepaliveRequest every timeout/2; abort if nothing arrives for timeout."""
        timeout = self._timeout
        interval = timeout / 2
        next_ping = time.monotonic() + interval
        while True:
            now = time.monotonic()
            wake = min(next_ping, self._last_seen + timeout)
            # Woken by stop(), abort() or the reader's end.
            if self._quiet.wait(max(0.0, wake - now)):
                return
            now = time.monotonic()
            if self._delivering:
                self._last_seen = now
            if now - self._last_seen >= timeout:
                self._keepalive_timed_out(now)
                return
            if now >= next_ping:
                ping = agent_pb2.Request(keepalive=agent_pb2.KeepaliveRequest(time=time.time_ns()))
                try:
                    self._outbox.put_request(encode_request(ping), urgent=True)
                except ChannelClosed:
                    return
                with self._lock:
                    self._requests_sent["keepalive"] = self._requests_sent.get("keepalive", 0) + 1
                next_ping = now + interval

    def _keepalive_timed_out(self, now: float) -> None:
        last_ns = time.time_ns() - int((now - self._last_seen) * 1e9)
        err = KeepaliveTimeoutError(last_ns)
        self._logger.error("%s", err)
        killer = threading.Thread(target=self._kill_if_stuck, name="udf-killer", daemon=True)
        self._threads.append(killer)
        killer.start()
        self.abort(err)

    def _kill_if_stuck(self) -> None:
        """Call kill_callback if the I/O has not ended 2*timeout after a keepalive abort."""
        if not self._io_done.wait(2 * self._timeout) and self._kill_callback is not None:
            self._logger.error("process not responding! killing")
            self._call_safely("kill callback", self._kill_callback)


def _write_rest(write: Callable[[Any], Optional[int]], view: memoryview) -> None:
    """Finish a partial write (raw streams may accept fewer bytes than given)."""
    while view:
        written = write(view)
        if not written:
            raise OSError("write accepted no bytes")
        view = view[written:]

