"""The CLI's session and messages: one close path, each error said once, --version, exit codes in --help.

Also ``python -m udf.agent MODULE:FACTORY``, the agent package's entry.
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import agent_pb2
import udf
from udf.channel import Channel
from udf.cli import EXIT_OK, EXIT_UDF_FAILED, CLIError, main
from udf.cli.session import Session
from udf.convert import Info
from udf.wire import read_message, write_message

from ..helpers import ROOT, TIMEOUT, run_main

PY = sys.executable

FAILING_AGENT = textwrap.dedent(
    """
    import os
    import sys
    import agent_pb2 as T
    from udf.agent import Handler, main

    class Failing(Handler):
        def info(self):
            return T.InfoResponse(wants=T.STREAM, provides=T.STREAM)

        def point(self, p):
            if "crash" in p.fieldsString:  # log the usual error line, then die before answering
                sys.stderr.write("E! udf.agent: error processing request of type point: about to crash\\n")
                sys.stderr.flush()
                os._exit(3)
            raise ValueError("boom at point")

    if __name__ == "__main__":
        sys.exit(main(Failing))
    """
)


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("failing") / "failing.py"
    path.write_text(FAILING_AGENT)
    return path


# --- each error once ------------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["default", "quiet"])
def test_an_agent_error_is_printed_once(failing: Path, quiet: list[str]) -> None:
    code, _, err = run_main(["run", *quiet, "--", PY, str(failing)], b"m v=1 1\n")
    assert code == EXIT_UDF_FAILED
    message = "error processing request of type point: boom at point"
    assert err.count(message) == 1, err  # the agent's log line and the host's are not repeated
    assert f"udf: error: the UDF failed: {message}\n" in err


def test_a_held_error_line_is_shown_when_the_last_line_does_not_carry_it(failing: Path) -> None:
    code, _, err = run_main(["run", "--", PY, str(failing)], b'm crash="now" 1\n')
    assert code == EXIT_UDF_FAILED
    assert "E! udf.agent: error processing request of type point: about to crash\n" in err
    assert "udf: error: the UDF failed: process exited unexpectedly: exit status 3" in err


# --- --version and --help ---------------------------------------------------------------------


def test_version() -> None:
    result = subprocess.run([PY, "-m", "udf", "--version"], capture_output=True, timeout=TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"python -m udf {udf.__version__}\n"


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 ok, 1 the UDF failed, 2 usage, option or configuration error, 3 a bad input line," in text
    assert "130 interrupted (Ctrl-C), 141 stdout closed" in text


# --- the session's one close path ------------------------------------------------------------


class ScriptedUDF:
    """An Interface whose info() does what the test says; records open/abort/close."""

    def __init__(self, on_info: Any) -> None:
        self.on_info = on_info
        self.calls: list[str] = []
        self.point_out: Channel[Any] = Channel(1)
        self.batch_out: Channel[Any] = Channel(1)

    def open(self) -> None:
        self.calls.append("open")

    def info(self) -> Info:
        if isinstance(self.on_info, BaseException):
            raise self.on_info
        return Info(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM, options={})

    def abort(self, err: BaseException) -> None:
        self.calls.append(f"abort: {err}")

    def close(self) -> None:
        self.calls.append("close")


def session(udf_: ScriptedUDF) -> Session:
    args = argparse.Namespace(command="info", json=False)
    scripted: Any = udf_  # duck-typed Interface
    return Session(
        args,
        scripted,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        logger=logging.getLogger("test"),
        report=lambda message: None,
    )


def test_session_closes_once_after_success() -> None:
    scripted = ScriptedUDF(None)
    s = session(scripted)
    assert s.run() == EXIT_OK
    assert s.close() is None  # a second close is a no-op
    assert scripted.calls == ["open", "close"]


@pytest.mark.parametrize(
    "raised, expected, aborted_with",
    [
        (udf.AgentError("bad"), CLIError, "bad"),
        (KeyboardInterrupt(), KeyboardInterrupt, "interrupted: KeyboardInterrupt"),
        (CLIError("wrong option"), CLIError, "wrong option"),
    ],
    ids=["udf-error", "ctrl-c", "usage"],
)
def test_session_gives_up_by_aborting_then_closing_once(
    raised: BaseException, expected: Any, aborted_with: str
) -> None:
    scripted = ScriptedUDF(raised)
    with pytest.raises(expected):
        session(scripted).run()
    assert scripted.calls == ["open", f"abort: {aborted_with}", "close"]


def test_session_reports_the_exit_of_an_agent_that_closed_its_output() -> None:
    class Closing(ScriptedUDF):
        def close(self) -> None:
            super().close()
            raise udf.ProcessExitedError("process exited unexpectedly: exit status 4")

    scripted = Closing(udf.AgentClosedError())
    with pytest.raises(CLIError, match="the UDF failed: process exited unexpectedly: exit status 4") as info:
        session(scripted).run()
    assert info.value.code == EXIT_UDF_FAILED
    assert scripted.calls == ["open", "close"]  # not aborted: its exit says more


# --- python -m udf.agent ------------------------------------------------------------------------


def test_python_m_udf_agent_runs_a_handler_named_by_import_path() -> None:
    proc = subprocess.Popen(
        [PY, "-m", "udf.agent", "mirror:MirrorHandler"],
        cwd=ROOT / "examples",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        write_message(proc.stdin, agent_pb2.Request(info=agent_pb2.InfoRequest()))
        proc.stdin.flush()
        response = read_message(proc.stdout, agent_pb2.Response.FromString)
        assert response is not None and response.info.wants == agent_pb2.STREAM
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "usage: python -m udf.agent MODULE:FACTORY"),
        (["mirror"], "expected MODULE:FACTORY, got 'mirror'"),
        (["mirror:Nope"], "'mirror' has no callable 'Nope'"),
        (["nosuchmodule:X"], "cannot import 'nosuchmodule'"),
    ],
)
def test_python_m_udf_agent_usage_errors(args: list[str], message: str) -> None:
    result = subprocess.run(
        [PY, "-m", "udf.agent", *args],
        capture_output=True,
        timeout=TIMEOUT,
        cwd=ROOT / "examples",
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
