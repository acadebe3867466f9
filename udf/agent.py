"""Write Kapacitor UDF agents in Python: the agent side of the UDF protocol.

A UDF agent reads ``agent_pb2.Request`` frames from Kapacitor (or any
:class:`udf.Server`) and writes ``agent_pb2.Response`` frames back. This module
gives you the plumbing so that you only write a :class:`Handler`:

* :class:`Handler` -- subclass it; its methods mirror Kapacitor's Python agent
  (``info``, ``init``, ``snapshot``, ``restore``, ``begin_batch``, ``point``,
  ``end_batch``) plus ``stop``. They receive and return ``agent_pb2`` messages,
  so handlers written for Kapacitor's agent port with few changes.
* :class:`Agent` -- runs one conversation over a pair of binary streams. Its
  *reader* thread decodes requests and answers keepalives at once, even while
  the handler is busy; a separate *handler* thread calls the handler, fed by a
  bounded queue. :meth:`Agent.write_response` is thread safe.
* :class:`AgentServer` -- serves one :class:`Agent` per connection on a unix
  socket path or ``tcp://host:port``.
* :func:`main` -- a command line entry: stdin/stdout agent by default,
  ``--socket PATH`` for a socket server.

Conversions between ``agent_pb2`` messages and :mod:`udf.models` are
re-exported from :mod:`udf.convert` (:func:`point_from_message`, ...).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import queue
import select
import signal
import socket
import stat
import sys
import threading
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

import agent_pb2

from .channel import Channel
from .convert import (
    batch_point_from_message,
    batch_point_to_message,
    encode_batch,
    encode_point,
    fields_from_message,
    fields_to_message,
    point_from_message,
    point_to_message,
)
from .errors import ChannelClosed, ProtocolError, ReadError, UDFError, WriteError
from .models import Batch, FieldValue, Point
from .socket import HalfCloseWriter
from .wire import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame, parse_payload

__all__ = [
    "Handler",
    "Agent",
    "AgentServer",
    "HandlerFactory",
    "main",
    "option_value",
    "init_options",
    "parse_options",
    "field_value",
    "point_from_message",
    "point_to_message",
    "batch_point_from_message",
    "batch_point_to_message",
    "fields_from_message",
    "fields_to_message",
]

#: Bytes asked of the input per read.
READ_CHUNK = 256 * 1024
#: Requests decoded ahead of the handler before the reader blocks (backpressure).
REQUEST_QUEUE_SIZE = 1024
#: Buffered output that is written even without a flush.
FLUSH_THRESHOLD = 256 * 1024

_LOG = logging.getLogger("udf.agent")

OptionValue = Union[bool, int, float, str]


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> Optional[bytes]: ...

    def close(self) -> None: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> Optional[int]: ...

    def close(self) -> None: ...


# --- handler ---------------------------------------------------------------------


class Handler:
    """What a UDF does; subclass it and override what you need.

    The :class:`Agent` calls these methods from one thread (never concurrently),
    in the order the requests arrive. ``info``, ``init``, ``snapshot`` and
    ``restore`` return the matching ``agent_pb2`` message (``InfoResponse``, ...);
    a complete ``agent_pb2.Response`` is accepted too, as Kapacitor's Python agent
    expects. ``point``, ``begin_batch`` and ``end_batch`` return nothing: send
    results with ``self.agent.write_response(...)`` (or the ``emit_*`` helpers)
    whenever you like, from any thread.

    Raising an exception makes the agent send an ``ErrorResponse`` carrying the
    message and stop. ``self.agent`` is set by the agent the handler is given to.
    """

    #: The agent this handler belongs to (set by :class:`Agent`).
    agent: Optional["Agent"] = None

    def __init__(self, agent: Optional["Agent"] = None) -> None:
        self.agent = agent

    def info(self) -> Any:
        """Return an ``agent_pb2.InfoResponse``: edge types and options."""
        raise NotImplementedError(f"{type(self).__name__} does not implement info()")

    def init(self, init_req: Any) -> Any:
        """Check the ``agent_pb2.InitRequest`` options; return an ``InitResponse``."""
        return agent_pb2.InitResponse(success=True)

    def snapshot(self) -> Any:
        """Return an ``agent_pb2.SnapshotResponse`` holding the state (default: empty)."""
        return agent_pb2.SnapshotResponse(snapshot=b"")

    def restore(self, restore_req: Any) -> Any:
        """Restore the state from an ``agent_pb2.RestoreRequest``; return a ``RestoreResponse``.

        The default accepts only the empty snapshot that the default
        :meth:`snapshot` produces.
        """
        if not restore_req.snapshot:
            return agent_pb2.RestoreResponse(success=True)
        return agent_pb2.RestoreResponse(success=False, error=f"{type(self).__name__} cannot restore snapshots")

    def begin_batch(self, begin_req: Any) -> None:
        """A batch starts (``agent_pb2.BeginBatch``); its points follow."""
        raise UDFError(f"{type(self).__name__} does not support batches")

    def point(self, point: Any) -> None:
        """A point arrived (``agent_pb2.Point``), alone or inside a batch."""
        raise UDFError(f"{type(self).__name__} does not support points")

    def end_batch(self, end_req: Any) -> None:
        """A batch ends (``agent_pb2.EndBatch``)."""
        raise UDFError(f"{type(self).__name__} does not support batches")

    def stop(self) -> None:
        """The conversation is over (input ended or an error occurred); output is still open."""


#: Builds the handler of a new agent (e.g. a Handler subclass taking the agent).
HandlerFactory = Callable[["Agent"], Handler]

# Which message type each request's handler method returns.
_RESPONSE_TYPES: Dict[str, Any] = {
    "info": agent_pb2.InfoResponse,
    "init": agent_pb2.InitResponse,
    "snapshot": agent_pb2.SnapshotResponse,
    "restore": agent_pb2.RestoreResponse,
}


def _as_response(kind: str, result: Any) -> Any:
    """Wrap a handler's return value in a ``Response`` (or accept a ready one)."""
    if isinstance(result, agent_pb2.Response):
        return result
    expected = _RESPONSE_TYPES[kind]
    if isinstance(result, expected):
        return agent_pb2.Response(**{kind: result})
    raise TypeError(
        f"handler.{kind}() returned {type(result).__name__}, expected agent_pb2.{expected.__name__}"
        " or agent_pb2.Response"
    )


# --- options -----------------------------------------------------------------------


def option_value(value: Any) -> OptionValue:
    """The Python value of an ``agent_pb2.OptionValue``; durations are ints of nanoseconds."""
    kind = value.WhichOneof("value")
    if kind is None:  # nothing set: the zero value of the declared type
        zeros: Dict[int, OptionValue] = {agent_pb2.BOOL: False, agent_pb2.DOUBLE: 0.0, agent_pb2.STRING: ""}
        return zeros.get(value.type, 0)
    result: OptionValue = getattr(value, kind)
    return result


def init_options(init_req: Any) -> Dict[str, List[OptionValue]]:
    """The options of an ``agent_pb2.InitRequest`` as ``{name: [values]}``.

    When an option is given several times, the last one wins.
    """
    return {opt.name: [option_value(v) for v in opt.values] for opt in init_req.options}


def parse_options(
    init_req: Any,
    types: Mapping[str, Union[int, Collection[int]]],
    required: Iterable[str] = (),
) -> Tuple[Dict[str, OptionValue], Dict[str, str]]:
    """Check the options of an ``agent_pb2.InitRequest`` that take one value each.

    ``types`` maps each known option to its ``agent_pb2.ValueType`` (or a
    collection of accepted ones). Returns ``(values, errors)``: the value of
    each good option, and an error message for each unknown, missing (from
    ``required``), multi-valued or wrongly typed one, both keyed by name.
    """
    values: Dict[str, OptionValue] = {}
    errors: Dict[str, str] = {}
    type_name = agent_pb2.ValueType.Name
    for opt in init_req.options:
        name = opt.name
        accepted = types.get(name)
        if accepted is None:
            errors[name] = f"unknown option {name!r}"
            continue
        if isinstance(accepted, int):
            accepted = (accepted,)
        if len(opt.values) != 1:
            errors[name] = f"option {name!r} takes exactly one value, got {len(opt.values)}"
        elif opt.values[0].type not in accepted:
            want = " or ".join(type_name(t) for t in accepted)
            errors[name] = f"option {name!r} must be {want}, got {type_name(opt.values[0].type)}"
        else:
            values[name] = option_value(opt.values[0])
            errors.pop(name, None)  # a later good value replaces an earlier bad one
    for name in required:
        if name not in values and name not in errors:
            errors[name] = f"missing required option {name!r}"
    return values, errors


def field_value(point: Any, name: str) -> Optional[FieldValue]:
    """The value of field ``name`` of an ``agent_pb2.Point``, or ``None`` if absent.

    A name in several typed maps resolves as Go does (and as
    :func:`fields_from_message`): fieldsBool wins over fieldsDouble, which
    wins over fieldsInt, which wins over fieldsString.
    """
    for fields in (point.fieldsBool, point.fieldsDouble, point.fieldsInt, point.fieldsString):
        if name in fields:
            value: FieldValue = fields[name]
            return value
    return None


# --- agent -------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Agent:
    """One UDF conversation over ``reader`` (requests in) and ``writer`` (responses out).

    ``reader``/``writer`` default to the process's stdin/stdout. ``handler`` may
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
        self._reader: Any = reader if reader is not None else sys.stdin.buffer
        self._writer: Any = writer if writer is not None else sys.stdout.buffer
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
            # A Request{point} frame has the same bytes as a Response{point}
            # frame: the oneof member is field 17 in both messages.
            self._write_frames(encode_point(point), flush)
        else:
            self.write_response(agent_pb2.Response(point=point), flush)

    def emit_batch(self, batch: Batch, flush: bool = True) -> None:
        """Send a :class:`udf.Batch` as BeginBatch, its points and EndBatch, in one write."""
        # BeginBatch/Point/EndBatch are fields 16/17/18 of both Request and
        # Response, so the host-side batch encoder produces response frames.
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
        decoder = FrameDecoder(self._max_frame_size)
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
            self.write_response(_as_response(kind, handler.info()), flush=True)
        elif kind == "init":
            self.write_response(_as_response(kind, handler.init(request.init)), flush=True)
        elif kind == "snapshot":
            self.write_response(_as_response(kind, handler.snapshot()), flush=True)
        elif kind == "restore":
            self.write_response(_as_response(kind, handler.restore(request.restore)), flush=True)
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


# --- socket server -------------------------------------------------------------------


class _SocketReader:
    """The input side of a connection for :class:`Agent`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, size: int = -1, /) -> bytes:
        return self._sock.recv(size if size > 0 else READ_CHUNK)

    read1 = read

    def close(self) -> None:
        pass  # the connection is closed when the agent is done


def _parse_address(address: str) -> Tuple[int, Any]:
    """``(family, bind address)`` of a unix socket path or ``tcp://host:port``."""
    if address.startswith("tcp://"):
        hostport = address[len("tcp://") :]
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"TCP address must be tcp://host:port, got {address!r}")
        host = host.strip("[]") or "0.0.0.0"
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr
    if not address:
        raise ValueError("empty socket path")
    return socket.AF_UNIX, address


class AgentServer:
    """Serve UDF agents on a unix socket path or ``tcp://host:port``, one per connection.

    For each connection, an :class:`Agent` is made and ``handler_factory(agent)``
    builds its handler (a :class:`Handler` subclass whose constructor takes the
    agent fits directly). The socket is bound when the server is created, so
    :attr:`address` is known at once (``tcp://127.0.0.1:0`` picks a free port).
    :meth:`start` accepts in a background thread; :meth:`stop` stops accepting,
    removes the unix socket file, ends the connections and joins every thread.
    """

    def __init__(
        self,
        address: str,
        handler_factory: HandlerFactory,
        *,
        logger: Optional[logging.Logger] = None,
        backlog: int = 16,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._factory = handler_factory
        self._logger = logger if logger is not None else _LOG
        self._max_frame_size = max_frame_size
        family, sockaddr = _parse_address(address)
        self._family = family
        self._path: Optional[str] = sockaddr if family == socket.AF_UNIX else None
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self._path is not None:
                _remove_stale_socket(self._path)
            else:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._address: str
        if self._path is not None:
            self._address = self._path
            self._inode: Optional[int] = os.stat(self._path).st_ino
        else:
            host, port = listener.getsockname()[:2]
            self._address = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
            self._inode = None
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()
        self._count = 0
        self._conns: Dict[Agent, socket.socket] = {}
        self._accept_thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        """The bound address: the socket path, or ``tcp://host:port`` with the real port."""
        return self._address

    @property
    def connections(self) -> int:
        """How many connections are being served now."""
        with self._lock:
            return len(self._conns)

    def start(self) -> None:
        """Accept connections in a background thread (``udf-agent-server``)."""
        with self._lock:
            if self._started:
                raise UDFError("agent server already started")
            if self._stopping:
                raise UDFError("agent server stopped")
            self._started = True
        self._accept_thread = threading.Thread(target=self._accept_loop, name="udf-agent-server", daemon=True)
        self._accept_thread.start()

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called from elsewhere."""
        if not self._started:
            self.start()
        self._stopped.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket file, end every connection, join the threads.

        Connections are asked to finish cleanly (their input is shut down, so
        each handler is stopped and its output flushed); any still running
        after ``timeout`` seconds are cut off.
        """
        with self._lock:
            first = not self._stopping
            self._stopping = True
        if first:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
            self._accept_thread.join()
        if first:
            self._listener.close()
            self._remove_socket_file()
            os.close(self._wake_r)
            os.close(self._wake_w)
        with self._lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            _shutdown(sock, socket.SHUT_RD)
        for agent, sock in conns:
            if not agent.wait(timeout):
                self._logger.warning("agent %s did not finish in %.1fs: closing its connection", agent.name, timeout)
                _shutdown(sock, socket.SHUT_RDWR)
                agent.wait()
        self._stopped.set()

    def _remove_socket_file(self) -> None:
        if self._path is None:
            return
        try:
            if os.stat(self._path).st_ino == self._inode:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._logger.warning("could not remove %s: %s", self._path, exc)

    def __enter__(self) -> "AgentServer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            # Woken by a connection or by stop() writing to the wake pipe.
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [])
            if self._wake_r in ready or self._stopping:
                return
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                self._logger.error("accept failed: %s", exc)
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        with self._lock:
            self._count += 1
            number = self._count
        agent = Agent(
            _SocketReader(conn),
            HalfCloseWriter(conn),
            logger=self._logger,
            max_frame_size=self._max_frame_size,
            name=f"udf-agent-{number}",
        )
        try:
            agent.handler = self._factory(agent)
        except Exception:
            self._logger.exception("handler factory failed; closing connection %d", number)
            conn.close()
            return
        with self._lock:
            self._conns[agent] = conn
        agent.add_done_callback(self._connection_done)
        self._logger.info("serving connection %d", number)
        agent.start()

    def _connection_done(self, agent: Agent) -> None:
        with self._lock:
            conn = self._conns.pop(agent, None)
        if conn is not None:
            conn.close()
        self._logger.info("connection of %s finished", agent.name)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed or disconnected


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse to steal a live one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return  # bind will fail with "address already in use", as it should
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


# --- command line ----------------------------------------------------------------------


class _KapacitorFormatter(logging.Formatter):
    """Prefix log lines with Kapacitor's level marks (E!, W!, I!, D!)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            mark = "E!"
        elif record.levelno >= logging.WARNING:
            mark = "W!"
        elif record.levelno >= logging.INFO:
            mark = "I!"
        else:
            mark = "D!"
        text: str = super().format(record)
        return f"{mark} {text}"


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KapacitorFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Terminate(BaseException):
    """Raised in the main thread by the SIGTERM handler."""


def _raise_terminate(signum: int, frame: Any) -> None:
    raise _Terminate()


def main(
    handler_factory: HandlerFactory,
    argv: Optional[Sequence[str]] = None,
    *,
    description: Optional[str] = None,
) -> int:
    """Run a UDF from the command line; returns the exit status.

    Without options the agent talks over stdin/stdout (Kapacitor's ``prog``
    UDFs); ``--socket PATH`` (or ``--socket tcp://HOST:PORT``) serves every
    connection instead, until SIGINT or SIGTERM. Logs go to stderr with
    Kapacitor's level marks; ``sys.stdout`` is redirected to stderr so that a
    stray ``print`` cannot corrupt the protocol. Typical use::

        if __name__ == "__main__":
            sys.exit(main(MyHandler))
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="serve agents on a unix socket PATH or tcp://HOST:PORT instead of stdin/stdout",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default: info)",
    )
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)

    if args.socket is None:
        reader, writer = sys.stdin.buffer, sys.stdout.buffer
        sys.stdout = sys.stderr  # print() must not write into the protocol stream
        agent = Agent(reader, writer)
        agent.handler = handler_factory(agent)
        agent.start()
        try:
            agent.wait()
        except KeyboardInterrupt:
            return 130
        return 0 if agent.error is None else 1

    server = AgentServer(args.socket, handler_factory)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminate)
    _LOG.info("listening on %s", server.address)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Terminate):
        pass
    finally:
        server.stop()
    return 0
