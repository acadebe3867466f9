"""One cause, everywhere (issue 17, defects 1 and 2): once an agent died, every call raises the same error.

``put()``'s ``ChannelClosed`` (through ``__cause__``), ``get()``'s, every request,
the ``error`` property and ``close()`` all name the one error that ended the
agent: for a process its ``ProcessExitedError``, never a "write error: broken
pipe" that raced it. Real child processes; the producer is mid-put when the
agent dies, the window in which the write error used to win.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

import pytest

import udf
from udf import Point
from udf.errors import ChannelClosed, ProcessExitedError

from ..helpers import AGENTS, ROOT, TIMEOUT, run_in_thread

#: Runs of the SIGKILL race: before the fix the write error won it in 8 of 12 runs.
KILL_RUNS = 16


def point(n: int) -> Point:
    return Point(name="cpu", tags={"host": "a"}, fields={"value": float(n)}, time=n)


def put_until_closed(p: udf.Interface, progress: dict[str, int]) -> ChannelClosed:
    """Put points without pause until put() raises; return its ChannelClosed."""
    n = 0
    while n < 10_000_000:
        try:
            p.point_in.put(point(n), timeout=TIMEOUT)
        except ChannelClosed as exc:
            return exc
        n += 1
        progress["put"] = n
    raise AssertionError("put() never raised")


def drain(channel: udf.Channel[Any], into: list[BaseException]) -> threading.Thread:
    """Consume ``channel`` until it closes; keep the ChannelClosed that ended it."""

    def run() -> None:
        while True:
            try:
                channel.get(timeout=TIMEOUT)
            except ChannelClosed as exc:
                into.append(exc)
                return

    thread = threading.Thread(target=run, name="fake-agent-consumer", daemon=True)
    thread.start()
    return thread


def assert_one_cause(p: udf.Process, put_error: ChannelClosed, get_errors: list[BaseException], text: str) -> None:
    """Every way of asking says the same error, the very same object."""
    cause = p.error
    assert isinstance(cause, ProcessExitedError), repr(cause)
    assert str(cause).startswith(text), str(cause)
    assert put_error.__cause__ is cause, f"put() said {put_error!r} (cause {put_error.__cause__!r})"
    assert len(get_errors) == 1 and get_errors[0].__cause__ is cause, get_errors
    with pytest.raises(ProcessExitedError) as request:
        p.info()
    assert request.value is cause
    with pytest.raises(ProcessExitedError) as closed:
        p.close()
    assert closed.value is cause
    assert p.error is cause


def test_sigkill_while_a_producer_puts_is_one_cause_everywhere() -> None:
    """Defect 1: the kill lands while the writer is busy; put() used to say "write error: broken pipe"."""
    for run in range(KILL_RUNS):
        p = udf.Process(sys.executable, ["-u", str(ROOT / "examples" / "mirror.py")])
        p.open()
        try:
            got: list[BaseException] = []
            consumer = drain(p.point_out, got)
            progress = {"put": 0}
            producer = run_in_thread(put_until_closed, p, progress)
            wait = threading.Event()
            while progress["put"] < 3000:  # a steady flow: the writer is writing when the kill lands
                assert not wait.wait(0.001) and p.error is None
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
            put_error = producer()
            consumer.join(TIMEOUT)
            assert_one_cause(p, put_error, got, "process exited unexpectedly: signal: killed")
        finally:
            try:
                p.close()
            except udf.UDFError:
                pass
        assert p.returncode == -signal.SIGKILL, f"run {run}"


def test_agent_exiting_0_while_input_is_sent_is_its_exit_everywhere() -> None:
    """Defect 2: an agent that exits 0 with input still coming is reported as "exit status 0", not a broken pipe."""
    p = udf.Process(sys.executable, [str(AGENTS / "crash.py"), "500", "0"])  # echoes 500 points, then exits 0
    p.open()
    try:
        got: list[BaseException] = []
        consumer = drain(p.point_out, got)
        put_error = run_in_thread(put_until_closed, p, {"put": 0})()
        consumer.join(TIMEOUT)
        assert_one_cause(p, put_error, got, "process exited unexpectedly: exit status 0\nlast stderr lines:\n")
        assert "E! crashed after 500 points" in str(p.error)
    finally:
        try:
            p.close()
        except udf.UDFError:
            pass
    assert p.returncode == 0


def test_socket_agent_gone_while_a_producer_puts_is_one_cause_everywhere(tmp_path: pathlib.Path) -> None:
    """For a socket, the error that ended the connection, the same object for every call.

    The agent goes away while the host is sending (its writer blocked): an agent
    that closes its connection while nothing is being sent ends the conversation
    cleanly instead, as a process that exits 0 after taking everything does.
    """
    import socket as socket_module

    from udf.errors import ReadError, WriteError

    path = str(tmp_path / "agent.sock")
    listener = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    s = udf.Socket(path, connect_timeout=TIMEOUT)
    s.open()
    conn, _ = listener.accept()
    try:
        got: list[BaseException] = []
        consumer = drain(s.point_out, got)
        progress = {"put": 0}
        producer = run_in_thread(put_until_closed, s, progress)
        seen = 0
        while seen < 20_000:  # read some of the host's input ...
            chunk = conn.recv(65536)
            assert chunk, "the host closed the connection first"
            seen += len(chunk)
        deadline = (
            time.monotonic() + TIMEOUT
        )  # ... stop reading until the host is blocked sending (its outbox full) ...
        pause = threading.Event()
        while s.stats().in_queue < 1024:  # only the producer, in another thread, can fill it
            assert time.monotonic() < deadline, "the host never filled its outbox"
            pause.wait(0.005)
        conn.close()  # ... and go away in the middle of it: the blocked write fails (EPIPE), the reads end
        put_error = producer()
        consumer.join(TIMEOUT)
        cause = s.error  # whichever the system reported first: a broken pipe, or a reset connection
        assert isinstance(cause, (WriteError, ReadError)), repr(cause)
        assert put_error.__cause__ is cause, put_error
        assert len(got) == 1 and got[0].__cause__ is cause, got
        with pytest.raises(udf.UDFError) as request:
            s.info()
        assert request.value is cause
        with pytest.raises(udf.UDFError) as closed:
            s.close()
        assert closed.value is cause
    finally:
        listener.close()
        try:
            s.close()
        except udf.UDFError:
            pass
