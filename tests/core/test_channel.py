"""Tests of udf.Channel: a bounded queue.Queue with Go's close semantics (SPEC "Channels").

Blocking is observed deterministically: ``waits_on`` wraps a channel's condition
so the test learns the moment another thread starts waiting on it, instead of
sleeping and hoping. Every join is bounded by TIMEOUT.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import udf
from udf.channel import Channel
from udf.errors import ChannelClosed, UDFError

from ..helpers import TIMEOUT
from ..helpers import run_in_thread as in_thread


def waits_on(cond: threading.Condition) -> threading.Event:
    """An event set each time a thread starts waiting on ``cond``."""
    original = cond.wait
    entered = threading.Event()

    def wait(timeout: Any = None) -> bool:
        entered.set()
        return original(timeout)

    cond.wait = wait  # type: ignore[method-assign]
    return entered


def blocked_in_put(ch: Channel[Any], fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``fn`` in a thread and return once it waits for room in ``ch``."""
    waiting = waits_on(ch.not_full)
    join = in_thread(fn)
    assert waiting.wait(TIMEOUT), "the producer never blocked"
    return join


def blocked_in_get(ch: Channel[Any], fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``fn`` in a thread and return once it waits for an item in ``ch``."""
    waiting = waits_on(ch.not_empty)
    join = in_thread(fn)
    assert waiting.wait(TIMEOUT), "the consumer never blocked"
    return join


# --- basics ----------------------------------------------------------------------------


def test_channel_is_a_bounded_queue() -> None:
    assert udf.Channel is Channel
    ch: Channel[int] = Channel(3)
    assert isinstance(ch, queue.Queue)
    assert ch.maxsize == 3
    for i in range(3):
        ch.put(i)
    assert ch.full() and ch.qsize() == 3
    assert [ch.get(), ch.get(), ch.get()] == [0, 1, 2]
    assert ch.empty()


def test_close_is_idempotent() -> None:
    ch: Channel[int] = Channel(1)
    assert ch.closed is False
    ch.close()
    assert ch.closed is True
    ch.close()
    assert ch.closed is True


def test_put_after_close_raises() -> None:
    ch: Channel[int] = Channel(2)
    ch.put(1)
    ch.close()
    puts: tuple[Callable[[], object], ...] = (
        lambda: ch.put(2),
        lambda: ch.put(2, block=False),
        lambda: ch.put_nowait(2),
        lambda: ch.put(2, timeout=1),
    )
    for put in puts:
        with pytest.raises(ChannelClosed):
            put()
    with pytest.raises(ChannelClosed):
        ch.put_many([3, 4])
    assert ch.get() == 1  # nothing was added by the refused puts
    with pytest.raises(ChannelClosed):
        ch.get()


def test_put_on_a_full_closed_channel_raises_closed_not_full() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(1)
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.put(2, block=False)


def test_get_drains_then_raises() -> None:
    ch: Channel[str] = Channel(5)
    for item in "abc":
        ch.put(item)
    ch.close()
    assert [ch.get(), ch.get_nowait(), ch.get(timeout=TIMEOUT)] == ["a", "b", "c"]
    for get in (ch.get, ch.get_nowait, lambda: ch.get(block=False), lambda: ch.get(timeout=1)):
        with pytest.raises(ChannelClosed):
            get()


def test_iteration_yields_until_closed_and_drained() -> None:
    ch: Channel[int] = Channel(10)
    for i in range(4):
        ch.put(i)
    ch.close()
    assert list(ch) == [0, 1, 2, 3]
    assert list(ch) == []


def test_iteration_across_threads() -> None:
    ch: Channel[int] = Channel(2)  # smaller than what is sent: both sides block in turn
    join = in_thread(lambda: list(ch))
    for i in range(50):
        ch.put(i, timeout=TIMEOUT)
    ch.close()
    assert join() == list(range(50))


def test_unbounded_channel_never_blocks() -> None:
    ch: Channel[int] = Channel()
    for i in range(10_000):
        ch.put(i, block=False)
    assert ch.qsize() == 10_000 and not ch.full()


# --- blocking and release ----------------------------------------------------------------------


def test_put_blocks_until_there_is_room() -> None:
    ch: Channel[int] = Channel(2)
    ch.put(1)
    ch.put(2)
    join = blocked_in_put(ch, lambda: ch.put(3))
    assert ch.qsize() == 2  # the third item waits outside
    assert ch.get(timeout=TIMEOUT) == 1
    join()
    assert [ch.get_nowait(), ch.get_nowait()] == [2, 3]


def test_get_blocks_until_an_item_arrives() -> None:
    ch: Channel[str] = Channel(1)
    join = blocked_in_get(ch, ch.get)
    ch.put("x")
    assert join() == "x"


def test_close_releases_a_blocked_put() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(1)
    join = blocked_in_put(ch, lambda: ch.put(2))
    ch.close()
    with pytest.raises(ChannelClosed):
        join()
    assert list(ch) == [1]  # the refused item was not queued


def test_close_releases_a_blocked_put_with_timeout() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(1)
    join = blocked_in_put(ch, lambda: ch.put(2, timeout=10 * TIMEOUT))
    ch.close()
    with pytest.raises(ChannelClosed):
        join()


def test_close_releases_a_blocked_get() -> None:
    ch: Channel[int] = Channel(1)
    join = blocked_in_get(ch, ch.get)
    ch.close()
    with pytest.raises(ChannelClosed):
        join()


def test_close_releases_every_blocked_consumer() -> None:
    ch: Channel[int] = Channel(1)
    waiting = waits_on(ch.not_empty)
    joins = []
    for _ in range(3):
        waiting.clear()
        joins.append(in_thread(ch.get))
        assert waiting.wait(TIMEOUT)
    ch.close()
    for join in joins:
        with pytest.raises(ChannelClosed):
            join()


def test_close_releases_a_blocked_iteration() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(7)
    join = blocked_in_get(ch, lambda: list(ch))
    ch.close()
    assert join() == [7]


# --- timeouts ---------------------------------------------------------------------------


def test_put_timeouts_raise_full() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(1)
    with pytest.raises(queue.Full):
        ch.put(2, block=False)
    with pytest.raises(queue.Full):
        ch.put_nowait(2)
    with pytest.raises(queue.Full):
        ch.put(2, timeout=0.01)
    with pytest.raises(queue.Full):
        ch.put(2, timeout=0)
    assert list_after_close(ch) == [1]


def test_get_timeouts_raise_empty() -> None:
    ch: Channel[int] = Channel(1)
    with pytest.raises(queue.Empty):
        ch.get(block=False)
    with pytest.raises(queue.Empty):
        ch.get_nowait()
    with pytest.raises(queue.Empty):
        ch.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        ch.get(timeout=0)


def test_negative_timeout_is_refused() -> None:
    ch: Channel[int] = Channel(1)
    with pytest.raises(ValueError):
        ch.get(timeout=-1)
    ch.put(1)
    with pytest.raises(ValueError):
        ch.put(2, timeout=-1)


def list_after_close(ch: Channel[Any]) -> list[Any]:
    """Close ``ch`` and return everything still queued, in order."""
    ch.close()
    return list(ch)


# --- put_many -----------------------------------------------------------------------------


def test_put_many_preserves_order() -> None:
    ch: Channel[int] = Channel(100)
    ch.put(-1)
    ch.put_many(list(range(50)))
    ch.put(50)
    assert list_after_close(ch) == list(range(-1, 51))


def test_put_many_unbounded_and_empty() -> None:
    ch: Channel[int] = Channel()
    ch.put_many([])
    assert ch.empty()
    ch.put_many(list(range(5000)))
    assert list_after_close(ch) == list(range(5000))


def test_put_many_blocks_for_room_and_keeps_order() -> None:
    ch: Channel[int] = Channel(3)
    join = blocked_in_put(ch, lambda: ch.put_many(list(range(20))))
    assert ch.qsize() == 3  # filled to the bound, then waiting
    got = [ch.get(timeout=TIMEOUT) for _ in range(20)]
    join()
    assert got == list(range(20))
    assert ch.empty()


def test_close_releases_a_blocked_put_many() -> None:
    ch: Channel[int] = Channel(2)
    join = blocked_in_put(ch, lambda: ch.put_many([1, 2, 3, 4]))
    ch.close()
    with pytest.raises(ChannelClosed):
        join()
    assert list(ch) == [1, 2]  # what fit before the close is still delivered


def test_put_many_counts_unfinished_tasks() -> None:
    ch: Channel[int] = Channel(10)
    ch.put_many([1, 2, 3])
    for _ in range(3):
        ch.get_nowait()
        ch.task_done()
    ch.join()  # returns at once: every item was marked done
    with pytest.raises(ValueError):
        ch.task_done()


# --- the exception --------------------------------------------------------------------------


def test_channel_closed_is_a_udf_error() -> None:
    assert udf.ChannelClosed is ChannelClosed
    assert issubclass(ChannelClosed, UDFError)
    ch: Channel[int] = Channel(1)
    ch.close()
    with pytest.raises(UDFError):
        ch.get()


@pytest.mark.skipif(sys.version_info < (3, 13), reason="queue.ShutDown is new in Python 3.13")
def test_channel_closed_is_a_queue_shutdown() -> None:
    assert issubclass(ChannelClosed, queue.ShutDown)  # type: ignore[attr-defined]
