"""udf.server.ending: the one decision taken from the pieces of an agent's end (pure, no threads),
and the server that publishes nothing before it (real pipes)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Point
from udf.errors import ChannelClosed, ProtocolError, WriteError
from udf.server.callbacks import AbortCallbacks
from udf.server.ending import ABORT, CLEAN, NOTHING, WAIT, EndPieces, decide
from udf.wire import encode_frame

from ..helpers import TIMEOUT, run_in_thread

WRITE = WriteError("broken pipe")
CUT = ProtocolError("unexpected EOF inside a frame: 2 bytes missing of 4")
DEATH = udf.ProcessExitedError("process exited unexpectedly: signal: killed")
EXIT_0 = udf.ProcessExitedError("process exited unexpectedly: exit status 0")


def pieces(
    *,
    input_failure: BaseException | None = None,
    output_failure: BaseException | None = None,
    output_ended: bool = False,
    cause: BaseException | None = None,
    fatal: bool = False,
) -> EndPieces:
    p = EndPieces()
    p.input_failure = input_failure
    p.first_failure = input_failure if input_failure is not None else output_failure
    p.output_ended = output_ended
    p.cause, p.fatal = cause, fatal
    return p


def outcome(p: EndPieces, *, expects: bool = True, stopping: bool = False, output_overdue: bool = False,
            cause_overdue: bool = False, unwritten: bool = False, input_overdue: bool = False) -> Any:  # fmt: skip
    return decide(
        p, expects_cause=expects, stopping=stopping, output_overdue=output_overdue,
        cause_overdue=cause_overdue, unwritten=unwritten, input_overdue=input_overdue,
    )  # fmt: skip


# --- decide(): the table of docs/api.md, row by row --------------------------------------


def test_nothing_to_decide_while_the_conversation_goes_on() -> None:
    assert outcome(pieces()) == (NOTHING, None)
    assert outcome(pieces(cause=EXIT_0)) == (NOTHING, None)  # an exit 0 before the output's end: wait for it
    assert outcome(pieces(cause=DEATH, fatal=True), stopping=True) == (NOTHING, None)


def test_a_failed_write_waits_for_the_output_then_for_the_cause() -> None:
    p = pieces(input_failure=WRITE)
    assert outcome(p) == (WAIT, None)  # what the agent wrote before its end comes first
    assert outcome(p, output_overdue=True) == (WAIT, None)  # then its owner's word
    assert outcome(p, output_overdue=True, cause_overdue=True) == (ABORT, WRITE)  # no word in time
    assert outcome(p, expects=False, output_overdue=True) == (ABORT, WRITE)  # none expected


def test_a_death_is_the_cause_of_every_failure() -> None:
    for failure in (dict(input_failure=WRITE), dict(output_failure=CUT)):
        p = pieces(output_ended=True, cause=DEATH, fatal=True, **failure)
        assert outcome(p) == (ABORT, DEATH)
        assert outcome(p, stopping=True) == (ABORT, DEATH)


def test_a_death_while_running_is_an_error_in_itself_once_the_output_ended() -> None:
    p = pieces(cause=DEATH, fatal=True)
    assert outcome(p) == (WAIT, None)  # deliver what it wrote before dying
    assert outcome(p, output_overdue=True) == (ABORT, DEATH)
    p.output_ended = True
    assert outcome(p) == (ABORT, DEATH)
    assert outcome(p, stopping=True) == (CLEAN, None)  # while stopping, its owner reports it


def test_an_exit_0_explains_lost_input_but_not_a_frame_cut_short() -> None:
    assert outcome(pieces(input_failure=WRITE, output_ended=True, cause=EXIT_0)) == (ABORT, EXIT_0)
    assert outcome(pieces(output_ended=True, cause=EXIT_0), unwritten=True) == (ABORT, EXIT_0)
    assert outcome(pieces(output_failure=CUT, output_ended=True, cause=EXIT_0)) == (ABORT, CUT)
    assert outcome(pieces(output_ended=True, cause=EXIT_0)) == (CLEAN, None)


def test_an_output_that_ends_while_input_is_being_written_waits_for_the_writer() -> None:
    p = pieces(output_ended=True)
    assert outcome(p, expects=False, unwritten=True) == (WAIT, None)  # a socket peer gone mid-send
    p.input_failure = p.first_failure = WRITE
    assert outcome(p, expects=False, unwritten=False) == (ABORT, WRITE)  # the write failed: that ended it
    p = pieces(output_ended=True)
    assert outcome(p, expects=False, unwritten=True, input_overdue=True) == (CLEAN, None)  # it took it after all


def test_a_clean_end_waits_for_the_cause_when_one_is_expected() -> None:
    p = pieces(output_ended=True)
    assert outcome(p) == (WAIT, None)
    assert outcome(p, cause_overdue=True) == (CLEAN, None)
    assert outcome(p, expects=False) == (CLEAN, None)
    assert outcome(pieces(output_failure=CUT, output_ended=True), expects=False) == (ABORT, CUT)


# --- the abort callbacks -------------------------------------------------------------------


def test_callbacks_run_once_and_late_listeners_at_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    calls: list[Any] = []
    callbacks = AbortCallbacks(lambda: calls.append("callback"), logging.getLogger("udf"))
    callbacks.add(lambda err: calls.append(("listener", err)))
    callbacks.add(lambda err: 1 / 0)  # logged, never raised
    first, second = udf.UDFError("first"), udf.UDFError("second")
    callbacks.fire(first, inline=True)
    callbacks.fire(second, inline=True)
    callbacks.add(lambda err: calls.append(("late", err)))
    assert calls == ["callback", ("listener", first), ("late", first)]
    assert any(r.getMessage() == "abort listener failed" for r in caplog.records)
    assert callbacks.thread is None


def test_callbacks_fired_inside_run_in_their_own_thread() -> None:
    import logging

    ran = threading.Event()
    names: list[str] = []

    def callback() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    callbacks = AbortCallbacks(callback, logging.getLogger("udf"))
    callbacks.fire(udf.UDFError("x"), inline=False)
    assert ran.wait(TIMEOUT)
    callbacks.wait()
    assert names == ["udf-abort-callbacks"]


# --- the server publishes nothing before the decision --------------------------------------


class DeadReader:
    """An agent whose input nobody reads (every write fails: EPIPE) and whose output we hold."""

    def __init__(self) -> None:
        request_r, request_w = os.pipe()
        response_r, self.response_w = os.pipe()
        os.close(request_r)
        self.host_reader = open(response_r, "rb", buffering=0)
        self.host_writer = open(request_w, "wb", buffering=0)

    def say(self, response: Any) -> None:
        os.write(self.response_w, encode_frame(response.SerializeToString()))

    def end_output(self) -> None:
        os.close(self.response_w)
        self.response_w = -1

    def close(self) -> None:
        if self.response_w >= 0:
            os.close(self.response_w)
        for f in (self.host_reader, self.host_writer):
            with contextlib.suppress(OSError):
                f.close()


@pytest.fixture
def dead() -> Iterator[DeadReader]:
    agent = DeadReader()
    yield agent
    agent.close()


def test_a_failed_write_is_explained_by_the_owner_everywhere(dead: DeadReader) -> None:
    s = udf.Server(dead.host_reader, dead.host_writer, cause_grace=TIMEOUT)
    s.start()
    dead.say(agent_pb2.Response(point=agent_pb2.Point(name="before")))
    s.point_in.put(Point(name="x"))  # accepted; its write fails
    assert s.point_out.get(timeout=TIMEOUT).name == "before"  # what came before is delivered
    dead.end_output()
    asking = run_in_thread(s.info)  # waits for the decision instead of writing
    assert s.error is None  # nothing published before the owner's word
    s.explain_end(EXIT_0)
    with pytest.raises(udf.ProcessExitedError) as request:
        asking()
    assert request.value is EXIT_0 and s.error is EXIT_0
    with pytest.raises(ChannelClosed) as put:
        s.point_in.put(Point(name="late"))
    assert put.value.__cause__ is EXIT_0
    with pytest.raises(ChannelClosed) as got:
        s.point_out.get(timeout=TIMEOUT)
    assert got.value.__cause__ is EXIT_0
    with pytest.raises(udf.ProcessExitedError) as stopped:
        s.stop()
    assert stopped.value is EXIT_0


def test_without_an_owner_the_write_error_is_the_one_cause(dead: DeadReader) -> None:
    s = udf.Server(dead.host_reader, dead.host_writer)  # cause_grace=0: nobody will explain
    s.start()
    s.point_in.put(Point(name="x"))
    dead.end_output()
    with pytest.raises(ChannelClosed) as got:
        s.point_out.get(timeout=TIMEOUT)
    err = s.error
    assert isinstance(err, WriteError) and str(err) == "write error: broken pipe"
    assert got.value.__cause__ is err
    with pytest.raises(WriteError) as stopped:
        s.stop()
    assert stopped.value is err


def test_illegal_server_transitions_are_refused_by_the_table() -> None:
    from udf.lifecycle import IllegalTransition, Lifecycle
    from udf.server.state import SERVER_TABLE, ServerEvent, ServerState

    life = Lifecycle(SERVER_TABLE, ServerState.RUNNING)
    with pytest.raises(IllegalTransition, match="udf.Server: no transition for event 'io ended' in state 'running'"):
        life.fire(ServerEvent.IO_ENDED)  # the writer runs until stop() or abort()
    assert life.fire(ServerEvent.STOP) is ServerState.STOPPING
    assert life.fire(ServerEvent.IO_ENDED) is ServerState.STOPPED
    assert not life.allows(ServerEvent.START)
