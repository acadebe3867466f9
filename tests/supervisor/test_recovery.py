"""udf.Supervisor against real agents and real failures: SIGKILL, SIGSTOP, exits, a
restarted socket server, agents that die after init, refused restores, poison points,
concurrent producers, and recovery equivalence with moving_avg (Python and Go).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import random
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Dimensions, Point, Supervisor, SupervisorGaveUp
from udf.agent import AgentServer, Handler
from udf.convert import encode_point

from ..helpers import AGENTS, ROOT, TIMEOUT
from ..helpers.supervision import BACKOFF, Consumer, Factory, PlainInterface, Restarts, agent_command, point, supervisor

MOVING_AVG = ROOT / "examples" / "moving_avg.py"
GO_MOVING_AVG = ROOT.parent / "shared" / "anchors" / "moving_avg"


def warnings_from(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# --- real failures ---------------------------------------------------------------------


def test_sigkill_mid_stream_restores_and_replays(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="udf")
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, snapshot_every=200, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    inlet = sup.point_in
    for i in range(3000):
        inlet.put(point(i))
        if i == 1500:
            out.wait_for(500)  # the agent is working
            factory.kill_current()
    assert sup.checkpoint() == b"points=3000", "the restored state plus the replay is every point, once"
    stats = sup.stats()
    sup.close()
    times = [p.time for p in out.join()]
    assert set(times) == set(range(3000))
    assert len(restarts.events) == 1 and stats.restarts == 1 and stats.generation == 1
    event = restarts.events[0]
    assert event.generation == 1 and event.lost == 0 and event.replayed == stats.replayed
    assert isinstance(event.cause, udf.ProcessExitedError) and "signal: killed" in str(event.cause)
    assert len(times) <= 3000 + event.replayed  # repeats only from the replay
    assert inlet is sup.point_in
    logged = warnings_from(caplog, "restarting")
    assert len(logged) == 1 and "signal: killed" in logged[0] and "in 0.0" in logged[0], logged
    assert sup.stats().state == "closed"
    assert factory.made[0].returncode == -signal.SIGKILL


def test_batches_survive_a_kill() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, snapshot_every=20, on_restart=restarts)
    sup.open()
    out = Consumer(sup.batch_out)
    for i in range(100):
        points = [udf.BatchPoint(time=i * 10 + j, fields={"v": j}) for j in range(5)]
        sup.batch_in.put(udf.Batch(name="b", group=f"g{i}", tmax=i, points=points))
        if i == 50:
            out.wait_for(10)
            factory.kill_current()
            restarts.wait(1)
    sup.close()
    batches = out.join()
    assert {b.group for b in batches} == {f"g{i}" for i in range(100)}
    assert all(len(b.points) == 5 for b in batches)


def test_sigstop_keepalive_timeout_then_kill_then_restart() -> None:
    # 2 s: a keepalive timeout that a Python agent starting on a loaded machine does not trip.
    factory = Factory(*agent_command("echo.py"), timeout=2.0)
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(100):
        sup.point_in.put(point(i))
    out.wait_for(100)
    factory.kill_current(signal.SIGSTOP)
    for i in range(100, 200):
        sup.point_in.put(point(i))  # accepted; the hung agent's are replayed to the next one
    restarts.wait(1)
    sup.close()
    assert {p.time for p in out.join()} == set(range(200))
    assert isinstance(restarts.events[0].cause, udf.KeepaliveTimeoutError)
    assert factory.made[0].returncode == -signal.SIGKILL, "the stopped agent was killed, not left behind"


def test_agent_exiting_nonzero_on_a_point(tmp_path: Path) -> None:
    factory = Factory(*agent_command("flaky.py", "--die-on", "boom", "--once", str(tmp_path / "died")))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(50):
        sup.point_in.put(point(i, name="boom" if i == 25 else "cpu"))
    sup.close()
    outputs = out.join()
    assert {p.time for p in outputs} == set(range(50))
    assert [p.name for p in outputs].count("boom") == 1, "the agent died before echoing it"
    cause = restarts.events[0].cause
    assert "process exited unexpectedly: exit status 3" in str(cause) and "dying: point boom" in str(cause)


def test_clean_exit_while_items_are_expected_is_a_failure(tmp_path: Path) -> None:
    factory = Factory(
        *agent_command("flaky.py", "--die-on", "bye", "--status", "0", "--once", str(tmp_path / "exited"))
    )
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(20):
        sup.point_in.put(point(i, name="bye" if i == 10 else "cpu"))
    sup.close()
    assert {p.time for p in out.join()} == set(range(20))
    cause = restarts.events[0].cause
    # The cause is the transport's one cause (Interface.error): its exit, "exit status 0",
    # when it died with input still being sent; the agent's EOF when everything had been
    # written to it before it exited. Never a bare "broken pipe" that races the exit.
    if isinstance(cause, udf.ProcessExitedError):
        assert "exit status 0" in str(cause)
    else:
        assert isinstance(cause, udf.AgentClosedError) and not isinstance(cause, udf.WriteError), repr(cause)


def test_failure_while_closing_is_recovered_then_the_new_agent_closed(tmp_path: Path) -> None:
    factory = Factory(*agent_command("flaky.py", "--fail-at-eof", "--once", str(tmp_path / "failed")))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(30):
        sup.point_in.put(point(i))
    sup.close()  # recovered: nothing raised
    assert {p.time for p in out.join()} == set(range(30))
    assert len(restarts.events) == 1 and "exit status 3" in str(restarts.events[0].cause)
    assert [p.returncode for p in factory.made] == [3, 0]


class _EchoHandler(Handler):
    """An in-process stream agent echoing points; snapshots count them."""

    def __init__(self, agent: Any) -> None:
        super().__init__(agent)
        self.count = 0

    def info(self) -> Any:
        return agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)

    def point(self, point: Any) -> None:
        self.count += 1
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(point=point), flush=False)

    def snapshot(self) -> Any:
        return agent_pb2.SnapshotResponse(snapshot=b"%d" % self.count)

    def restore(self, restore_req: Any) -> Any:
        self.count = int(restore_req.snapshot or b"0")
        return agent_pb2.RestoreResponse(success=True)


def test_socket_agent_server_stopped_and_started_again(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    retrying = threading.Event()

    def factory() -> udf.Socket:
        return udf.Socket(
            path,
            connect_timeout=TIMEOUT,
            initial_backoff=0.01,
            max_backoff=0.05,
            on_retry=lambda attempt, err, delay: retrying.set(),
        )

    restarts = Restarts()
    server = AgentServer(path, _EchoHandler)
    server.start()
    sup = supervisor(factory, on_restart=restarts)
    try:
        sup.open()
        out = Consumer(sup.point_out)
        for i in range(50):
            sup.point_in.put(point(i))
        out.wait_for(50)
        assert sup.checkpoint() == b"50"
        server.stop()  # the agent ends its output cleanly: a failure, since we expect more
        assert retrying.wait(TIMEOUT), "the supervisor did not try to reconnect"
        server = AgentServer(path, _EchoHandler)
        server.start()
        for i in range(50, 100):
            sup.point_in.put(point(i))
        assert sup.checkpoint() == b"100", "reconnected, restored and went on"
        sup.close()
    finally:
        server.stop()
    assert [p.time for p in out.join()] == list(range(100))
    assert isinstance(restarts.events[0].cause, udf.AgentClosedError)


# --- giving up ---------------------------------------------------------------------------


def test_gives_up_when_the_agent_always_dies_after_init() -> None:
    factory = Factory(*agent_command("flaky.py", "--die-after-init"))
    restarts = Restarts()
    sup = supervisor(factory, max_restarts=2, period=TIMEOUT * 6, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    with pytest.raises(SupervisorGaveUp) as raised:
        sup.close()
    err = raised.value
    assert "2 restarts within" in str(err) and "exit status 3" in str(err) and "dying: after init" in str(err)
    assert isinstance(err.__cause__, udf.ProcessExitedError)
    assert len(factory.made) == 3, "max_restarts=2: at most 3 agents in a burst"
    assert len(restarts.events) == 2
    assert sup.stats().state == "gave_up"
    with pytest.raises(SupervisorGaveUp):
        sup.point_in.put(point(1))
    assert out.join() == []


def test_init_error_on_first_open_is_raised_at_once() -> None:
    factory = Factory(*agent_command("echo.py"))
    sup = Supervisor(factory, [agent_pb2.Option(name="fail")], backoff=BACKOFF)
    with pytest.raises(udf.InitError, match="told to fail"):
        sup.open()
    assert len(factory.made) == 1, "never retried"
    assert factory.made[0].returncode is not None, "the agent was reaped"
    assert sup.point_out.closed
    sup.close()


def test_program_that_does_not_start_is_never_retried(tmp_path: Path) -> None:
    factory = Factory(str(tmp_path / "no-such-agent"), [])
    sup = supervisor(factory)
    with pytest.raises(udf.UDFError, match="failed to start process"):
        sup.open()
    assert len(factory.made) == 1


def test_a_restore_the_new_agent_rejects_gives_up_naming_it() -> None:
    factory = Factory(*agent_command("flaky.py", "--reject-restore"))
    sup = supervisor(factory)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(10):
        sup.point_in.put(point(i))
    assert sup.checkpoint() == b"points=10"
    factory.kill_current()
    with pytest.raises(SupervisorGaveUp) as raised:
        sup.close()
    assert isinstance(raised.value.__cause__, udf.RestoreError)
    assert "error restoring snapshot: no restores here" in str(raised.value)
    assert len(factory.made) == 2, "a refused restore is not retried, nor silently skipped"
    out.join()


def test_a_poison_point_gives_up_and_names_the_item() -> None:
    factory = Factory(*agent_command("flaky.py", "--die-on", "poison"))
    restarts = Restarts()
    sup = supervisor(factory, max_restarts=3, period=TIMEOUT * 6, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    errors: list[BaseException] = []
    try:
        for i in range(40):
            sup.point_in.put(point(i, name="poison" if i == 20 else "cpu"))
    except SupervisorGaveUp as exc:
        errors.append(exc)
    with pytest.raises(SupervisorGaveUp) as raised:
        sup.close()
    message = str(raised.value)
    assert "while replaying point 21 of" in message and "name='poison'" in message, message
    assert "at or before" not in message, "the careful replay found the very item"
    assert "exit status 3" in message
    assert len(factory.made) == 4, "3 restarts, each dying on the poison while replaying"
    assert restarts.events == [], "no replacement ever came up"
    assert sup.stats().restarts == 3
    out.join()


# --- exactly what was accepted ------------------------------------------------------------


def test_concurrent_producers_are_neither_lost_nor_replayed_twice() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, snapshot_every=97, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    producers, each = 4, 1500
    errors: list[BaseException] = []

    def produce(k: int) -> None:
        try:
            for i in range(each):
                sup.point_in.put(Point(name=f"p{k}", time=i, fields={"v": i}))
                if k == 0 and i in (500, 1000):
                    factory.kill_current()
                    restarts.wait(1 if i == 500 else 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(k,), name=f"test-producer-{k}") for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not errors
    # Echo counts the points in its state: restored snapshot + replay + new = each item exactly once.
    assert sup.checkpoint() == b"points=%d" % (producers * each)
    sup.close()
    seen: dict[str, list[int]] = {}
    for p in out.join():
        seen.setdefault(p.name, []).append(p.time)
    for k in range(producers):
        firsts = list(dict.fromkeys(seen[f"p{k}"]))
        assert firsts == list(range(each)), f"producer {k}'s points were lost or reordered"
    assert len(restarts.events) == 2


def test_replay_false_reports_the_items_lost() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, replay=False, snapshot_every=1000, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(100):
        sup.point_in.put(point(i))
    assert sup.checkpoint() == b"points=100"
    for i in range(100, 130):
        sup.point_in.put(point(i))
    out.wait_for(130)
    factory.kill_current()
    restarts.wait(1)
    sup.point_in.put(point(130))
    event = restarts.events[0]
    assert (event.replayed, event.lost) == (0, 30)
    assert sup.checkpoint() == b"points=101", "restored at 100, then only the new point"
    stats = sup.stats()
    assert (stats.lost, stats.replayed, stats.state) == (30, 0, "running")
    sup.close()
    out.join()


def test_a_bad_point_raises_at_put_and_is_not_accepted() -> None:
    sup = supervisor(Factory(*agent_command("echo.py")))
    sup.open()
    out = Consumer(sup.point_out)
    with pytest.raises(TypeError, match="'bad'"):
        sup.point_in.put(Point(name="x", fields={"bad": object()}))  # type: ignore[dict-item]
    sup.point_in.put(point(1))
    sup.point_in.put_encoded(encode_point(point(2)))
    assert sup.stats().accepted == 2
    sup.close()
    assert [p.time for p in out.join()] == [1, 2]


def test_a_third_party_interface_is_supervised_too() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(lambda: PlainInterface(factory()), snapshot_every=50, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i in range(400):
        sup.point_in.put(point(i))
        if i == 200:
            out.wait_for(100)
            factory.kill_current()
    assert sup.checkpoint() == b"points=400"
    sup.close()
    assert {p.time for p in out.join()} == set(range(400))
    assert "signal: killed" in str(restarts.events[0].cause)


# --- recovery equivalence -------------------------------------------------------------------


def _series(n: int, groups: int, seed: int) -> list[Point]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        host = f"h{i % groups:03d}"
        out.append(
            Point(
                name="cpu",
                group=f"cpu\nhost={host}",
                dimensions=Dimensions(False, ["host"]),
                tags={"host": host},
                fields={"value": rng.uniform(0, 100)},
                time=1_700_000_000_000_000_000 + (i // groups) * 1_000_000_000,
            )
        )
    return out


def _moving_avg_options() -> list[Any]:
    def option(name: str, **value: Any) -> Any:
        return agent_pb2.Option(name=name, values=[agent_pb2.OptionValue(**value)])

    return [
        option("field", type=agent_pb2.STRING, stringValue="value"),
        option("size", type=agent_pb2.INT, intValue=10),
        option("as", type=agent_pb2.STRING, stringValue="avg"),
    ]


def _run_moving_avg(
    prog: str, args: Sequence[str], points: list[Point], kills: Sequence[int]
) -> tuple[list[Point], int]:
    """Outputs of ``points`` through a supervised agent killed before the items at ``kills``; and the restarts."""
    factory = Factory(prog, args)
    restarts = Restarts()
    sup = Supervisor(factory, _moving_avg_options(), backoff=BACKOFF, snapshot_every=1000, on_restart=restarts)
    sup.open()
    out = Consumer(sup.point_out)
    for i, p in enumerate(points):
        if i in kills:
            factory.kill_current()
            restarts.wait(kills.index(i) + 1)
        sup.point_in.put(p)
    sup.close()
    return out.join(), len(restarts.events)


def _dedupe(outputs: list[Point]) -> list[Point]:
    """Outputs without repeats (at-least-once): a repeat must equal the first output of its key."""
    first: dict[tuple[str, int], Point] = {}
    unique = []
    for p in outputs:
        key = (p.group, p.time)
        if key in first:
            assert p == first[key], f"a replayed output differs: {p} vs {first[key]}"
            continue
        first[key] = p
        unique.append(p)
    return unique


def _check_equivalence(prog: str, args: Sequence[str]) -> None:
    points = _series(20_000, 100, seed=7)
    kills = sorted(random.Random(11).sample(range(1000, 19_000), 3))
    plain, none = _run_moving_avg(prog, args, points, [])
    assert none == 0 and len(plain) > 19_000
    recovered, restarts = _run_moving_avg(prog, args, points, kills)
    assert restarts == 3
    unique = _dedupe(recovered)
    assert unique == plain, "after removing repeats, the outputs are the uninterrupted run's"


@pytest.mark.slow
def test_recovery_equivalence_python_moving_avg() -> None:
    _check_equivalence(sys.executable, ["-u", str(MOVING_AVG)])


@pytest.mark.skipif(not GO_MOVING_AVG.exists(), reason=f"Kapacitor's Go moving_avg anchor is absent ({GO_MOVING_AVG})")
def test_recovery_equivalence_go_moving_avg() -> None:
    _check_equivalence(str(GO_MOVING_AVG), [])


def test_abort_stops_without_restarting() -> None:
    factory = Factory(*agent_command("echo.py"))
    sup = supervisor(factory)
    sup.open()
    out = Consumer(sup.point_out)
    sup.point_in.put(point(1))
    out.wait_for(1)
    reason = udf.UDFError("owner gave up")
    sup.abort(reason)
    assert sup.state == "closed" and sup.error is reason, "abort() stops for good at once"
    with pytest.raises(udf.UDFError, match="owner gave up"):
        sup.close()
    with pytest.raises(udf.ChannelClosed) as raised:
        sup.point_in.put(point(2))
    assert raised.value.__cause__ is reason
    assert len(factory.made) == 1 and factory.made[0].returncode is not None
    assert sup.stats().state == "closed"
    # One cause: every request, and close() again, raise the abort error itself; a later abort changes nothing.
    sup.abort(udf.UDFError("a later abort"))
    requests: list[Callable[[], object]] = [
        sup.checkpoint,
        sup.snapshot_with_position,
        lambda: sup.init({}),
        lambda: sup.restore(b"x"),
        sup.close,
    ]
    for request in requests:
        with pytest.raises(udf.UDFError) as raised_by_request:
            request()
        assert raised_by_request.value is reason
    out.join()


def test_cli_run_restart_survives_an_agent_that_dies(tmp_path: Path) -> None:
    from udf.cli import main

    lines = b"".join(b"%s,host=a v=%d %d\n" % (b"boom" if i == 5 else b"cpu", i, i) for i in range(10))
    out, err = io.StringIO(), io.StringIO()
    cmd = [sys.executable, "-u", str(AGENTS / "flaky.py"), "--die-on", "boom", "--once", str(tmp_path / "died")]
    code = main(["run", "--restart", "--no-progress", "--", *cmd], stdin=io.BytesIO(lines), stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    times = {int(line.rsplit(" ", 1)[1]) for line in out.getvalue().splitlines()}
    assert times == set(range(10))
    assert "restarting it (generation 1)" in err.getvalue() and "exit status 3" in err.getvalue()

    # Without --restart the same agent ends the run.
    os.unlink(tmp_path / "died")
    code = main(
        ["run", "--no-progress", "--", *cmd], stdin=io.BytesIO(lines), stdout=io.StringIO(), stderr=io.StringIO()
    )
    assert code == 1


def test_point_out_reads_each_agent_in_turn_and_is_receive_only() -> None:
    factory = Factory(*agent_command("echo.py"))
    restarts = Restarts()
    sup = supervisor(factory, on_restart=restarts)
    sup.open()
    with pytest.raises(queue.Empty):
        sup.point_out.get(timeout=0.01)
    with pytest.raises(udf.UDFError, match="receive side"):
        sup.point_out.put(point(0))
    for i in range(10):
        sup.point_in.put(point(i))
    first = [sup.point_out.get(timeout=TIMEOUT).time for _ in range(10)]
    factory.kill_current()
    restarts.wait(1)  # nobody read meanwhile: the old agent's channel is simply drained
    sup.point_in.put(point(10))
    rest: list[int] = []
    while not rest or rest[-1] != 10:
        rest.append(sup.point_out.get(timeout=TIMEOUT).time)
    assert first == list(range(10)) and rest[-1] == 10 and set(rest) <= set(range(11))
    sup.point_out.close()  # the consumer wants no more: the agents' output is dropped
    sup.point_in.put(point(11))
    sup.close()
    with pytest.raises(udf.ChannelClosed):
        sup.point_out.get(timeout=TIMEOUT)
