"""The abstract interface every UDF transport implements (Go: ``udf.Interface``)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, List, Optional

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

    _server: Optional["Server"]
    #: What ``open()`` opens, for the "not opened" error ("process", "socket").
    _what = "udf"

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
