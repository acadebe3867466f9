"""The abstract interface every UDF transport implements (Go: ``udf.Interface``)."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .channel import Channel
from .convert import Info
from .models import Batch, Point
from .options import Options
from .stats import Stats

__all__ = ["Inlet", "Interface", "ServerBacked", "TransportState"]


class Inlet(Protocol):
    """The send side of ``point_in``/``batch_in``: what producers and the Supervisor call."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Send an item, blocking while the queue is full (backpressure); a bad item raises at once."""

    def put_encoded(self, frame: bytes, block: bool = True, timeout: float | None = None) -> None:
        """Send an item already encoded by ``udf.convert.encode_point``/``encode_batch`` (a replay log's frames)."""


class Interface(abc.ABC):
    """A UDF you can open, talk to and close: ``udf.Process``, ``udf.Socket``, ..."""

    @abc.abstractmethod
    def open(self) -> None:
        """Start the UDF and the server talking to it (Go: ``Open``)."""

    @abc.abstractmethod
    def close(self, timeout: float | None = None, *, discard_output: bool = False) -> None:
        """Stop cleanly and release everything; raise the first error (Go: ``Close``).

        Keep draining ``point_out``/``batch_out`` meanwhile, or pass
        ``discard_output=True``. With ``timeout`` (seconds) it returns or raises
        within about that long whatever the consumer does: what still runs is
        killed and a :class:`~udf.errors.CloseTimeoutError` names what it waited for.
        """

    @abc.abstractmethod
    def info(self) -> Info:
        """The UDF's edge types and options (Go: ``Info``)."""

    @abc.abstractmethod
    def init(self, options: Options) -> None:
        """Initialize the UDF (Go: ``Init``): a list of ``agent_pb2.Option``, or ``{name: value or [values]}``."""

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
    def error(self) -> BaseException | None:
        """The first error (the one cause every call raises once the agent failed), or ``None``."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the agent now, without waiting (a hung agent); ``close()`` then reports what happened."""

    @abc.abstractmethod
    def add_abort_callback(self, callback: Callable[[BaseException], Any]) -> None:
        """Call ``callback(err)`` once when the conversation aborts, ``err`` being its first error."""

    @abc.abstractmethod
    def snapshot_with_position(self) -> tuple[bytes, int]:
        """A snapshot, and how many items ``put()`` had accepted before it was asked for."""

    def stats(self) -> Stats:
        """Health counters of the server underneath (see :class:`udf.Stats`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report stats")

    def __enter__(self) -> Interface:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
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


# The base of the transports, and their states (kept importable from here).
from .transport import ServerBacked, TransportState  # noqa: E402
