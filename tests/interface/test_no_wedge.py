"""No wedge: each way a threaded service could wedge the library, lose its error or
leave a thread behind, tried with real child processes and sockets (and the
in-memory fake agent for the server's own cases).

Every wait is bounded by TIMEOUT; the autouse fixture in conftest fails a test
that leaves a ``udf-*`` thread alive.
"""

from __future__ import annotations

import logging
import os
import pathlib
import random
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Point
from udf.errors import AgentError, ChannelClosed, ProcessExitedError, ProtocolError

from ..helpers import AGENTS, ROOT, TIMEOUT, put_all, run_in_thread
from ..helpers.fake_agent import FakeAgent


def lifecycle_agent(mode: str, *args: str, **kwargs: Any) -> udf.Process:
    return udf.Process(sys.executable, [str(AGENTS / "lifecycle.py"), mode, *args], **kwargs)


def example(name: str, **kwargs: Any) -> udf.Process:
    return udf.Process(sys.executable, ["-u", str(ROOT / "examples" / f"{name}.py")], **kwargs)


def point(n: int, host: str = "a") -> Point:
    return Point(name="cpu", tags={"host": host}, fields={"value": float(n)}, time=n)


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "udf"]


def wait_for(predicate: Any, what: str) -> None:
    """Wait (bounded) until ``predicate()`` holds: for states only another thread can change."""
    deadline = time.monotonic() + TIMEOUT
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.005)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def drain(channel: udf.Channel[Any], into: list[Any]) -> threading.Thread:
    """Consume ``channel`` until it closes, in a thread of the suite."""

    def run() -> None:
        for item in channel:
            into.append(item)

    thread = threading.Thread(target=run, name="fake-agent-consumer", daemon=True)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="udf")


@pytest.fixture
def processes() -> Any:
    made: list[udf.Process] = []
    yield made
    for p in made:
        try:
            p.close(discard_output=True)
        except BaseException:
            pass


# 1. close() from the abort callback while another thread is in close() -----------


def test_close_in_abort_callback_while_another_close_runs(processes: list[udf.Process]) -> None:
    from_callback: dict[str, Any] = {}
    p: udf.Process
    p = lifecycle_agent("error-at-eof", abort_callback=lambda: from_callback.setdefault("close", _close(p)))
    processes.append(p)
    p.open()
    p.info()
    with pytest.raises(AgentError, match="^input ended: giving up$") as excinfo:
        run_in_thread(p.close)()  # the agent answers our input's end with an ErrorResponse
    assert from_callback["close"] is excinfo.value  # the callback's close() raised it too


def _close(p: udf.Interface) -> BaseException | None:
    try:
        p.close()
    except BaseException as exc:
        return exc
    return None


# 2. close() from the abort callback when the child died --------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_in_abort_callback_after_the_child_died(processes: list[udf.Process]) -> None:
    fds = open_fds()
    called = threading.Event()
    from_callback: dict[str, Any] = {}

    def on_abort() -> None:
        from_callback["close"] = _close(p)  # runs in the process-waiter thread
        called.set()

    p = lifecycle_agent("exit-after-info", "3", abort_callback=on_abort)
    processes.append(p)
    p.open()
    p.info()
    assert called.wait(TIMEOUT)
    assert isinstance(from_callback["close"], ProcessExitedError)
    for _ in range(2):  # every later close() raises the same error
        with pytest.raises(ProcessExitedError, match="^process exited unexpectedly: exit status 3") as excinfo:
            p.close()
        assert excinfo.value is from_callback["close"]
    assert p.error is excinfo.value
    assert open_fds() == fds  # every pipe closed


# 3. a grandchild holding the agent's stdout ---------------------------------------


def test_close_is_bounded_when_a_grandchild_holds_the_output(processes: list[udf.Process]) -> None:
    p = lifecycle_agent("grandchild", kill_grace=0.3)
    processes.append(p)
    p.open()
    p.info()
    begun = time.monotonic()
    with pytest.raises(ProcessExitedError) as excinfo:
        run_in_thread(p.close)()
    elapsed = time.monotonic() - begun
    message = str(excinfo.value)
    assert message.startswith(
        "process exited (exit status 0) but its output stayed open after it exited (held by a child of it?): "
        "sent SIGTERM; exit status 0"
    ), message
    assert elapsed < TIMEOUT
    helper = int(next(line for line in p.stderr_tail if "helper " in line).split()[-1])
    # The helper was in the agent's process group: SIGTERM ended it too.
    wait_for(lambda: not _alive(helper), f"the helper process {helper} to end")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie awaits its (new) parent
    except FileNotFoundError:
        return False


# 4. an exception inside `with` while point_out is full ---------------------------


def test_exception_in_with_body_aborts_and_propagates(processes: list[udf.Process]) -> None:
    def body() -> None:
        with example("mirror", out_queue_size=4) as p:
            processes.append(p)
            for n in range(50):
                p.point_in.put(point(n), timeout=TIMEOUT)
            wait_for(p.point_out.full, "the reader to block on a full point_out")
            raise KeyError("the body failed")

    with pytest.raises(KeyError, match="the body failed"):
        run_in_thread(body)()
    p = processes[0]
    assert isinstance(p.error, KeyError)
    assert p.returncode == 0  # it saw its input end and exited


# 5. a consumer that closes point_out ----------------------------------------------


def test_consumer_closing_point_out_drops_output_but_requests_are_answered(
    processes: list[udf.Process], caplog: pytest.LogCaptureFixture
) -> None:
    p = example("mirror", out_queue_size=8)
    processes.append(p)
    p.open()
    p.point_in.put(point(0))
    assert p.point_out.get(timeout=TIMEOUT) == point(0)
    p.point_out.close()  # the consumer wants no more
    for n in range(1, 100):
        p.point_in.put(point(n), timeout=TIMEOUT)
    p.info()  # answered behind the 99 points, which were dropped
    stats = p.stats()
    assert stats.state == "running" and stats.error is None
    assert stats.dropped == 99 and stats.points_out == 1, stats
    assert any("point_out was closed by its consumer" in m for m in records(caplog))
    p.close()


# 6. kill_grace counts from the end of progress, not from close() --------------------


def test_slow_healthy_agent_is_not_killed_while_taking_its_queued_input(processes: list[udf.Process]) -> None:
    n = 1500  # about 250 KB: several pipe-fulls, taken at 1 ms a point
    # kill_grace leaves a Python agent time to exit after its output ends, even on a loaded machine.
    p = lifecycle_agent("slow-echo", "0.001", kill_grace=1.0)
    processes.append(p)
    p.open()
    got: list[Point] = []
    consumer = drain(p.point_out, got)
    producer = run_in_thread(put_all, p.point_in, [point(i) for i in range(n)])
    producer()
    p.close()  # takes about 1.5 s: more than kill_grace, all of it progress
    consumer.join(TIMEOUT)
    assert got == [point(i) for i in range(n)]
    assert p.returncode == 0


# 7. a kill_callback that raises is logged ----------------------------------------


def test_kill_callback_exception_is_logged(agent: FakeAgent, caplog: pytest.LogCaptureFixture) -> None:
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        raise RuntimeError("kill failed")

    s = agent.server(timeout=0.05, kill_callback=kill)
    s.start()
    assert killed.wait(TIMEOUT)  # no keepalive answered, the I/O never ends: kill
    agent.finish()  # the agent's output ends
    assert s.wait_io(TIMEOUT)
    assert any(
        r.getMessage() == "kill callback failed" and r.exc_info and "kill failed" in str(r.exc_info[1])
        for r in caplog.records
    )


# 8. start() after abort() is refused ----------------------------------------------


def test_start_after_abort_is_refused(agent: FakeAgent) -> None:
    s = agent.server()
    err = udf.UDFError("no")
    s.abort(err)
    with pytest.raises(udf.UDFError, match="^server already aborted: no$"):
        s.start()
    assert s.state is udf.ServerState.ABORTED and not [t for t in threading.enumerate() if t.name == "udf-reader"]
    with pytest.raises(udf.UDFError) as excinfo:
        s.stop()
    assert excinfo.value is err


# 10. abort() racing open() on a Socket is never lost --------------------------------


def test_abort_racing_open_is_never_lost(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    stop = threading.Event()

    def accept() -> None:  # accept and hold connections; close them when the host does
        conns = []
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conns.append(listener.accept()[0])
            except TimeoutError:
                continue
        for conn in conns:
            conn.close()

    acceptor = threading.Thread(target=accept, name="fake-agent-acceptor", daemon=True)
    acceptor.start()
    rng = random.Random(7)
    outcomes = {"open raised": 0, "server aborted": 0}
    try:
        for i in range(100):
            s = udf.Socket(path, connect_timeout=TIMEOUT, close_grace=0.0)
            err = udf.UDFError(f"abort {i}")
            ready = threading.Barrier(2)

            def race(s: udf.Socket, err: udf.UDFError, ready: threading.Barrier) -> None:
                ready.wait(TIMEOUT)
                for _ in range(rng.randrange(50)):
                    pass
                s.abort(err)

            aborter = run_in_thread(race, s, err, ready)
            ready.wait(TIMEOUT)
            try:
                s.open()
            except udf.UDFError as exc:
                assert exc is err
                outcomes["open raised"] += 1
            else:
                aborter()
                assert s.error is err
                outcomes["server aborted"] += 1
            aborter()
            assert s.error is err
            with pytest.raises(udf.UDFError) as excinfo:
                s.close()
            assert excinfo.value is err
    finally:
        stop.set()
        acceptor.join(TIMEOUT)
        listener.close()
    assert sum(outcomes.values()) == 100


# 11. the error behind a closed channel is shown -------------------------------------


def test_put_after_the_agent_was_killed_names_the_exit(processes: list[udf.Process]) -> None:
    p = example("mirror")
    processes.append(p)
    p.open()
    p.info()
    assert p.error is None
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    wait_for(lambda: p.error is not None, "the server to learn of the death")
    assert isinstance(p.error, ProcessExitedError)
    with pytest.raises(ChannelClosed) as excinfo:
        p.point_in.put(point(1))
    assert excinfo.value.__cause__ is p.error
    assert "signal: killed" in str(excinfo.value)
    with pytest.raises(ChannelClosed) as got:
        p.point_out.get(timeout=TIMEOUT)
    assert got.value.__cause__ is p.error
    with pytest.raises(ProcessExitedError, match="^process exited unexpectedly: signal: killed"):
        p.close()


# 12. a slow but steady consumer loses nothing at close() ---------------------------


def test_slow_consumer_loses_nothing_at_close(processes: list[udf.Process]) -> None:
    n = 3000
    p = example("mirror", timeout=5.0, kill_grace=1.0)
    processes.append(p)
    p.open()
    resume = threading.Event()
    got: list[Point] = []

    def consume() -> None:
        for item in p.point_out:
            got.append(item)
            if len(got) == 10:
                resume.wait(1.5)  # a pause longer than kill_grace, with the agent blocked on us

    consumer = threading.Thread(target=consume, name="fake-agent-consumer", daemon=True)
    consumer.start()
    run_in_thread(put_all, p.point_in, [point(i) for i in range(n)])()
    p.close()
    consumer.join(TIMEOUT)
    assert len(got) == n and got == [point(i) for i in range(n)]
    assert p.returncode == 0


# 13. a killed agent is reported as its exit, every time ----------------------------


def test_killed_mid_stream_is_the_exit_not_a_protocol_error(processes: list[udf.Process]) -> None:
    for run in range(4):
        p = example("moving_avg")
        processes.append(p)
        p.open()
        p.init(
            [
                agent_pb2.Option(
                    name="field", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="value")]
                ),
                agent_pb2.Option(name="size", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=2)]),
                agent_pb2.Option(name="as", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="avg")]),
            ]
        )
        got: list[Point] = []
        consumer = drain(p.point_out, got)

        def produce(p: udf.Process, host: str) -> None:
            try:
                for i in range(20000):
                    p.point_in.put(point(i, host), timeout=TIMEOUT)
            except ChannelClosed:
                pass

        producers = [run_in_thread(produce, p, h) for h in ("a", "b")]
        wanted = 100 * (run + 1)
        wait_for(lambda got=got, wanted=wanted: len(got) >= wanted, "outputs before the kill")
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        for producer in producers:
            producer()
        consumer.join(TIMEOUT)
        with pytest.raises(ProcessExitedError, match="^process exited unexpectedly: signal: killed"):
            p.close()


def test_death_inside_a_frame_is_the_exit(processes: list[udf.Process]) -> None:
    p = lifecycle_agent("die-mid-frame")
    processes.append(p)
    p.open()
    p.info()
    with pytest.raises(ProcessExitedError, match="^process exited unexpectedly: signal: killed") as excinfo:
        p.close()
    assert not isinstance(excinfo.value, ProtocolError)


# 15. close() without a consumer ----------------------------------------------------


def test_close_waits_for_a_late_consumer_and_says_nothing_false(
    processes: list[udf.Process], caplog: pytest.LogCaptureFixture
) -> None:
    p = example("mirror", kill_grace=1.0, out_queue_size=16)
    processes.append(p)
    p.open()
    p.info()  # the agent is up: its start-up (slow on a loaded machine) is not what kill_grace measures
    run_in_thread(put_all, p.point_in, [point(i) for i in range(200)])()
    closing = run_in_thread(p.close)
    assert not threading.Event().wait(1.5)  # no consumer for longer than kill_grace
    got = list(p.point_out)  # the consumer comes late
    closing()  # a clean close
    assert got == [point(i) for i in range(200)]
    assert p.returncode == 0
    assert not [m for m in records(caplog) if "SIGTERM" in m or "SIGKILL" in m]


def test_close_discarding_output_needs_no_consumer(processes: list[udf.Process]) -> None:
    p = example("mirror", out_queue_size=16)
    processes.append(p)
    p.open()
    run_in_thread(put_all, p.point_in, [point(i) for i in range(200)])()
    run_in_thread(lambda: p.close(discard_output=True))()
    assert p.returncode == 0
    assert p.stats().dropped + p.stats().points_out == 200
    assert p.point_out.closed


# the state tables ------------------------------------------------------------------


def test_transport_states(processes: list[udf.Process], monkeypatch: pytest.MonkeyPatch) -> None:
    p = example("mirror")
    processes.append(p)
    assert p.state is udf.TransportState.NEW
    p.open()
    assert p.state is udf.TransportState.OPEN
    p.close()
    assert p.state is udf.TransportState.CLOSED
    signalled: list[Any] = []
    monkeypatch.setattr(os, "killpg", lambda *args: signalled.append(args))
    p.kill()  # after close(): nothing left to end (its process group id may be reused)
    assert signalled == [] and p.returncode == 0


def test_server_states(agent: FakeAgent) -> None:
    s = agent.server()
    assert s.state is udf.ServerState.NEW
    s.start()
    assert s.state is udf.ServerState.RUNNING
    stopping = run_in_thread(s.stop)
    agent.drain_requests()  # the server closed its output: it is stopping
    assert s.state is udf.ServerState.STOPPING
    agent.finish()
    stopping()
    assert s.state is udf.ServerState.STOPPED
