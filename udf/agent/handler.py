"""The :class:`Handler` a UDF author subclasses, and how its answers become responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import agent_pb2

from ..errors import UDFError

if TYPE_CHECKING:
    from .conversation import Agent

__all__ = ["Handler", "HandlerFactory", "as_response"]


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
    agent: Agent | None = None

    def __init__(self, agent: Agent | None = None) -> None:
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
_RESPONSE_TYPES: dict[str, Any] = {
    "info": agent_pb2.InfoResponse,
    "init": agent_pb2.InitResponse,
    "snapshot": agent_pb2.SnapshotResponse,
    "restore": agent_pb2.RestoreResponse,
}


def as_response(kind: str, result: Any) -> Any:
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
