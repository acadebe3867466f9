"""close() bounded and outspoken, and close() handed to another thread by an abort callback
(issue 17, defects 3 and 4), with real agent processes.

- ``close(timeout=...)`` returns or raises within about that many seconds whatever
  the consumer does, kills what still runs, and raises a ``CloseTimeoutError``
  naming what it waited for.
- Without a timeout ``close()`` waits as before, but a close that makes no
  progress logs a WARNING naming what it waits for (after ``WARN_AFTER`` seconds,
  then every ``WARN_EVERY``; both patched small here).
- An abort callback may hand ``close()`` (or ``stop()``) to another thread and wait
  for it: the shutdown never waits for a callback that was already running.
"""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import signal
import sys
import threading
import time
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Point
from udf.errors import ChannelClosed, ProcessExitedError

from ..helpers import AGENTS, ROOT, TIMEOUT, Warnings, run_in_thread, wait_until
from ..helpers.fake_agent import FakeAgent


def mirror(**kwargs: Any) -> udf.Process:
    return udf.Process(sys.executable, ["-u", str(ROOT / "examples" / "mirror.py")], **kwargs)


def point(n: int) -> Point:
    return Point(name="cpu", fields={"value": float(n)}, time=n)


def fill_without_consuming(p: udf.Interface, count: int) -> None:
    """Put ``count`` points in a producer thread (it ends when put() raises); wait until point_out is full."""

    def produce() -> None:
        try:
            for n in range(count):
                p.point_in.put(point(n), timeout=TIMEOUT)
        except ChannelClosed:
            pass

    threading.Thread(target=produce, name="fake-agent-producer", daemon=True).start()
    wait_until(p.point_out.full, "point_out filling up")  # only the reader, in another thread, can fill it


# --- defect 3: close() with output nobody consumes ----------------------------------


def test_close_with_a_timeout_is_bounded_kills_and_names_what_it_waited_for() -> None:
    p = mirror(out_queue_size=64)
    p.open()
    fill_without_consuming(p, 5000)  # nobody reads point_out
    begun = time.monotonic()
    with pytest.raises(udf.CloseTimeoutError) as excinfo:
        p.close(timeout=1.0)
    elapsed = time.monotonic() - begun
    assert 0.9 < elapsed < 4.0, elapsed  # about the timeout, not the agent's or the consumer's pace
    message = str(excinfo.value)
    assert message.startswith("close() timed out after 1s waiting for point_out: "), message
    assert "points not consumed" in message
    assert isinstance(excinfo.value, udf.UDFError)
    assert p.returncode == -signal.SIGKILL  # what still ran was killed
    assert p.error is excinfo.value  # the one cause from now on
    with pytest.raises(udf.CloseTimeoutError) as again:
        p.close()
    assert again.value is excinfo.value


def test_close_with_a_timeout_that_is_not_needed_is_a_clean_close() -> None:
    p = mirror()
    p.open()
    p.point_in.put(point(1))
    assert p.point_out.get(timeout=TIMEOUT) == point(1)
    p.close(timeout=TIMEOUT)
    assert p.returncode == 0 and p.error is None


def test_close_without_a_timeout_warns_naming_what_it_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from udf import closing

    monkeypatch.setattr(closing, "WARN_AFTER", 0.2)
    monkeypatch.setattr(closing, "WARN_EVERY", 0.4)
    waiter = Warnings("close() has made no progress")
    logger = logging.getLogger("udf.test.close")
    logger.addHandler(waiter)
    try:
        p = mirror(logger=logger, out_queue_size=64, kill_grace=TIMEOUT)
        p.open()
        fill_without_consuming(p, 500)
        closing_ = run_in_thread(p.close)
        first, second = waiter.wait(2)[:2]  # after WARN_AFTER, then again after WARN_EVERY
        for message in (first, second):
            assert "waiting for point_out: 64 points not consumed" in message, message
        got = list(p.point_out)  # the consumer comes at last: the close goes on
        closing_()
    finally:
        logger.removeHandler(waiter)
    assert len(got) == 500 and p.returncode == 0


# --- defect 4: an abort callback that hands close() to another thread -----------------


def test_abort_callback_may_hand_close_to_another_thread_and_wait_for_it() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fake-agent-pool")
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def on_abort() -> None:  # the issue's `lambda: pool.submit(p.close).result()`, with its outcome kept
        try:
            pool.submit(p.close).result(timeout=TIMEOUT)
            outcome["close"] = None
        except BaseException as exc:
            outcome["close"] = exc
        done.set()

    p = udf.Process(sys.executable, [str(AGENTS / "crash.py"), "1", "3"], abort_callback=on_abort)
    try:
        p.open()
        p.point_in.put(point(1))
        assert p.point_out.get(timeout=TIMEOUT) == point(1)  # then the agent exits 3: the server aborts
        assert done.wait(TIMEOUT)
        assert isinstance(outcome["close"], ProcessExitedError), outcome
        assert outcome["close"] is p.error
        assert str(p.error).startswith("process exited unexpectedly: exit status 3")
        with pytest.raises(ProcessExitedError) as again:
            p.close()
        assert again.value is p.error
    finally:
        pool.shutdown(wait=True)


def test_abort_callback_may_hand_stop_to_another_thread_when_the_reader_aborts(agent: FakeAgent) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fake-agent-pool")
    outcome: dict[str, Any] = {}
    servers: list[udf.Server] = []

    def on_abort() -> None:  # runs because the reader met an ErrorResponse
        try:
            pool.submit(servers[0].stop).result(timeout=TIMEOUT)
        except BaseException as exc:
            outcome["stop"] = exc

    s = agent.server(abort_callback=on_abort)
    servers.append(s)
    s.start()
    agent.respond(error=agent_pb2.ErrorResponse(error="boom"))
    agent.drain_requests()  # the abort closed our output: the agent sees EOF ...
    agent.close_output()  # ... and ends its own
    try:
        assert s.wait_io(TIMEOUT)
        stopping = run_in_thread(s.stop)
        with pytest.raises(udf.AgentError, match="^boom$"):
            stopping()
        # The callback runs in its own thread, begun before our stop(): it records
        # its outcome after the pool's stop() returns; wait for it (bounded).
        run_in_thread(s.wait_abort_callbacks)()
    finally:
        pool.shutdown(wait=True)
    assert isinstance(outcome.get("stop"), udf.AgentError) and str(outcome["stop"]) == "boom", outcome


def test_socket_close_with_a_timeout_is_bounded_and_ends_the_connection(tmp_path: pathlib.Path) -> None:
    import subprocess

    from ..helpers import end_process

    path = str(tmp_path / "mirror.sock")
    agent = subprocess.Popen([sys.executable, str(ROOT / "examples" / "mirror.py"), "--socket", path])
    try:
        s = udf.Socket(path, connect_timeout=TIMEOUT, initial_backoff=0.05, out_queue_size=64)
        s.open()
        s.info()
        fill_without_consuming(s, 5000)
        begun = time.monotonic()
        with pytest.raises(udf.CloseTimeoutError) as excinfo:
            s.close(timeout=1.0)
        assert 0.9 < time.monotonic() - begun < 4.0
        assert str(excinfo.value).startswith("close() timed out after 1s waiting for point_out: 64 points not consumed")
        assert s.error is excinfo.value and s.state is udf.TransportState.CLOSED
        assert agent.poll() is None  # a socket agent serves on: only our connection was ended
    finally:
        end_process(agent)
