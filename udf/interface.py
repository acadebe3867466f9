"""The abstract interface every UDF transport implements (Go: ``udf.Interface``)."""

from __future__ import annotations

import abc
import datetime
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

from .channel import Channel
from .convert import Info
from .errors import UDFError
from .models import Batch, Point
from .stats import Stats

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Interface", "ServerBacked"]


class Interface(abc.ABC):
    """A UDF you can open, talk to and close: ``udf.Process``, ``udf.Socket``, ..."""

    @abc.abstractmethod
    def open(self) -> None:
        """Start the UDF and the server talking to it (Go: ``Open``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop cleanly and release everything; raise the first error (Go: ``Close``)."""

    @abc.abstractmethod
    def info(self) -> Info:
        """The UDF's edge types and options (Go: ``Info``)."""

    @abc.abstractmethod
    def init(self, options: Optional[List[Any]]) -> None:
        """Initialize the UDF with ``agent_pb2.Option``s (Go: ``Init``)."""

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
    def point_in(self) -> Any:
        """Send side for points: an object with ``put(point, block=True, timeout=None)``."""

    @property
    @abc.abstractmethod
    def batch_in(self) -> Any:
        """Send side for batches: an object with ``put(batch, block=True, timeout=None)``."""

    @property
    @abc.abstractmethod
    def point_out(self) -> Channel[Point]:
        """Points the UDF produced."""

    @property
    @abc.abstractmethod
    def batch_out(self) -> Channel[Batch]:
        """Batches the UDF produced."""

    def stats(self) -> Stats:
        """Health counters of the server underneath (see :class:`udf.Stats`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report stats")

    def __enter__(self) -> "Interface":
        self.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class ServerBacked(Interface):
    """An :class:`Interface` whose conversation runs on a :class:`udf.Server` it owns.

    Subclasses (``udf.Process``, ``udf.Socket``) create the server in ``open()``
    and keep it in ``self._server``; every request and channel is the server's.
    """

    #: What ``open()`` opens, for messages ("process", "socket").
    _what = "udf"

    def __init__(
        self,
        logger: Optional[logging.Logger],
        timeout: Union[float, datetime.timedelta],
        abort_callback: Optional[Callable[[], Any]],
        max_frame_size: int,
    ) -> None:
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._timeout = timeout
        self._abort_callback = abort_callback
        self._max_frame_size = max_frame_size
        self._lock = threading.Lock()  # guards _opened
        self._opened = False
        self._server: Optional["Server"] = None
        self._close_lock = threading.Lock()  # one close() at a time; later ones wait and raise the same
        self._closed = False
        self._close_error: Optional[BaseException] = None

    def _claim_open(self) -> None:
        """Called first by ``open()``: refuse a second open (or an open after close)."""
        with self._lock:
            if self._opened:
                raise UDFError(f"{self._what} already opened")
            self._opened = True

    def close(self) -> None:
        """Stop the server, release everything and raise the first error (Go: ``Close``).

        Keep draining ``point_out``/``batch_out`` while this runs. Later calls
        raise the same error.
        """
        with self._close_lock:
            if not self._closed:
                self._closed = True
                with self._lock:
                    self._opened = True  # no open() after close()
                self._close_error = self._shutdown()
            err = self._close_error
        if err is not None:
            raise err

    def _new_server(self, reader: Any, writer: Any) -> "Server":
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
        )

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

    def info(self) -> Info:
        """Ask the agent what it wants, provides and accepts (Go: ``Info``)."""
        return self._require_server().info()

    def init(self, options: Optional[List[Any]] = None) -> None:
        """Initialize the agent with ``agent_pb2.Option``s (Go: ``Init``)."""
        self._require_server().init(options)

    def abort(self, err: BaseException) -> None:
        """Abort the server with ``err`` (Go: ``Abort``); ``close()`` still releases everything."""
        self._require_server().abort(err)

    def snapshot(self) -> bytes:
        """The agent's state (Go: ``Snapshot``)."""
        return self._require_server().snapshot()

    def restore(self, snapshot: bytes) -> None:
        """Restore the agent's state (Go: ``Restore``)."""
        self._require_server().restore(snapshot)

    def stats(self) -> Stats:
        """The server's health counters (see :class:`udf.Stats`)."""
        return self._require_server().stats()

    @property
    def point_in(self) -> Any:
        """Send side for stream points."""
        return self._require_server().point_in

    @property
    def batch_in(self) -> Any:
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
