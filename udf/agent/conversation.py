"""One agent conversation: :class:`Agent` reads requests and writes responses.

Two threads per conversation. The *reader* (:class:`~udf.agent.reading.RequestReader`)
decodes requests and answers keepalives at once, even while the handler is
busy; the *handler* thread (:class:`~udf.agent.handling.HandlerLoop`) calls the
:class:`~udf.agent.handler.Handler`, fed by a bounded queue (``queue_size``),
which applies backpressure to the host. Both write through one
:class:`~udf.agent.output.FrameWriter`. :class:`Agent` owns the three and the
conversation's life: a state in table ``udf.agent.Agent``
(:mod:`udf.agent.states`), changed only by :meth:`Agent._fire` under its lock,
and the first fatal error.

Performance (measured by ``bench/``, see docs/performance.md):

* Input is read in ``READ_CHUNK`` pieces and split by the sans-I/O
  :class:`udf.wire.FrameDecoder`; decoded requests go to the queue in one
  ``put_many`` per read; the loops bind hot methods to locals.
* Output is buffered (:mod:`udf.agent.output`), so a burst of results costs one write.
* ``emit_point``/``emit_batch`` of :mod:`udf.models` values reuse the host's
  request encoders (:func:`udf.convert.encode_point`, ``encode_batch``): the
  BeginBatch/Point/EndBatch members are fields 16/17/18 of both ``Request`` and
  ``Response``, so a request frame has the bytes of the matching response frame.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import agent_pb2

from ..channel import Channel
from ..convert import encode_batch, encode_point
from ..errors import ChannelClosed, UDFError
from ..lifecycle import Lifecycle
from ..models import Batch, Point
from ..wire import DEFAULT_MAX_FRAME_SIZE, encode_frame
from .handler import Handler
from .handling import HandlerLoop
from .output import FLUSH_THRESHOLD, FrameWriter
from .reading import READ_CHUNK, ReadWatch, RequestReader
from .states import AGENT_FAILED, AGENT_TABLE, AgentEvent, AgentState

__all__ = ["Agent", "unbuffered", "READ_CHUNK", "REQUEST_QUEUE_SIZE", "FLUSH_THRESHOLD"]

#: Requests decoded ahead of the handler before the reader blocks (backpressure).
REQUEST_QUEUE_SIZE = 1024

_LOG = logging.getLogger("udf.agent")


def unbuffered(stream: Any) -> Any:
    """The unbuffered binary file under ``stream`` (``sys.stdin`` -> its ``FileIO``), else its buffer.

    A thread blocked in a read of a *buffered* stream holds the stream's lock;
    if that thread is a daemon when the interpreter exits, the exit dies with
    "Fatal Python error: _enter_buffered_busy". A raw file takes no lock.
    """
    buffer = getattr(stream, "buffer", stream)
    return getattr(buffer, "raw", buffer)


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...

    def close(self) -> None: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class Agent:
    """One UDF conversation over ``reader`` (requests in) and ``writer`` (responses out).

    ``reader``/``writer`` default to the process's stdin/stdout, unbuffered
    (see :func:`unbuffered`; the agent buffers its output itself). ``handler`` may
    also be assigned later (``agent.handler = MyHandler(agent)``, as with
    Kapacitor's agent), before :meth:`start`. Threads are named
    ``<name>-reader`` and ``<name>-handler``. ``read_watch`` (used by
    :class:`~udf.agent.server.AgentServer` to enforce its limits) is called by the
    reader after each read with the bytes of unfinished frames it holds and
    whether the read completed requests.

    At the end of the input, ``handler.stop()`` is called and the output is
    flushed and closed. A handler exception (or a malformed request stream) is
    reported to the host as an ``ErrorResponse``, then the agent stops: the
    handler's ``stop()`` runs, the output is closed, and the rest of the input
    is read and discarded until its end so that the host is never blocked
    writing to us.
    """

    def __init__(
        self,
        reader: _Reader | None = None,
        writer: _Writer | None = None,
        handler: Handler | None = None,
        *,
        logger: logging.Logger | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        queue_size: int = REQUEST_QUEUE_SIZE,
        name: str = "udf-agent",
        read_watch: ReadWatch | None = None,
    ) -> None:
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        self._input: Any = reader if reader is not None else unbuffered(sys.stdin)
        self._output = FrameWriter(writer if writer is not None else unbuffered(sys.stdout))
        self._handler: Handler | None = None
        self._logger = logger if logger is not None else _LOG
        self._max_frame_size = max_frame_size
        self._name = name
        self._read_watch = read_watch
        self._requests: Channel[tuple[str, Any]] = Channel(queue_size)
        self._lock = threading.Lock()  # guards the lifecycle, the error and the done callbacks
        self._changed = threading.Condition(self._lock)  # notified when the agent is done
        self._life = Lifecycle(AGENT_TABLE, AgentState.NEW)
        self._error: BaseException | None = None
        self._done_callbacks: list[Callable[[Agent], Any]] = []
        self._reader: RequestReader | None = None
        self._threads: tuple[threading.Thread, ...] = ()
        if handler is not None:
            self.handler = handler

    # --- configuration and facts -----------------------------------------------------

    @property
    def handler(self) -> Handler | None:
        """The handler; setting it also sets ``handler.agent`` if it has none."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        if self._life.state is not AgentState.NEW:
            raise UDFError("cannot change the handler of a started agent")
        if getattr(handler, "agent", None) is None:
            try:
                handler.agent = self
            except AttributeError:
                pass  # a handler with __slots__: it keeps its own reference
        self._handler = handler

    @property
    def name(self) -> str:
        """The prefix of this agent's thread names."""
        return self._name

    @property
    def state(self) -> AgentState:
        """Where the conversation is (table ``udf.agent.Agent``)."""
        return self._life.state

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the agent, or ``None`` (so far) for a clean run."""
        return self._error

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """``(reader, handler)`` threads once started, else ``()``: e.g. to tell whether code runs on them."""
        return self._threads

    @property
    def done(self) -> bool:
        """True once both threads have ended and the output is closed."""
        return self._life.state is AgentState.DONE

    @property
    def keepalives(self) -> int:
        """Keepalive requests answered so far by the reader thread."""
        return 0 if self._reader is None else self._reader.keepalives

    def add_done_callback(self, callback: Callable[[Agent], Any]) -> None:
        """Call ``callback(agent)`` once the agent is done (at once if it already is)."""
        with self._lock:
            if self._life.state is not AgentState.DONE:
                self._done_callbacks.append(callback)
                return
        callback(self)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and handler threads; returns at once."""
        with self._lock:
            if self._life.state is not AgentState.NEW:
                raise UDFError("agent already started")
            if self._handler is None:
                raise UDFError("agent has no handler")
            self._life.fire(AgentEvent.START)
            fail = self._fail
            self._reader = RequestReader(
                self._input, self._requests, self._output, fail, self._logger, self._max_frame_size, self._read_watch
            )
            handling = HandlerLoop(self._handler, self._requests, self._output, fail, self._logger)
            self._threads = (
                threading.Thread(target=self._run_reader, name=f"{self._name}-reader", daemon=True),
                threading.Thread(target=self._run_handler, args=(handling,), name=f"{self._name}-handler", daemon=True),
            )
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the agent is done (input ended, handler stopped, output closed).

        Returns False if ``timeout`` (seconds) passed first. The reason the
        agent stopped, if not a clean end of input, is :attr:`error`.
        """
        with self._lock:
            if self._life.state is AgentState.NEW:
                raise UDFError("agent not started")
            # Woken by _fire() when the last thread ends.
            if not self._changed.wait_for(lambda: self._life.state is AgentState.DONE, timeout):
                return False
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:
                thread.join()
        return True

    def run(self) -> None:
        """Start, wait until done, and raise :attr:`error` if there was one."""
        self.start()
        self.wait()
        if self._error is not None:
            raise self._error

    def abort(self, err: BaseException) -> None:
        """Stop the conversation with ``err`` without telling the host (e.g. on Ctrl-C).

        As after a fatal error: queued requests are dropped, ``handler.stop()``
        runs on the handler thread, the output is closed, and the reader
        discards the input until its end. Returns at once. Raises
        :class:`udf.UDFError` before :meth:`start`.
        """
        if self._life.state is AgentState.NEW:
            raise UDFError("agent not started")
        self._fail(err, report=False, log=False)

    def _fire(self, event: AgentEvent, error: BaseException | None = None) -> tuple[AgentState, AgentState]:
        """The one place the state changes: ``(before, after)``; a FAIL's error is kept if it is the first.

        Once done, the done callbacks run here, outside the lock.
        """
        callbacks: list[Callable[[Agent], Any]] = []
        with self._lock:
            before = self._life.state
            after = self._life.fire(event)
            if error is not None and self._error is None and before is not AgentState.DONE:
                self._error = error
            if after is AgentState.DONE and before is not AgentState.DONE:
                callbacks, self._done_callbacks = self._done_callbacks, []
                self._changed.notify_all()
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                self._logger.exception("agent done callback failed")
        return before, after

    def _fail(self, error: BaseException, report: bool, log: bool = True) -> None:
        """Record a fatal error; the first one is logged and reported to the host (if asked).

        Then stop taking requests and drop those queued (the handler finishes the
        one it holds).
        """
        before, _ = self._fire(AgentEvent.FAIL, error)
        if before in AGENT_FAILED or before is AgentState.DONE:
            return  # not the first error: the first one stays the error
        if log:
            self._logger.error("%s", error)
        if report:
            response = agent_pb2.Response(error=agent_pb2.ErrorResponse(error=str(error)))
            try:
                self._output.write(encode_frame(response.SerializeToString()), True)
            except UDFError:
                pass  # the host is gone: nobody to tell
        self._requests.close()
        _drop_queued(self._requests)

    def _run_reader(self) -> None:
        assert self._reader is not None
        try:
            self._reader.run()
        finally:
            # Fired before the queue closes, so the handler can end only after it.
            self._fire(AgentEvent.INPUT_ENDED)
            self._requests.close()

    def _run_handler(self, handling: HandlerLoop) -> None:
        try:
            handling.run()
        except BaseException as exc:  # e.g. SystemExit from a handler: no more requests are handled
            self._fail(UDFError(f"handler thread ended by {type(exc).__name__}"), True)
            raise
        finally:
            self._fire(AgentEvent.HANDLER_ENDED)

    # --- output ------------------------------------------------------------------------

    def write_response(self, response: Any, flush: bool = True) -> None:
        """Send one ``agent_pb2.Response`` to the host; thread safe.

        With ``flush=False`` the frame may wait in the agent's buffer (up to
        FLUSH_THRESHOLD bytes) for a later flush; the agent flushes on its own
        whenever the handler has no more requests queued. Raises
        :class:`udf.WriteError` if the host stopped reading, and
        :class:`udf.UDFError` once the output is closed.
        """
        if not isinstance(response, agent_pb2.Response):
            raise TypeError(f"write_response expects agent_pb2.Response, got {type(response).__name__}")
        self._output.write(encode_frame(response.SerializeToString()), flush)

    def write_responses(self, responses: Iterable[Any], flush: bool = True) -> None:
        """Send several ``agent_pb2.Response`` messages as one burst (one write)."""
        parts = []
        for response in responses:
            if not isinstance(response, agent_pb2.Response):
                raise TypeError(f"write_responses expects agent_pb2.Response, got {type(response).__name__}")
            parts.append(encode_frame(response.SerializeToString()))
        self._output.write(b"".join(parts), flush)

    def emit_point(self, point: Point | Any, flush: bool = True) -> None:
        """Send a stream point: a :class:`udf.Point` or an ``agent_pb2.Point``."""
        if isinstance(point, Point):
            self._output.write(encode_point(point), flush)
        else:
            self.write_response(agent_pb2.Response(point=point), flush)

    def emit_batch(self, batch: Batch, flush: bool = True) -> None:
        """Send a :class:`udf.Batch` as BeginBatch, its points and EndBatch, in one write."""
        self._output.write(encode_batch(batch), flush)

    def flush(self) -> None:
        """Write whatever the agent has buffered."""
        self._output.flush()


def _drop_queued(requests: Channel[tuple[str, Any]]) -> None:
    """Empty a closed queue: what was queued before a failure is dropped, not handled."""
    while True:
        try:
            requests.get(block=False)
        except (queue.Empty, ChannelClosed):
            return
