"""The writer thread's input and the send sides over it (``point_in``, ``batch_in``).

The outbox holds encoded frames: urgent ones (keepalives) first, then data and
requests in the order they were accepted. Data is bounded (backpressure);
``close`` lets the writer drain and end, ``abort`` drops everything. The inlets
validate and encode in the caller's thread, so a bad item raises before
anything is queued. This is the per-point hot path: keep it lean.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ChannelClosed

__all__ = ["Outbox", "Inlet", "WRITE_BUDGET", "POINT_ITEMS", "BATCH_ITEMS"]

#: Bytes the writer gathers into one write call at most.
WRITE_BUDGET = 256 * 1024
#: Which of ``Outbox.accepted`` an inlet counts.
POINT_ITEMS, BATCH_ITEMS = 0, 1


class Outbox:
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
        self._requests: collections.deque[bytes] = collections.deque()
        self._data: collections.deque[bytes] = collections.deque()
        self._data_bytes = 0  # total size of the frames in _data
        self._maxsize = maxsize
        self._state = self.OPEN
        self._cause: BaseException | None = None  # why it was aborted, for put()'s error
        # Who is waiting, so that the hot paths notify (a pure-Python call of a
        # few microseconds) only when someone is: the writer in take(), and how
        # many producers in put_data(). Both are guarded by _lock.
        self._writer_waiting = False
        self._producers_waiting = 0
        #: Items accepted by put_data, by kind (POINT_ITEMS, BATCH_ITEMS); guarded by _lock.
        self.accepted = [0, 0]
        #: Whether the writer holds data (or request) frames it took and has not finished
        #: writing (set by take(), cleared by the writer after its write; written by the writer thread only).
        self.in_flight = False

    def put_data(self, frame: bytes, block: bool = True, timeout: float | None = None, kind: int = 0) -> None:
        with self._lock:
            data = self._data
            if len(data) >= self._maxsize or self._state != self.OPEN:
                self._wait_for_room(block, timeout)
            self.accepted[kind] += 1
            data.append(frame)
            self._data_bytes += len(frame)
            if self._writer_waiting:
                self._wake_writer()

    def _wait_for_room(self, block: bool, timeout: float | None) -> None:
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

    def unwritten(self) -> bool:
        """Whether input accepted for the agent is still queued or being written (lost if the agent ended now)."""
        with self._lock:
            return self._state != self.CLOSED and (bool(self._data) or self.in_flight)

    def take(self) -> list[bytes] | None:
        """Wait for frames and take them all (up to WRITE_BUDGET bytes); ``None`` means end."""
        with self._lock:
            requests, data = self._requests, self._data
            # Woken by put_data()/put_request(), close() and abort().
            while not requests and not data and self._state == self.OPEN:
                self._writer_waiting = True
                self._not_empty.wait()
            self._writer_waiting = False
            if self._state == self.CLOSED or (not requests and not data):
                self.in_flight = False
                return None
            self.in_flight = bool(data)  # keepalive pings alone are not the agent's input
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


class Inlet:
    """The send side of ``point_in``/``batch_in``: validate and encode at ``put``.

    Encoding in the caller's thread means a bad point raises ``TypeError`` or
    ``ValueError`` naming the field before anything is queued or written.
    """

    __slots__ = ("_encode", "_outbox", "_kind")

    def __init__(self, encode: Callable[[Any], bytes], outbox: Outbox, kind: int) -> None:
        self._encode = encode
        self._outbox = outbox
        self._kind = kind  # which of outbox.accepted counts this inlet's items

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Send ``item`` to the agent, blocking while the outbox is full."""
        self._outbox.put_data(self._encode(item), block, timeout, self._kind)

    def put_encoded(self, frame: bytes, block: bool = True, timeout: float | None = None) -> None:
        """Send an item already encoded by ``udf.convert.encode_point``/``encode_batch``.

        For callers that keep items as frames (a replay log): the frame is
        written as it is, without validating it again.
        """
        self._outbox.put_data(frame, block, timeout, self._kind)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def qsize(self) -> int:
        return self._outbox.qsize()
