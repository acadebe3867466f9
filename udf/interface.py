"""The abstract interface every UDF transport implements (Go: ``udf.Interface``)."""

from __future__ import annotations

import abc
from typing import Any, List, Optional

from .channel import Channel
from .convert import Info
from .models import Batch, Point

__all__ = ["Interface"]


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

    def __enter__(self) -> "Interface":
        self.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
