"""A real agent process to play peers against: ``examples/moving_avg.py --socket tcp://127.0.0.1:0``.

Its stderr lines are gathered by a thread (tests wait on what it logs); its
threads, descriptors and RSS are read from ``/proc/PID``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import ROOT, TIMEOUT

MOVING_AVG = ROOT / "examples" / "moving_avg.py"
MiB = 2**20
PROC = Path("/proc")


def figures(pid: int) -> dict[str, int]:
    """The process's threads, open descriptors and RSS in bytes, from /proc."""
    out = {"fds": len(os.listdir(PROC / str(pid) / "fd"))}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Threads":
            out["threads"] = int(value)
        elif key == "VmRSS":
            out["rss"] = int(value.split()[0]) * 1024
    return out


class AgentProcess:
    """moving_avg.py serving tcp://127.0.0.1:0 with ``flags``; its stderr lines gathered by a thread."""

    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(MOVING_AVG), "--socket", "tcp://127.0.0.1:0", *flags],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        match = re.search(r"listening on (tcp://127\.0\.0\.1:(\d+))", line)
        assert match, line
        self.address, self.port = match.group(1), int(match.group(2))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._gather, name="fake-agent-stderr", daemon=True)
        self._reader.start()
        self.base = self.settled_figures()

    def _gather(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def matching(self, pattern: str) -> list[str]:
        with self._cond:
            return [line for line in self.lines if re.search(pattern, line)]

    def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        """The first ``count`` log lines matching ``pattern``, waiting at most TIMEOUT for them."""
        with self._cond:
            found = self._cond.wait_for(lambda: len(self.matching(pattern)) >= count, TIMEOUT * 3)
            lines = self.matching(pattern)
        assert found, f"waited for {count} lines like {pattern!r}; the agent logged: {self.lines}"
        return lines

    def settled_figures(self) -> dict[str, int]:
        """Figures once the accept thread runs (it starts just after "listening on")."""
        deadline = time.monotonic() + TIMEOUT
        while figures(self.proc.pid)["threads"] < 2:
            assert time.monotonic() < deadline, "the accept thread never started"
            time.sleep(0.01)  # polling /proc: no event tells us
        return figures(self.proc.pid)

    def figures(self) -> dict[str, int]:
        return figures(self.proc.pid)

    def holding(self, connections: int) -> dict[str, int]:
        """The figures once the agent holds exactly ``connections`` served connections' threads and sockets.

        A finished connection's last thread logs before it exits, so /proc is
        polled until it agrees (bounded: only a leak trips it).
        """
        want = {"threads": self.base["threads"] + 2 * connections, "fds": self.base["fds"] + connections}
        deadline = time.monotonic() + TIMEOUT
        while True:
            now = self.figures()
            if {k: now[k] for k in want} == want or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert {k: now[k] for k in want} == want, (now, want)
        return now

    def stop(self) -> str:
        """SIGTERM (a clean stop, exit 0); the whole log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(TIMEOUT)
        finally:
            self.proc.kill()  # no-op once it exited
            self.proc.wait(TIMEOUT)
            self._reader.join(TIMEOUT)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        assert code == 0, self.lines
        return "\n".join(self.lines)
