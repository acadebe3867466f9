"""A bounded queue with Go's channel close semantics."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from .errors import ChannelClosed

__all__ = ["Channel"]

T = TypeVar("T")


class Channel(queue.Queue, Generic[T]):  # type: ignore[type-arg]
    """A ``queue.Queue`` that can be closed, like a Go channel.

    After :meth:`close`, ``put()`` raises :class:`ChannelClosed`; ``get()`` returns
    what is still queued and then raises :class:`ChannelClosed`; iterating yields
    until the channel is closed and drained. Producers and consumers blocked in
    ``put``/``get`` are woken by ``close``. ``close(cause)`` records why (for
    example the error that aborted a server): the :class:`ChannelClosed` raised
    afterwards names it and has it as ``__cause__``.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._closed = False
        self._cause: BaseException | None = None
        # Threads waiting in get() / put(), counted under the mutex: a notify
        # (a pure-Python call of a few microseconds) is only made for a waiter.
        self._getters = 0
        self._putters = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def cause(self) -> BaseException | None:
        """Why the channel was closed, if its closer said (see :meth:`close`)."""
        return self._cause

    def close(self, cause: BaseException | None = None) -> None:
        """Close the channel (idempotent) and wake every blocked ``put``/``get``.

        ``cause`` (the first one given, also by a later call) is named by
        every later :class:`ChannelClosed` and set as its ``__cause__``.
        """
        with self.mutex:
            if self._closed:
                if self._cause is None:
                    self._cause = cause  # closed at the end of a stream, then the cause became known
                return
            self._closed = True
            self._cause = cause
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Queue ``item``, waiting for room if the channel is full.

        Raises :class:`ChannelClosed` if the channel is closed, also while waiting.
        """
        with self.not_full:
            if self._closed:
                raise self._closed_error("put on a closed channel")
            if self.maxsize > 0 and self._qsize() >= self.maxsize:
                if not block:
                    raise queue.Full
                self._wait(self.not_full, lambda: self._qsize() < self.maxsize, timeout, queue.Full)
            self._put(item)
            self.unfinished_tasks += 1
            if self._getters:
                self.not_empty.notify()

    def put_many(self, items: list[T]) -> None:
        """Queue every item in order, blocking for room as needed (one lock round per wait)."""
        i = 0
        n = len(items)
        with self.not_full:
            while i < n:
                if self._closed:
                    raise self._closed_error("put on a closed channel")
                room = self.maxsize - self._qsize() if self.maxsize > 0 else n - i
                if room <= 0:
                    self._wait(self.not_full, lambda: self._qsize() < self.maxsize, None, queue.Full)
                    continue
                chunk = items[i : i + room]
                self.queue.extend(chunk)
                self.unfinished_tasks += len(chunk)
                i += len(chunk)
                if self._getters:
                    self.not_empty.notify(len(chunk))

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Take the oldest item, waiting if the channel is empty.

        Raises :class:`ChannelClosed` once the channel is closed and drained.
        """
        # The hot path of every consumer: a deque's popleft is atomic, so an
        # item is taken without the mutex. A producer waiting for room counted
        # itself in _putters (under the mutex) before it checked for room, so
        # it either sees this item gone or is counted here and notified.
        items = self.queue
        if not items:  # (testing first: raising IndexError costs more than a wait)
            return self._get_waiting(block, timeout)
        try:
            item: T = items.popleft()
        except IndexError:  # another consumer took it
            return self._get_waiting(block, timeout)
        if self._putters:
            with self.mutex:
                self.not_full.notify()
        return item

    def _get_waiting(self, block: bool, timeout: float | None) -> T:
        """get() on an empty channel: wait for an item or the close."""
        with self.mutex:
            items = self.queue
            if not items:
                if self._closed:
                    raise self._closed_error("channel closed")
                if not block:
                    raise queue.Empty
                self._wait(self.not_empty, self._qsize, timeout, queue.Empty)
                if not items:  # woken by close with nothing left
                    raise self._closed_error("channel closed")
            item: T = items.popleft()
            if self._putters:
                self.not_full.notify()
            return item

    def _closed_error(self, what: str) -> ChannelClosed:
        """The error for an operation on the closed channel, naming and chaining its cause."""
        cause = self._cause
        if cause is None:
            return ChannelClosed(what)
        error = ChannelClosed(f"{what}: {cause}")
        error.__cause__ = cause
        return error

    def _wait(self, cond: Any, ready: Any, timeout: float | None, timeout_error: type[Exception]) -> None:
        """Wait on ``cond`` until ``ready()`` or close; raise ``timeout_error`` at the timeout.

        Woken by the other side's notify and by :meth:`close`.
        """
        putting = cond is self.not_full
        if putting:
            self._putters += 1
        else:
            self._getters += 1
        try:
            if timeout is None:
                while not ready() and not self._closed:
                    cond.wait()
            else:
                if timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                deadline = time.monotonic() + timeout
                while not ready() and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise timeout_error
                    cond.wait(remaining)
        finally:
            if putting:
                self._putters -= 1
            else:
                self._getters -= 1
        if self._closed and putting:
            raise self._closed_error("put on a closed channel")

    def __iter__(self) -> Iterator[T]:
        # get() inlined: iterating is how most consumers drain.
        items = self.queue
        popleft = items.popleft
        while True:
            if items:
                try:
                    item: T = popleft()
                except IndexError:  # another consumer took it
                    continue
                if self._putters:
                    with self.mutex:
                        self.not_full.notify()
            else:
                try:
                    item = self._get_waiting(True, None)  # wait for an item or the close
                except ChannelClosed:
                    return
            yield item
