"""One agent conversation: :class:`Agent` reads requests and writes responses.

Two threads per conversation. The *reader* decodes requests and answers
keepalives at once, even while the handler is busy; the *handler* thread calls
the :class:`~udf.agent.handler.Handler`, fed by a bounded queue
(``queue_size``), which applies backpressure to the host.

Performance (measured by ``bench/``, see docs/performance.md):

* Input is read in ``READ_CHUNK`` pieces and split by the sans-I/O
  :class:`udf.wire.FrameDecoder`: one read call per many frames, not one per
  length prefix as Kapacitor's agent does. Decoded requests go to the queue in
  one ``put_many`` per read; the loops bind hot methods to locals.
* Output is buffered: every response is appended to one buffer, written in one
  call when flushed, when it exceeds ``FLUSH_THRESHOLD``, or when the handler
  thread goes idle, so a burst of results costs one write.
* ``emit_point``/``emit_batch`` of :mod:`udf.models` values reuse the host's
  request encoders (:func:`udf.convert.encode_point`, ``encode_batch``): the
  BeginBatch/Point/EndBatch members are fields 16/17/18 of both ``Request`` and
  ``Response``, so a request frame has the bytes of the matching response frame.
"""

from __future__ import annotations

import errno
import logging
import queue
import sys
import threading
from typing import Any, Callable, Iterable, List, Optional, Protocol, Tuple, Union

import agent_pb2

from ..channel import Channel
from ..convert import encode_batch, encode_point
from ..errors import ChannelClosed, ProtocolError, ReadError, UDFError, WriteError
from ..models import Batch, Point
from ..streams import describe_error as _describe
from ..wire import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame, parse_payload
from .handler import Handler, as_response

__all__ = ["Agent", "unbuffered", "READ_CHUNK", "REQUEST_QUEUE_SIZE", "FLUSH_THRESHOLD"]

#: Bytes asked of the input per read.
READ_CHUNK = 256 * 1024
#: Requests decoded ahead of the handler before the reader blocks (backpressure).
REQUEST_QUEUE_SIZE = 1024
#: Buffered output that is written even without a flush.
FLUSH_THRESHOLD = 256 * 1024

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
    def read(self, size: int = -1, /) -> Optional[bytes]: ...

    def close(self) -> None: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> Optional[int]: ...

    def close(self) -> None: ...


class Agent:
    """One UDF conversation over ``reader`` (requests in) and ``writer`` (responses out).

    ``reader``/``writer`` default to the process's stdin/stdout, unbuffered
    (see :func:`unbuffered`; the agent buffers its output itself). ``handler`` may
    also be assigned later (``agent.handler = MyHandler(agent)``, as with
    Kapacitor's agent), before :meth:`start`. Threads are named
    ``<name>-reader`` and ``<name>-handler``.

    At the end of the input, ``handler.stop()`` is called and the output is
    flushed and closed. A handler exception (or a malformed request stream) is
    reported to the host as an ``ErrorResponse``, then the agent stops: the
    handler's ``stop()`` runs, the output is closed, and the rest of the input
    is read and discarded until its end so that the host is never blocked
    writing to us.
    """

    def __init__(
        self,
        reader: Optional[_Reader] = None,
        writer: Optional[_Writer] = None,
        handler: Optional[Handler] = None,
        *,
        logger: Optional[logging.Logger] = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        queue_size: int = REQUEST_QUEUE_SIZE,
        name: str = "udf-agent",
    ) -> None:
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        self._reader: Any = reader if reader is not None else unbuffered(sys.stdin)
        self._writer: Any = writer if writer is not None else unbuffered(sys.stdout)
        self._handler: Optional[Handler] = None
        self._logger = logger if logger is not None else _LOG
        self._max_frame_size = max_frame_size
        self._name = name
        self._requests: Channel[Tuple[str, Any]] = Channel(queue_size)

        self._write_lock = threading.Lock()  # guards _out, _out_closed and writes
        self._out = bytearray()
        self._out_closed = False

        self._state_lock = threading.Lock()
        self._started = False
        self._failed = False
        self._error: Optional[BaseException] = None
        self._running = 0
        self._done = threading.Event()
        self._done_callbacks: List[Callable[["Agent"], Any]] = []
        self._threads: List[threading.Thread] = []
        #: Keepalive requests answered so far by the reader thread.
        self.keepalives = 0
        if handler is not None:
            self.handler = handler

    # --- configuration ----------------------------------------------------------

    @property
    def handler(self) -> Optional[Handler]:
        """The handler; setting it also sets ``handler.agent`` if it has none."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        if self._started:
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
    def error(self) -> Optional[BaseException]:
        """The error that stopped the agent, or ``None`` (so far) for a clean run."""
        return self._error

    @property
    def threads(self) -> Tuple[threading.Thread, ...]:
        """``(reader, handler)`` threads once started, else ``()``: e.g. to tell whether code runs on them."""
        return tuple(self._threads)

    @property
    def done(self) -> bool:
        """True once both threads have ended and the output is closed."""
        return self._done.is_set()

    def add_done_callback(self, callback: Callable[["Agent"], Any]) -> None:
        """Call ``callback(agent)`` once the agent is done (at once if it already is)."""
        with self._state_lock:
            if not self._done.is_set():
                self._done_callbacks.append(callback)
                return
        callback(self)

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and handler threads; returns at once."""
        with self._state_lock:
            if self._started:
                raise UDFError("agent already started")
            if self._handler is None:
                raise UDFError("agent has no handler")
            self._started = True
            self._running = 2
        self._threads = [
            threading.Thread(target=self._read_loop, name=f"{self._name}-reader", daemon=True),
            threading.Thread(target=self._handle_loop, name=f"{self._name}-handler", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the agent is done (input ended, handler stopped, output closed).

        Returns False if ``timeout`` (seconds) passed first. The reason the
        agent stopped, if not a clean end of input, is :attr:`error`.
        """
        if not self._started:
            raise UDFError("agent not started")
        if not self._done.wait(timeout):
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
        discards the input until its end. Returns at once.
        """
        self._fail(err, report=False, log=False)

    def _thread_ended(self) -> None:
        with self._state_lock:
            self._running -= 1
            if self._running:
                return
            callbacks, self._done_callbacks = self._done_callbacks, []
            self._done.set()
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                self._logger.exception("agent done callback failed")

    def _fail(self, err: BaseException, report: bool, log: bool = True) -> None:
        """Record a fatal error, report it to the host if asked, and stop taking requests."""
        with self._state_lock:
            first = not self._failed
            self._failed = True
            if self._error is None:
                self._error = err
        if first:
            if log:
                self._logger.error("%s", err)
            if report:
                response = agent_pb2.Response(error=agent_pb2.ErrorResponse(error=str(err)))
                try:
                    self.write_response(response, flush=True)
                except UDFError:
                    pass  # the host is gone: nobody to tell
        self._requests.close()

    # --- output ----------------------------------------------------------------

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
        self._write_frames(encode_frame(response.SerializeToString()), flush)

    def write_responses(self, responses: Iterable[Any], flush: bool = True) -> None:
        """Send several ``agent_pb2.Response`` messages as one burst (one write)."""
        parts = []
        for response in responses:
            if not isinstance(response, agent_pb2.Response):
                raise TypeError(f"write_responses expects agent_pb2.Response, got {type(response).__name__}")
            parts.append(encode_frame(response.SerializeToString()))
        self._write_frames(b"".join(parts), flush)

    def emit_point(self, point: Union[Point, Any], flush: bool = True) -> None:
        """Send a stream point: a :class:`udf.Point` or an ``agent_pb2.Point``."""
        if isinstance(point, Point):
            self._write_frames(encode_point(point), flush)
        else:
            self.write_response(agent_pb2.Response(point=point), flush)

    def emit_batch(self, batch: Batch, flush: bool = True) -> None:
        """Send a :class:`udf.Batch` as BeginBatch, its points and EndBatch, in one write."""
        self._write_frames(encode_batch(batch), flush)

    def flush(self) -> None:
        """Write whatever the agent has buffered."""
        self._write_frames(b"", True)

    def _write_frames(self, data: bytes, flush: bool) -> None:
        with self._write_lock:
            if self._out_closed:
                raise UDFError("agent output is closed")
            out = self._out
            out += data
            if out and (flush or len(out) >= FLUSH_THRESHOLD):
                self._flush_locked()

    def _flush_locked(self) -> None:
        data = bytes(self._out)
        self._out.clear()
        writer = self._writer
        try:
            view = memoryview(data)
            while view:
                written = writer.write(view)
                if written is None:  # buffered writers write everything
                    break
                if written <= 0:
                    raise OSError(errno.EPIPE, "write accepted no bytes")
                view = view[written:]
            flush = getattr(writer, "flush", None)
            if flush is not None:
                flush()
        except (OSError, ValueError) as exc:
            self._out_closed = True
            raise WriteError(_describe(exc)) from exc

    def _close_output(self) -> None:
        error: Optional[WriteError] = None
        with self._write_lock:
            if self._out and not self._out_closed:
                try:
                    self._flush_locked()
                except WriteError as exc:
                    error = exc
            self._out_closed = True
            try:
                self._writer.close()
            except (OSError, ValueError):
                pass
        if error is not None:
            self._fail(error, report=False)

    # --- reader thread -------------------------------------------------------------

    def _read_loop(self) -> None:
        """Decode requests; answer keepalives here; queue the rest for the handler."""
        reader = self._reader
        read = getattr(reader, "read1", None) or reader.read
        decoder = FrameDecoder(self._max_frame_size, text_hint="the input is text, not UDF frames")
        parse = agent_pb2.Request.FromString
        queue_open = True
        try:
            while True:
                try:
                    data = read(READ_CHUNK)
                except (OSError, ValueError) as exc:
                    if not self._failed:
                        self._fail(ReadError(_describe(exc)), report=False)
                    return
                if not data:
                    if queue_open:
                        decoder.eof()
                    return
                if not queue_open:
                    continue  # stopped after an error: discard until EOF
                batch: List[Tuple[str, Any]] = []
                for payload in decoder.feed(data):
                    request = parse_payload(parse, payload)
                    kind = request.WhichOneof("message")
                    if kind == "keepalive":
                        self._answer_keepalive(request.keepalive.time)
                    elif kind is None:
                        self._logger.warning("ignoring a request of an unknown type (%d bytes)", len(payload))
                    else:
                        batch.append((kind, request))
                if batch:
                    try:
                        self._requests.put_many(batch)
                    except ChannelClosed:
                        queue_open = False
        except ProtocolError as exc:
            self._fail(exc, report=True)
            self._discard(read)
        except Exception as exc:  # a bug of ours: report it rather than die silently
            self._logger.exception("agent reader failed")
            self._fail(UDFError(f"agent reader failed: {type(exc).__name__}: {exc}"), report=True)
            self._discard(read)
        finally:
            self._requests.close()
            try:
                reader.close()
            except (OSError, ValueError):
                pass
            self._thread_ended()

    def _discard(self, read: Callable[[int], Optional[bytes]]) -> None:
        try:
            while read(READ_CHUNK):
                pass
        except (OSError, ValueError):
            pass

    def _answer_keepalive(self, t: int) -> None:
        if self._failed:
            return
        response = agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=t))
        self.keepalives += 1  # counted first: the host may see the answer before write returns
        try:
            self.write_response(response, flush=True)
        except WriteError as exc:
            self._fail(exc, report=False)
        except UDFError:
            pass  # output already closed: we are stopping

    # --- handler thread --------------------------------------------------------------

    def _handle_loop(self) -> None:
        """Call the handler for each queued request; flush whenever the queue runs dry."""
        get = self._requests.get
        try:
            while True:
                try:
                    kind, request = get(block=False)
                except queue.Empty:
                    self._idle_flush()
                    try:
                        kind, request = get()
                    except ChannelClosed:
                        break
                except ChannelClosed:
                    break
                if self._failed:
                    continue  # drop what was queued before the failure
                try:
                    self._dispatch(kind, request)
                except WriteError as exc:
                    self._fail(exc, report=False)
                    break
                except Exception as exc:
                    err = UDFError(f"error processing request of type {kind}: {str(exc) or type(exc).__name__}")
                    self._logger.error("%s", err, exc_info=exc)
                    self._fail(err, report=True, log=False)
                    break
        finally:
            self._finish()
            self._thread_ended()

    def _idle_flush(self) -> None:
        try:
            self.flush()
        except WriteError as exc:
            self._fail(exc, report=False)
        except UDFError:
            pass

    def _dispatch(self, kind: str, request: Any) -> None:
        handler: Any = self._handler
        if kind == "point":
            handler.point(request.point)
        elif kind == "begin":
            handler.begin_batch(request.begin)
        elif kind == "end":
            handler.end_batch(request.end)
        elif kind == "info":
            self.write_response(as_response(kind, handler.info()), flush=True)
        elif kind == "init":
            self.write_response(as_response(kind, handler.init(request.init)), flush=True)
        elif kind == "snapshot":
            self.write_response(as_response(kind, handler.snapshot()), flush=True)
        elif kind == "restore":
            self.write_response(as_response(kind, handler.restore(request.restore)), flush=True)
        else:
            self._logger.warning("ignoring unhandled request %s", kind)

    def _finish(self) -> None:
        """Stop the handler, then flush and close the output."""
        stop = getattr(self._handler, "stop", None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:
                self._fail(UDFError(f"error stopping handler: {_describe(exc)}"), report=True)
        self._close_output()

