"""Request calls: Go's four, and the callers waiting for their answers, a queue per kind (Go: a channel per kind).

``info()``, ``init()``, ``snapshot()`` and ``restore()`` each queue their frame
and a :class:`Pending` together, so that the waiters of a kind are in the order
the agent answers. No thread and no lock of its own: the server guards it with
its lock. Once the agent's output has ended nobody can answer: new calls are no
longer written, and wait with the others for the end to be decided
(:meth:`PendingRequests.close`), which gives every one of them its error.
"""

from __future__ import annotations

import abc
import collections
import threading
from typing import Any

import agent_pb2

from ..convert import Info, info_from_message
from ..errors import InitError, RestoreError
from ..options import Options, build_options
from .outbox import Outbox

__all__ = ["Pending", "PendingRequests", "RequestCalls", "REQUEST_KINDS"]

REQUEST_KINDS = ("info", "init", "snapshot", "restore")


class Pending:
    """One request call waiting for its response; resolved by the reader, failed by the end."""

    __slots__ = ("event", "response", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: Any = None
        self.error: BaseException | None = None

    def resolve(self, response: Any) -> None:
        self.response = response
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()

    def wait(self) -> Any:
        """The response, or raise the error (woken by the reader's answer or by the end)."""
        self.event.wait()
        if self.error is not None:
            raise self.error
        return self.response


class PendingRequests:
    """The waiters by kind, and the counts of requests sent (guarded by the server's lock)."""

    def __init__(self) -> None:
        self._waiting: dict[str, collections.deque[Pending]] = {kind: collections.deque() for kind in REQUEST_KINDS}
        #: Requests sent, by kind (keepalives included), for stats().
        self.sent: dict[str, int] = {}
        #: The agent's output ended: new requests are not written any more.
        self._unanswerable = False
        #: Why no request can be answered any more, once the end is decided.
        self._closed: BaseException | None = None

    def add(self, kind: str, frame: bytes, outbox: Outbox) -> tuple[Pending, int]:
        """Queue ``frame`` and its waiter; return the waiter and how many data items were accepted before it.

        Raises the reason once closed. After the agent's output ended the frame
        is not written: the waiter only waits for the end to be decided.
        """
        if self._closed is not None:
            raise self._closed
        pending = Pending()
        position = 0
        if not self._unanswerable:
            position = outbox.put_request(frame)
            self.sent[kind] = self.sent.get(kind, 0) + 1
        self._waiting[kind].append(pending)
        return pending, position

    def count(self, kind: str) -> None:
        """Count a request sent by someone else (a keepalive)."""
        self.sent[kind] = self.sent.get(kind, 0) + 1

    def answer(self, kind: str) -> Pending | None:
        """The oldest waiter of ``kind``, removed; ``None`` for a response nobody asked for."""
        waiting = self._waiting[kind]
        return waiting.popleft() if waiting else None

    def output_ended(self) -> None:
        """The agent's output ended: nobody will answer; stop writing requests."""
        self._unanswerable = True

    def close(self, reason: BaseException) -> list[Pending]:
        """No request can be answered any more: return the waiters (to fail with ``reason``); later ones raise it.

        The first reason stays.
        """
        if self._closed is None:
            self._closed = reason
        waiters = [pending for waiting in self._waiting.values() for pending in waiting]
        for waiting in self._waiting.values():
            waiting.clear()
        return waiters


class RequestCalls(abc.ABC):
    """Go's request calls (``Info``, ``Init``, ``Snapshot``, ``Restore``) over one primitive, :meth:`_request`."""

    @abc.abstractmethod
    def _request(self, kind: str, request: Any) -> tuple[Any, int]:
        """Send ``request`` and wait for its response; return it and the data items accepted before it."""

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

    def snapshot_with_position(self) -> tuple[bytes, int]:
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
