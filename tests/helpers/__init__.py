"""What the tests share: the one TIMEOUT, the repository's paths, bounded joins and threads.

Fixtures are in tests/conftest.py; the fake agent on real pipes is
:mod:`tests.helpers.fake_agent`, the Supervisor's test helpers
:mod:`tests.helpers.supervision`. Test modules import from here, never from
each other.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import agent_pb2

#: The repository's root (tests locate files from it, never from their own folder).
ROOT = Path(__file__).resolve().parents[2]
#: The test agent programs (tests/agents/*.py).
AGENTS = ROOT / "tests" / "agents"
#: The example UDFs (examples/*.py) and their data.
EXAMPLES = ROOT / "examples"

#: The one timeout of the suite: long enough to trip only on a real hang.
TIMEOUT = 10.0

#: Threads whose names start with these belong to us and must not outlive a test.
OUR_THREADS = ("udf-", "fake-agent-")


def _negative_zero_survives_a_map() -> bool:
    """Whether this protobuf keeps -0.0 in a map<string,double> through bytes.

    The pure-Python backend of older protobuf (4.22 at least) drops a -0.0 map
    value as if it were the default 0.0; tests of the sign depend on it.
    """
    msg = agent_pb2.Point()
    msg.fieldsDouble["z"] = -0.0
    value = agent_pb2.Point.FromString(msg.SerializeToString()).fieldsDouble.get("z", 0.0)
    return math.copysign(1.0, value) < 0


NEGATIVE_ZERO_SURVIVES = _negative_zero_survives_a_map()


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(OUR_THREADS)]


def join_threads(timeout: float = TIMEOUT) -> list[str]:
    """Wait up to ``timeout`` for our threads to end; return the names still alive."""
    for thread in our_threads():
        thread.join(timeout)
    return sorted(t.name for t in our_threads())


def run_main(args: Sequence[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """Run the CLI (udf.cli.main) in-process with byte stdin; return (exit code, stdout, stderr)."""
    from udf.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def buffered_stdout_env() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: a child's stdout buffered, as on most machines."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def end_process(proc: Any) -> None:
    """Kill a ``subprocess.Popen`` if it still runs, reap it, and close its pipes (a test's ``finally``)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(TIMEOUT)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def run_in_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Run ``fn(*args)`` in a named thread; return a joiner that waits at most TIMEOUT
    and returns its result or re-raises its exception."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=target, name="fake-agent-caller", daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} did not return"
        if "error" in result:
            raise result["error"]
        return result.get("value")

    return join


def put_all(inlet: Any, items: Sequence[Any], timeout: float = TIMEOUT) -> None:
    """Put each of ``items`` into ``inlet`` (a ``point_in``/``batch_in``), each put bounded by ``timeout``."""
    for item in items:
        inlet.put(item, timeout=timeout)


def exchange(put: Callable[[Any], Any], channel: Any, items: list[Any]) -> list[Any]:
    """Put ``items`` from a producer thread while taking as many from ``channel`` here.

    Tests that put data always consume concurrently: whether a run of puts
    fits before anyone reads depends on queue and pipe sizes, never to be relied on.
    """
    produced = run_in_thread(lambda: [put(item) for item in items])
    received = [channel.get(timeout=TIMEOUT) for _ in items]
    produced()
    return received


class Warnings(logging.Handler):
    """Collects the WARNINGs containing ``text``; ``wait(n)`` returns them once there are ``n``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.messages: list[str] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno == logging.WARNING and self.text in message:
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()  # wakes wait()

    def wait(self, n: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= n, TIMEOUT), f"warnings: {self.messages}"
            return list(self.messages)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition only observable by asking: checked every 10 ms."""
    deadline = time.monotonic() + TIMEOUT
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        pause.wait(0.01)


class WaitForLog(logging.Handler):
    """Sets ``event`` once a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()
