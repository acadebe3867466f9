"""``Supervisor.point_out``/``batch_out``: each agent's own output channel, read one after the other."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from ..channel import Channel
from ..errors import ChannelClosed, UDFError

__all__ = ["Outlet"]

#: Who produced a channel (an incarnation): handed back to ``on_drained``.
A = TypeVar("A")


class Outlet(Channel[Any], Generic[A]):
    """The agents' own channels, read one after the other, as one channel.

    A consumer reads the current agent's channel directly (no thread in
    between); once it is closed and drained, the next agent's. It ends (raises
    ``ChannelClosed``, naming why) once the supervisor has ended and the last
    channel is drained. It is the receive side only: ``put`` raises. A
    consumer reaching the end of the current agent's channel while more is
    expected calls ``on_drained(agent, channel)``: the supervisor decides
    whether that end is a failure.
    """

    def __init__(self, name: str, on_drained: Callable[[A, Channel[Any]], None]) -> None:
        super().__init__(0)
        self.name = name
        self._on_drained = on_drained
        self._switch = threading.Condition(threading.Lock())
        self._sources: collections.deque[tuple[A, Channel[Any]]] = collections.deque()  # the first is read first
        self._finished = False  # no more sources will come
        self._consumer_closed = False

    def add(self, agent: A, channel: Channel[Any]) -> None:
        """A new agent's channel, read after those before it."""
        with self._switch:
            if self._consumer_closed:
                channel.close()  # its server drops what the agent sends there
            self._sources.append((agent, channel))
            self._switch.notify_all()  # wakes a consumer waiting in _source

    def finish(self, cause: BaseException | None) -> None:
        """No more agents: end once the channels are drained, naming ``cause``."""
        super().close(cause)
        with self._switch:
            self._finished = True
            self._switch.notify_all()

    def close(self, cause: BaseException | None = None) -> None:
        """The consumer wants no more: what is queued can still be read; the agents' further output is dropped."""
        super().close(cause)
        with self._switch:
            self._consumer_closed = True
            sources = [channel for _, channel in self._sources]
            self._switch.notify_all()
        for channel in sources:
            channel.close()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        raise UDFError(f"{self.name} is the receive side of a supervisor: put into point_in/batch_in")

    def put_many(self, items: list[Any]) -> None:
        raise UDFError(f"{self.name} is the receive side of a supervisor: put into point_in/batch_in")

    def qsize(self) -> int:
        with self._switch:
            channels = [channel for _, channel in self._sources]
        return sum(channel.qsize() for channel in channels)

    def empty(self) -> bool:
        return self.qsize() == 0

    def _source(self, deadline: float | None) -> Channel[Any] | None:
        """The channel to read now, waiting for the next agent's if needed; ``None`` at the end.

        Raises ``queue.Empty`` at ``deadline``.
        """
        with self._switch:
            while True:
                sources = self._sources
                ended = self._finished or self._consumer_closed
                while sources:
                    agent, channel = sources[0]
                    if not channel.closed or channel.qsize():
                        return channel
                    if len(sources) == 1 and not ended:
                        self._on_drained(agent, channel)
                        break
                    sources.popleft()
                if not sources and ended:
                    return None
                # Woken by add() (the next agent), finish() and close().
                if deadline is None:
                    self._switch.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    self._switch.wait(remaining)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next item from the current agent (or its successor); ChannelClosed at the end."""
        if not block:
            deadline: float | None = time.monotonic()
        elif timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            deadline = time.monotonic() + timeout
        else:
            deadline = None
        while True:
            channel = self._source(deadline)
            if channel is None:
                raise self._closed_error("channel closed")
            try:
                if deadline is None:
                    return channel.get()
                return channel.get(block, max(0.0, deadline - time.monotonic()))
            except ChannelClosed:
                continue  # drained: the next agent's

    def __iter__(self) -> Iterator[Any]:
        while True:
            channel = self._source(None)
            if channel is None:
                return
            yield from channel
