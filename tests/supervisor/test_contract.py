"""udf.Supervisor's contract as every udf.Interface's: SupervisorState and its table, one cause once it
stopped for good, close(timeout) and its WARNING, abort callbacks, kill(), error, snapshot_with_position.
Real agents (tests/agents/echo.py, flaky.py) in real child processes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import udf
from udf import SupervisorGaveUp, SupervisorState, UDFError
from udf.lifecycle import IllegalTransition, Lifecycle
from udf.supervision import closing
from udf.supervision.state import TABLE, SupervisorEvent

from ..helpers import TIMEOUT, Warnings, put_all, run_in_thread, wait_until
from ..helpers.supervision import Consumer, Factory, PlainInterface, Restarts, agent_command, point, supervisor


class Stopped:
    """An abort callback: keeps each error it is called with and lets the test wait for the first."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.called = threading.Event()

    def __call__(self, err: BaseException) -> None:
        self.errors.append(err)
        self.called.set()

    def wait(self) -> BaseException:
        assert self.called.wait(TIMEOUT), "the abort callback was not called"
        return self.errors[0]


def requests(sup: udf.Supervisor) -> list[Callable[[], Any]]:
    """Every request a supervisor answers through its agent."""
    return [sup.checkpoint, sup.snapshot_with_position, lambda: sup.init({}), lambda: sup.restore(b"points=0")]


def each_raises(calls: list[Callable[[], Any]], error: BaseException) -> None:
    """Each call raises ``error`` itself: one cause."""
    for call in calls:
        with pytest.raises(type(error)) as raised:
            call()
        assert raised.value is error, f"{call} raised {raised.value!r}"


def stalled_supervisor(factory: Factory, n: int = 50) -> udf.Supervisor:
    """A supervisor that was sent ``n`` points and whose output nobody reads (its agent's queues hold 4)."""
    sup = supervisor(factory)
    sup.open()
    run_in_thread(put_all, sup.point_in, [point(i) for i in range(n)])()  # a few small points fit in the pipes
    wait_until(lambda: sup.point_out.qsize() == 4, "the agent's point_out filling up")
    return sup


# --- the lifecycle ------------------------------------------------------------------------


def test_state_is_a_supervisor_state_and_compares_as_a_str() -> None:
    sup = supervisor(Factory(*agent_command("echo.py")))
    assert sup.state is SupervisorState.NEW and sup.state == "new" and str(sup.state) == "new"
    sup.open()
    out = Consumer(sup.point_out)
    stats = sup.stats()
    assert stats.state is SupervisorState.RUNNING and stats.state == "running" and f"{stats.state}" == "running"
    with pytest.raises(UDFError, match="supervisor already opened"):
        sup.open()
    sup.close()
    assert sup.state is SupervisorState.CLOSED and sup.stats().state == "closed"
    out.join()


def test_the_table_says_abort_leads_to_closed_and_refuses_what_it_lacks() -> None:
    for state in ("new", "running", "restarting"):
        assert Lifecycle(TABLE, SupervisorState(state)).fire(SupervisorEvent.ABORT) is SupervisorState.CLOSED
    assert Lifecycle(TABLE, SupervisorState.GAVE_UP).fire(SupervisorEvent.ABORT) is SupervisorState.GAVE_UP
    with pytest.raises(IllegalTransition, match="udf.Supervisor: no transition for event 'open\\(\\)'"):
        Lifecycle(TABLE, SupervisorState.RUNNING).fire(SupervisorEvent.OPEN)
    with pytest.raises(IllegalTransition):
        Lifecycle(TABLE, SupervisorState.GAVE_UP).fire(SupervisorEvent.AGENT_RUNNING)


def test_after_giving_up_every_call_raises_the_same_give_up() -> None:
    factory = Factory(*agent_command("flaky.py", "--die-after-init"))
    stopped = Stopped()
    sup = supervisor(factory, max_restarts=1, period=TIMEOUT * 6)
    sup.add_abort_callback(stopped)
    sup.open()
    out = Consumer(sup.point_out)
    error = stopped.wait()
    assert isinstance(error, SupervisorGaveUp) and "exit status 3" in str(error)
    assert sup.error is error and sup.state is SupervisorState.GAVE_UP
    each_raises([lambda: sup.point_in.put(point(1)), *requests(sup), sup.close], error)
    late = Stopped()
    sup.add_abort_callback(late)
    assert late.wait() is error, "a callback added afterwards is called at once"
    assert stopped.errors == [error], "called once"
    out.join()


def test_a_clean_close_calls_no_abort_callback_and_a_later_abort_does() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    stopped = Stopped()
    sup = supervisor(factory, on_restart=restarts)
    sup.add_abort_callback(stopped)
    sup.open()
    out = Consumer(sup.point_out)
    sup.point_in.put(point(0))
    out.wait_for(1)
    sup.kill()
    restarts.wait(1)
    assert sup.error is None, "a failure recovered is no error of the supervisor's"
    sup.close()
    out.join()
    assert stopped.errors == [] and sup.error is None
    late = UDFError("aborted after the close")
    sup.abort(late)  # as Go's Server: recorded if there was no error, the callbacks called once
    assert stopped.errors == [late] and sup.error is late and sup.state is SupervisorState.CLOSED


# --- kill, snapshot_with_position ------------------------------------------------------------


def test_kill_ends_the_agent_and_the_supervisor_recovers() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    with pytest.raises(UDFError, match="not opened"):
        sup.kill()
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(100):
        sup.point_in.put(point(i))
    out.wait_for(100)
    sup.kill()
    restarts.wait(1)
    assert "signal: killed" in str(restarts.events[0].cause)
    sup.point_in.put(point(100))
    assert sup.checkpoint() == b"points=101", "restored and replayed: every item once"
    sup.close()
    assert {p.time for p in out.join()} == set(range(101))
    assert factory.made[0].returncode == -signal.SIGKILL


def test_snapshot_with_position_names_the_items_it_covers() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts, snapshot_every=1000)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(100):
        sup.point_in.put(point(i))
    assert sup.snapshot_with_position() == (b"points=100", 100)
    factory.kill_current()
    for i in range(100, 130):
        sup.point_in.put(point(i))
    restarts.wait(1)
    assert sup.snapshot_with_position() == (b"points=130", 130), "the position counts the supervisor's items"
    sup.close()
    out.join()


def test_mixed_points_and_batches_are_replayed_in_order_as_what_they_were() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts, snapshot_every=25)
    sup.open()
    points, batches = Consumer(sup.point_out), Consumer(sup.batch_out)
    expected_points = 0
    for i in range(200):
        if i % 5 == 4:
            bps = [udf.BatchPoint(time=i * 10 + j, fields={"v": j}) for j in range(3)]
            sup.batch_in.put(udf.Batch(name="b", group=f"g{i}", tmax=i, points=bps))
            expected_points += 3
        else:
            sup.point_in.put(point(i))
            expected_points += 1
        if i == 100:
            points.wait_for(20)
            factory.kill_current()
    assert sup.checkpoint() == b"points=%d" % expected_points, "each item replayed once, as a point or a batch"
    sup.close()
    assert {p.time for p in points.join()} == {i for i in range(200) if i % 5 != 4}
    assert {b.group for b in batches.join()} == {f"g{i}" for i in range(200) if i % 5 == 4}
    assert len(restarts.events) == 1


# --- close(timeout), the WARNING --------------------------------------------------------


def test_close_with_a_timeout_kills_and_names_what_it_waited_for() -> None:
    factory = Factory(*agent_command("echo.py"), in_queue_size=4, out_queue_size=4)
    sup = stalled_supervisor(factory)
    started = time.monotonic()
    with pytest.raises(UDFError) as raised:
        sup.close(timeout=0.5)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert message.startswith("close() timed out after 0.5s waiting for the agent (generation 0)"), message
    assert re.search(r"point_out: 4 points not consumed", message), message
    assert elapsed < 0.5 + closing.KILL_GRACE + 1.0, f"close(timeout=0.5) took {elapsed:.1f}s"
    assert sup.error is raised.value and sup.state is SupervisorState.CLOSED
    with pytest.raises(udf.ChannelClosed):
        sup.point_in.put(point(99))
    assert len(Consumer(sup.point_out).join()) <= 50, "the output ends"
    assert factory.made[0].returncode == -signal.SIGKILL, "what still ran was killed"


def test_close_without_progress_warns_naming_what_it_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing, "CLOSE_WARN_AFTER", 0.2)
    monkeypatch.setattr(closing, "CLOSE_WARN_EVERY", 0.3)
    warnings = Warnings("close() has made no progress")
    logger = logging.getLogger("udf")
    logger.addHandler(warnings)
    try:
        sup = stalled_supervisor(Factory(*agent_command("echo.py"), in_queue_size=4, out_queue_size=4))
        closed = run_in_thread(sup.close)
        first, second = warnings.wait(2)[:2]
        out = Consumer(sup.point_out)  # a consumer at last: the close gets through
        closed()
    finally:
        logger.removeHandler(warnings)
    assert "waiting for the agent (generation 0)" in first and "point_out: 4 points not consumed" in first, first
    assert re.search(r"no progress for \d+s", second), second
    assert {p.time for p in out.join()} == set(range(50)), "nothing lost: the close waited"


class Jammed(PlainInterface):
    """A third-party transport around a real Process whose point_in, once jammed, takes no more items.

    ``put_encoded`` then blocks (as a transport's does on backpressure) until
    ``abort()``, and raises ``ChannelClosed``: deterministic where a stopped
    agent's pipes fill up at their own pace.
    """

    def __init__(self, proc: udf.Process) -> None:
        super().__init__(proc)
        self.jammed = threading.Event()
        self.blocked = threading.Event()  # a put is blocked in it
        self._aborted = threading.Event()

    def abort(self, err: BaseException) -> None:
        self._aborted.set()
        super().abort(err)

    @property
    def point_in(self) -> Any:
        transport, inner = self, self.proc.point_in

        class Inlet(PlainInterface._Inlet):
            def put_encoded(self, frame: bytes, block: bool = True, timeout: float | None = None) -> None:
                if transport.jammed.is_set():
                    transport.blocked.set()
                    transport._aborted.wait()  # woken by abort()
                    raise udf.ChannelClosed("put on a closed channel: the transport was aborted")
                super().put_encoded(frame, block, timeout)

        return Inlet(inner)


def jammed_supervisor() -> tuple[udf.Supervisor, Jammed, Callable[[], Any], Consumer]:
    """A supervisor of a Jammed transport; a producer blocked in its put (on the put path), its joiner, a consumer."""
    factory = Factory(*agent_command("echo.py"))
    made: list[Jammed] = []

    def make() -> Jammed:
        made.append(Jammed(factory()))
        return made[-1]

    sup = supervisor(make)
    sup.open()
    out = Consumer(sup.point_out)
    sup.point_in.put(point(0))
    out.wait_for(1)
    made[0].jammed.set()

    def produce() -> BaseException | None:
        try:
            for i in range(1, 100):
                sup.point_in.put(point(i))
        except udf.ChannelClosed as exc:
            return exc
        return None

    producer = run_in_thread(produce)
    assert made[0].blocked.wait(TIMEOUT)
    return sup, made[0], producer, out


def test_close_times_out_waiting_for_a_producer_blocked_in_put() -> None:
    sup, transport, producer, out = jammed_supervisor()
    started = time.monotonic()
    with pytest.raises(UDFError, match=r"timed out after 0.5s waiting for a producer blocked in put\(\)"):
        sup.close(timeout=0.5)
    assert time.monotonic() - started < 0.5 + closing.KILL_GRACE + 1.0
    error = producer()
    assert isinstance(error, udf.ChannelClosed) and error.__cause__ is sup.error, "the producer was released"
    out.join()  # the output ends once the supervisor has ended
    assert transport.proc.returncode == -signal.SIGKILL, "what still ran was killed"


def test_abort_does_not_wait_for_a_producer_blocked_in_put() -> None:
    sup, transport, producer, out = jammed_supervisor()
    reason = UDFError("owner stops")
    run_in_thread(sup.abort, reason)()  # returns: abort() aborts the agent the producer waits on
    error = producer()
    assert isinstance(error, udf.ChannelClosed) and error.__cause__ is reason
    with pytest.raises(UDFError) as raised:
        sup.close()
    assert raised.value is reason
    out.join()
    assert transport.proc.returncode is not None


# --- callbacks that close ------------------------------------------------------------------


def _close_elsewhere(
    sup: udf.Supervisor, pool: concurrent.futures.ThreadPoolExecutor
) -> Callable[[BaseException], None]:
    """An abort callback that hands close() to another thread and waits for it (issue 17, defect 4)."""

    def close_quietly() -> BaseException | None:
        try:
            sup.close()
        except UDFError as exc:
            return exc
        return None

    def callback(err: BaseException) -> None:
        results.append(pool.submit(close_quietly).result(timeout=TIMEOUT))
        done.set()

    results: list[BaseException | None] = []
    done = threading.Event()
    callback.results = results  # type: ignore[attr-defined]
    callback.done = done  # type: ignore[attr-defined]
    return callback


def test_an_abort_callback_may_wait_for_a_close_in_another_thread_after_abort() -> None:
    sup = supervisor(Factory(*agent_command("echo.py")))
    sup.open()
    out = Consumer(sup.point_out)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-closer") as pool:
        callback = _close_elsewhere(sup, pool)
        sup.add_abort_callback(callback)
        reason = UDFError("stop")
        sup.abort(reason)  # the callback runs here, and waits for the close in the pool
        assert callback.done.wait(TIMEOUT)  # type: ignore[attr-defined]
    assert callback.results == [reason]  # type: ignore[attr-defined]
    out.join()


def test_an_abort_callback_may_wait_for_a_close_in_another_thread_after_giving_up() -> None:
    sup = supervisor(Factory(*agent_command("flaky.py", "--die-after-init")), max_restarts=0)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-closer") as pool:
        callback = _close_elsewhere(sup, pool)
        sup.add_abort_callback(callback)
        sup.open()
        out = Consumer(sup.point_out)
        assert callback.done.wait(TIMEOUT), "the close in the pool never returned"  # type: ignore[attr-defined]
    [error] = callback.results  # type: ignore[attr-defined]
    assert isinstance(error, SupervisorGaveUp) and error is sup.error
    out.join()
