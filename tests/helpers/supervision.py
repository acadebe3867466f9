"""What the Supervisor's tests share: agent factories, restart and output recorders, a third-party Interface."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import udf
from udf import Point, RestartEvent, Supervisor
from udf.options import Options

from . import AGENTS, TIMEOUT

#: Fast restarts for tests: 10 ms, doubling, at most 100 ms.
BACKOFF = (0.01, 2.0, 0.1)


def agent_command(name: str, *args: str) -> tuple[str, list[str]]:
    """A test agent's command line: (python, [-u, tests/agents/NAME, *args])."""
    return sys.executable, ["-u", str(AGENTS / name), *args]


class Factory:
    """Builds udf.Process agents of one command line, remembering each."""

    def __init__(self, prog: str, args: Sequence[str], **kwargs: Any) -> None:
        self.prog, self.args, self.kwargs = prog, list(args), kwargs
        self.made: list[udf.Process] = []

    def __call__(self) -> udf.Process:
        proc = udf.Process(self.prog, self.args, **self.kwargs)
        self.made.append(proc)
        return proc

    def kill_current(self, signum: int = signal.SIGKILL) -> None:
        pid = self.made[-1].pid
        assert pid is not None
        os.kill(pid, signum)


class Restarts:
    """on_restart: keeps the events and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.events: list[RestartEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: RestartEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= n, TIMEOUT), (
                f"restart {n} did not happen: {self.events}"
            )


class Consumer:
    """Drains a supervisor's point_out (or batch_out) in a thread until it closes."""

    def __init__(self, channel: udf.Channel[Any]) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()
        self._channel = channel
        self._thread = threading.Thread(target=self._run, name="test-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for item in self._channel:
            with self._cond:
                self.items.append(item)
                self._cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, TIMEOUT), f"only {len(self.items)} of {n} outputs"

    def join(self) -> list[Any]:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the output channel did not close"
        return self.items


def point(i: int, name: str = "cpu", **tags: str) -> Point:
    return Point(name=name, time=i, tags=dict(tags), fields={"v": float(i)})


def supervisor(factory: Callable[[], udf.Interface], **kwargs: Any) -> Supervisor:
    kwargs.setdefault("options", [])
    kwargs.setdefault("backoff", BACKOFF)
    return Supervisor(factory, **kwargs)


class PlainInterface(udf.Interface):
    """A third-party transport: the abstract Interface, each member delegated to a Process it wraps."""

    class _Inlet:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            self._inner.put(item, block, timeout)

        def put_encoded(self, frame: bytes, block: bool = True, timeout: float | None = None) -> None:
            self._inner.put_encoded(frame, block, timeout)

    @property
    def error(self) -> BaseException | None:
        return self.proc.error

    def kill(self) -> None:
        self.proc.kill()

    def add_abort_callback(self, callback: Any) -> None:
        self.proc.add_abort_callback(callback)

    def snapshot_with_position(self) -> tuple[bytes, int]:
        return self.proc.snapshot_with_position()

    def __init__(self, proc: udf.Process) -> None:
        self.proc = proc

    def open(self) -> None:
        self.proc.open()

    def close(self, timeout: float | None = None, *, discard_output: bool = False) -> None:
        self.proc.close(timeout, discard_output=discard_output)

    def info(self) -> udf.Info:
        return self.proc.info()

    def init(self, options: Options) -> None:
        self.proc.init(options)

    def abort(self, err: BaseException) -> None:
        self.proc.abort(err)

    def snapshot(self) -> bytes:
        return self.proc.snapshot()

    def restore(self, snapshot: bytes) -> None:
        self.proc.restore(snapshot)

    @property
    def point_in(self) -> Any:
        return self._Inlet(self.proc.point_in)

    @property
    def batch_in(self) -> Any:
        return self._Inlet(self.proc.batch_in)

    @property
    def point_out(self) -> udf.Channel[Point]:
        return self.proc.point_out

    @property
    def batch_out(self) -> udf.Channel[udf.Batch]:
        return self.proc.batch_out
