"""udf.Process with faulty real agents: slow keepalive answers, an exit before the work is done."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

import udf
from udf import Point

from ..helpers import AGENTS, TIMEOUT, WaitForLog


@pytest.mark.slow
def test_slow_keepalive_answers_within_the_timeout_do_not_abort() -> None:
    # Pings every 1 s, each answered 0.6 s late: never 2 s of silence.
    waiter = WaitForLog("keepalive 3 answered")
    logger = logging.getLogger("udf.test.slow")
    logger.addHandler(waiter)
    logger.setLevel(logging.DEBUG)
    aborted = threading.Event()
    p = udf.Process(
        sys.executable,
        [str(AGENTS / "slow_keepalive.py"), "0.6"],
        logger=logger,
        timeout=2.0,
        abort_callback=aborted.set,
    )
    try:
        p.open()
        assert waiter.event.wait(TIMEOUT), "the agent did not answer three keepalives"
        assert not aborted.is_set()
        p.point_in.put(Point(name="still alive", time=1))
        assert p.point_out.get(timeout=TIMEOUT).name == "still alive"
    finally:
        logger.removeHandler(waiter)
        p.close()
    assert not aborted.is_set()
    assert p.returncode == 0


def test_agent_that_exits_cleanly_too_early() -> None:
    # crash.py 2 0: echoes two points, then exits 0 while the host still has data.
    p = udf.Process(sys.executable, [str(AGENTS / "crash.py"), "2", "0"])
    p.open()
    try:
        for i in range(2):
            p.point_in.put(Point(name=str(i), time=i))
        assert [p.point_out.get(timeout=TIMEOUT).name for _ in range(2)] == ["0", "1"]
        assert list(p.point_out) == []  # EOF closes the channel: nothing else was produced
    finally:
        # Nothing was written after the exit, so the end is clean (exit status 0).
        p.close()
    assert p.returncode == 0
