"""udf.Process against real child processes: the agents in tests/agents/.

Every wait is bounded by TIMEOUT; the agents make each scenario deterministic
(they exit, close or stall on cue), so no test sleeps to let something happen.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point
from udf.errors import ChannelClosed, ProcessExitedError
from udf.process import STDERR_LINE_LIMIT, STDERR_TAIL, describe_exit_status

from ..helpers import AGENTS, TIMEOUT


def agent(name: str, *args: str, **kwargs: Any) -> udf.Process:
    """A Process running tests/agents/NAME.py with this interpreter."""
    return udf.Process(sys.executable, [str(AGENTS / f"{name}.py"), *args], **kwargs)


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything the "udf" logger logs, down to DEBUG."""
    caplog.set_level(logging.DEBUG, logger="udf")


@pytest.fixture
def processes() -> Iterator[list[udf.Process]]:
    """Processes to clean up should a test fail half-way (close is idempotent)."""
    made: list[udf.Process] = []
    yield made
    for p in made:
        try:
            p.close()
        except udf.UDFError:
            pass


def point(n: int) -> Point:
    return Point(name="cpu", database="db", retention_policy="rp", tags={"host": "a"}, fields={"n": n}, time=n)


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of what the "udf" logger logged."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "udf"]


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- a conversation ---------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_echo_conversation_and_clean_close(processes: list[udf.Process]) -> None:
    fds = open_fds()
    p = agent("echo")
    processes.append(p)
    p.open()
    info = p.info()
    assert (info.wants, info.provides) == (agent_pb2.STREAM, agent_pb2.STREAM)
    assert list(info.options["field"].valueTypes) == [agent_pb2.STRING]
    p.init([agent_pb2.Option(name="field", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="v")])])
    with pytest.raises(udf.InitError, match="failed to initialize processes told to fail"):
        p.init([agent_pb2.Option(name="fail")])

    for n in range(3):
        p.point_in.put(point(n))
    assert [p.point_out.get(timeout=TIMEOUT) for _ in range(3)] == [point(n) for n in range(3)]

    batch = Batch(
        name="mem",
        tmax=30,
        group="g",
        tags={"dc": "x"},
        points=[BatchPoint(time=10, fields={"v": 1.5}, tags={"dc": "x"}), BatchPoint(time=20, fields={"v": 2.5})],
    )
    p.batch_in.put(batch)
    got = p.batch_out.get(timeout=TIMEOUT)
    assert (got.name, got.tmax, got.group, got.tags) == ("mem", 30, "g", {"dc": "x"})
    assert [(bp.time, bp.fields) for bp in got.points] == [(10, {"v": 1.5}), (20, {"v": 2.5})]

    assert p.snapshot() == b"points=5"  # 3 stream points + 2 batch points
    p.restore(b"points=7")
    assert p.snapshot() == b"points=7"
    with pytest.raises(udf.RestoreError, match="error restoring snapshot: not an echo snapshot"):
        p.restore(b"garbage")

    pid = p.pid
    assert pid is not None
    p.close()
    assert p.returncode == 0
    assert_reaped(pid)
    assert open_fds() == fds
    with pytest.raises(udf.ServerStoppedError):
        p.info()
    p.close()  # idempotent


def test_context_manager_and_queued_points_written_before_close(processes: list[udf.Process]) -> None:
    with agent("echo") as p:
        processes.append(p)
        for n in range(50):
            p.point_in.put(point(n))
    # close() wrote the queued points, closed stdin and read the echoes to the end.
    assert list(p.point_out) == [point(n) for n in range(50)]
    assert p.returncode == 0


def test_not_opened() -> None:
    p = agent("echo")
    for call in (p.info, p.snapshot, lambda: p.point_in, lambda: p.point_out, p.kill):
        with pytest.raises(udf.UDFError, match="not opened"):
            call()
    p.close()  # nothing to do
    with pytest.raises(udf.UDFError, match="already opened"):
        p.open()  # not after close()


def test_abort_before_open_is_raised_by_open_and_starts_nothing() -> None:
    p = agent("echo")
    err = udf.UDFError("shutting down")
    p.abort(err)
    assert p.error is err
    with pytest.raises(udf.UDFError) as excinfo:
        p.open()
    assert excinfo.value is err and p.pid is None
    p.close()  # nothing to release


def test_missing_program() -> None:
    p = udf.Process("/nonexistent/udf-agent")
    with pytest.raises(udf.UDFError, match="failed to start process '/nonexistent/udf-agent'"):
        p.open()


def test_args_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        udf.Process(sys.executable, "echo.py")


# --- the process dies ---------------------------------------------------------------


def test_exit_mid_stream_delivers_points_then_reports_status_and_stderr(processes: list[udf.Process]) -> None:
    aborted = threading.Event()
    p = agent("crash", "3", "3", abort_callback=aborted.set)
    processes.append(p)
    p.open()
    for n in range(3):
        p.point_in.put(point(n))
    # What the agent wrote before dying comes first ...
    assert [p.point_out.get(timeout=TIMEOUT) for _ in range(3)] == [point(n) for n in range(3)]
    # ... then the stream ends and the server aborts with the exit.
    with pytest.raises(ChannelClosed):
        p.point_out.get(timeout=TIMEOUT)
    assert aborted.wait(TIMEOUT)
    with pytest.raises(ProcessExitedError) as excinfo:
        p.info()
    message = str(excinfo.value)
    assert message.startswith("process exited unexpectedly: exit status 3\n")
    assert "W! about to fail\nE! crashed after 3 points" in message
    with pytest.raises(ProcessExitedError) as closed:
        p.close()
    assert closed.value is excinfo.value
    assert p.returncode == 3


def test_killed_by_signal(processes: list[udf.Process]) -> None:
    aborted = threading.Event()
    p = agent("echo", abort_callback=aborted.set)
    processes.append(p)
    p.open()
    p.info()
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    assert aborted.wait(TIMEOUT)
    with pytest.raises(ProcessExitedError, match=r"^process exited unexpectedly: signal: killed$"):
        p.close()
    assert p.returncode == -signal.SIGKILL


def test_pending_request_reports_the_death_not_agent_closed(processes: list[udf.Process]) -> None:
    p = agent("silent", "--answer-info")
    processes.append(p)
    p.open()
    p.info()  # the agent is up; it will not answer again
    result: list[BaseException] = []
    caller = threading.Thread(target=lambda: _capture(p.snapshot, result), name="udf-test-caller", daemon=True)
    caller.start()
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    caller.join(TIMEOUT)
    assert not caller.is_alive()
    assert len(result) == 1 and isinstance(result[0], ProcessExitedError), result
    assert str(result[0]) == "process exited unexpectedly: signal: killed"
    with pytest.raises(ProcessExitedError):
        p.close()


def _capture(call: Any, into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:  # handed back to the test
        into.append(exc)


def test_exit_status_zero_is_not_an_error(processes: list[udf.Process]) -> None:
    p = agent("crash", "1", "0")
    processes.append(p)
    p.open()
    p.point_in.put(point(1))
    assert p.point_out.get(timeout=TIMEOUT) == point(1)
    with pytest.raises(ChannelClosed):
        p.point_out.get(timeout=TIMEOUT)
    with pytest.raises(udf.AgentClosedError):
        p.info()
    p.close()
    assert p.returncode == 0


@pytest.mark.parametrize(
    "code, text",
    [
        (0, "exit status 0"),
        (3, "exit status 3"),
        (-9, "signal: killed"),
        (-15, "signal: terminated"),
        (-11, "signal: segmentation fault"),
        (-2, "signal: interrupt"),
    ],
)
def test_describe_exit_status(code: int, text: str) -> None:
    assert describe_exit_status(code) == text


# --- writes to an agent that stopped reading ------------------------------------------


def test_write_to_closed_stdin_is_the_exit_even_when_the_agent_exits_0(processes: list[udf.Process]) -> None:
    # Issue 17: an agent that exits 0 while input is still being sent is reported as
    # its exit ("exit status 0"), not as the broken pipe its end caused.
    p = agent("closed_stdin", "0")
    processes.append(p)
    p.open()
    p.info()  # answered after the agent closed its stdin
    p.point_in.put(point(1))  # the write fails: nobody reads the pipe
    assert p.pid is not None
    os.kill(p.pid, signal.SIGUSR1)  # the agent exits 0
    with pytest.raises(ProcessExitedError) as excinfo:
        p.close()
    assert str(excinfo.value) == "process exited unexpectedly: exit status 0\nlast stderr lines:\nE! closed my input"
    assert p.error is excinfo.value
    assert p.returncode == 0


def test_write_to_closed_stdin_reports_the_exit_when_the_agent_fails(processes: list[udf.Process]) -> None:
    p = agent("closed_stdin", "5")
    processes.append(p)
    p.open()
    p.info()
    p.point_in.put(point(1))  # accepted: the agent is alive; the write then fails
    assert p.pid is not None
    os.kill(p.pid, signal.SIGUSR1)  # the agent exits 5
    with pytest.raises(ProcessExitedError) as excinfo:
        p.close()
    assert str(excinfo.value) == "process exited unexpectedly: exit status 5\nlast stderr lines:\nE! closed my input"


# --- an agent that never answers --------------------------------------------------------


def test_keepalive_timeout_kills_a_silent_agent(processes: list[udf.Process], caplog: pytest.LogCaptureFixture) -> None:
    # kill_grace is long: only the server's kill callback can end the agent in time.
    p = agent("silent", timeout=0.2, kill_grace=TIMEOUT)
    processes.append(p)
    p.open()
    with pytest.raises(udf.KeepaliveTimeoutError, match="keepalive timedout, last keepalive received was: "):
        p.info()
    started = time.monotonic()
    with pytest.raises(udf.KeepaliveTimeoutError):
        p.close()
    assert time.monotonic() - started < TIMEOUT
    assert p.returncode == -signal.SIGKILL
    assert any(msg == "process not responding! killing" for _, msg in records(caplog))


def test_close_terminates_an_agent_that_ignores_its_input_end(processes: list[udf.Process]) -> None:
    p = agent("silent", "--answer-info", kill_grace=0.2)
    processes.append(p)
    p.open()
    p.info()  # the agent is up
    with pytest.raises(ProcessExitedError) as excinfo:
        p.close()
    assert str(excinfo.value) == (
        "process did not exit within 0.2s after its input was closed: sent SIGTERM; signal: terminated"
    )
    assert p.returncode == -signal.SIGTERM


def test_close_kills_an_agent_that_ignores_sigterm(processes: list[udf.Process]) -> None:
    p = agent("silent", "--answer-info", "--ignore-term", kill_grace=0.2)
    processes.append(p)
    p.open()
    p.info()  # SIGTERM is ignored from here on
    with pytest.raises(ProcessExitedError, match="sent SIGTERM, then SIGKILL; signal: killed$"):
        p.close()
    assert p.returncode == -signal.SIGKILL


def test_abort_then_close_reaps_the_agent(processes: list[udf.Process]) -> None:
    p = agent("echo")
    processes.append(p)
    p.open()
    err = udf.UDFError("given up")
    p.abort(err)
    with pytest.raises(udf.UDFError) as excinfo:
        p.close()
    assert excinfo.value is err
    assert p.returncode == 0  # the abort closed its stdin: it exited on its own


# --- stderr ---------------------------------------------------------------------------


def test_stderr_levels(processes: list[udf.Process], caplog: pytest.LogCaptureFixture) -> None:
    lines = ["E! bad thing", "W! careful", "I! fyi", "D! details", "plain words", "E!tight"]
    args = [a for line in lines for a in ("--stderr", line)]
    p = agent("echo", *args)
    processes.append(p)
    p.open()
    p.close()  # joins the stderr thread: every line is logged
    assert records(caplog) == [
        (logging.ERROR, "bad thing"),
        (logging.WARNING, "careful"),
        (logging.INFO, "fyi"),
        (logging.DEBUG, "details"),
        (logging.INFO, "plain words"),
        (logging.ERROR, "tight"),
    ]


def test_stderr_tail_keeps_the_last_lines(processes: list[udf.Process]) -> None:
    p = agent("echo", "--stderr-lines", "25")
    processes.append(p)
    p.open()
    p.close()
    assert p.stderr_tail == [f"line {i}" for i in range(26 - STDERR_TAIL, 26)]


def test_huge_stderr_line_does_not_block_the_agent(
    processes: list[udf.Process], caplog: pytest.LogCaptureFixture
) -> None:
    size = 2 * 2**20
    # A keepalive timeout turns a blocked agent into a failure instead of a hang.
    p = agent("echo", "--stderr-bytes", str(size), timeout=TIMEOUT)
    processes.append(p)
    p.open()
    p.info()  # answered only once the agent's 2 MB stderr write went through
    p.close()
    (line,) = [msg for _, msg in records(caplog) if msg.startswith("x")]
    assert line == "x" * STDERR_LINE_LIMIT + f"... [{size - STDERR_LINE_LIMIT} more bytes not logged]"


# --- environment ------------------------------------------------------------------------


def test_env_none_inherits(
    processes: list[udf.Process], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UDF_TEST_MARKER", "inherited")
    p = agent("echo", "--report-env", "UDF_TEST_MARKER")
    processes.append(p)
    p.open()
    p.close()
    assert (logging.INFO, "UDF_TEST_MARKER=inherited") in records(caplog)


def test_env_mapping_is_the_whole_environment(
    processes: list[udf.Process], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UDF_TEST_MARKER", "inherited")
    p = agent("echo", "--report-env", "UDF_TEST_MARKER", "--report-env", "ONLY", env={"ONLY": "yes"})
    processes.append(p)
    p.open()
    p.close()
    got = records(caplog)
    assert (logging.INFO, "UDF_TEST_MARKER unset") in got
    assert (logging.INFO, "ONLY=yes") in got
