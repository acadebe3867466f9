"""What hostile peers can take, measured: an agent serving TCP, and a host talking to a TCP agent.

``agent`` (the default): each scenario starts ``examples/moving_avg.py --socket
tcp://127.0.0.1:0`` from ``--root`` (default: this checkout; pass a checkout of
another revision to measure it, e.g. main before the limits), plays hostile
peers against it, and reads the agent's threads, file descriptors and RSS from
``/proc/PID``. With every hostile peer still connected, a well-behaved host
(``udf.Socket``) runs info, init and 100 points, and its time is shown.

``host``: a hostile agent (a TCP server in this process) against ``udf.Socket``
in a child process; the child's RSS after the agent sent what no one consumes
(big points), and after an open batch that never ends.

    python bench/hostile_peers.py [agent] [--root DIR] [--agent-args "..."] [--only NAME ...]
    python bench/hostile_peers.py host

Prints a table; figures depend on the machine and its load (docs/security.md
quotes them from one run).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MiB = 2**20
#: Seconds a scenario waits for the agent to settle (log lines), at most.
SETTLE = 60.0


def proc_figures(pid: int) -> dict[str, int]:
    """Threads, open descriptors, RSS and peak RSS (bytes) of a process, from /proc."""
    figures = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == "Threads":
                figures["threads"] = int(value)
            elif key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0]) * 1024
    return figures


class Agent:
    """The example agent as a child process; its stderr lines are collected by a thread."""

    def __init__(self, root: str, extra: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=root)
        argv = [sys.executable, os.path.join(root, "examples", "moving_avg.py"), "--socket", "tcp://127.0.0.1:0"]
        self.proc = subprocess.Popen(argv + extra, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        match = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise SystemExit(f"the agent did not start: {line}{self.proc.stderr.read().decode()}")
        self.port = int(match.group(1))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._collect, name="hostile-stderr", daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_lines(self, predicate: Callable[[], bool], timeout: float = SETTLE) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def figures(self) -> dict[str, int]:
        return proc_figures(self.proc.pid)

    def baseline(self) -> dict[str, int]:
        """The figures once the accept thread runs (it starts just after the "listening" line)."""
        deadline = time.monotonic() + SETTLE
        while self.figures()["threads"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.figures()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SETTLE)


def good_host(port: int) -> str:
    """info, init, 100 points through udf.Socket: the seconds it took, or why it failed."""
    import udf

    begin = time.monotonic()
    try:
        with udf.Socket(f"tcp://127.0.0.1:{port}", connect_timeout=10, timeout=10) as host:
            host.info()
            host.init({"field": "v", "size": 2})
            for i in range(100):
                host.point_in.put(udf.Point(name="m", group="g", fields={"v": float(i)}, time=i))
            for _ in range(99):
                host.point_out.get(timeout=10)
    except udf.UDFError as exc:
        return f"failed: {exc}"
    return f"{time.monotonic() - begin:.2f}"


def closed_by_agent(socks: list[socket.socket]) -> list[socket.socket]:
    """Those of ``socks`` the agent has closed or ended its output on (EOF or reset), without waiting."""
    closed = []
    for sock in socks:
        sock.setblocking(False)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    closed.append(sock)
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed.append(sock)
    return closed


def settled(agent: Agent, n: int) -> Callable[[], bool]:
    """True once ``n`` connections were served, refused or closed by the agent (by its log)."""
    return lambda: agent.count(r"serving connection|refused connection") >= n


def send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the agent closed it: counted as closed


# --- scenarios: each returns its hostile sockets ---------------------------------------------------


def idle(agent: Agent, n: int = 200) -> list[socket.socket]:
    socks = [connect(agent.port) for _ in range(n)]
    agent.wait_lines(settled(agent, n))
    return socks


def random_bytes(agent: Agent, n: int = 20) -> list[socket.socket]:
    rng = random.Random(21)
    socks = []
    for _ in range(n):
        sock = connect(agent.port)
        send_all(sock, bytes(rng.getrandbits(8) for _ in range(4096)))
        socks.append(sock)
    agent.wait_lines(lambda: agent.count(r"serving connection|refused connection") >= n)
    agent.wait_lines(lambda: agent.count(r"E! ") + agent.count(r"closed connection") >= n, 10)
    return socks


def huge_prefix(agent: Agent) -> list[socket.socket]:
    sock = connect(agent.port)
    send_all(sock, b"\x80\x80\x80\x80\x10")  # 4 GiB announced
    agent.wait_lines(lambda: agent.count(r"E! |closed connection") >= 1, 10)
    return [sock]


def partial_frames(agent: Agent, n: int, size: int = 40 * MiB) -> list[socket.socket]:
    """``n`` peers each announce a ``size`` frame and send all of it but its last byte."""
    from udf.wire import encode_uvarint

    body = encode_uvarint(size) + bytes(size - 1)
    socks = [connect(agent.port) for _ in range(n)]
    senders = [threading.Thread(target=send_all, args=(sock, body), name="hostile-sender") for sock in socks]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    time.sleep(1.0)  # measurement only: the agent takes in what was sent
    return socks


SCENARIOS: dict[str, Callable[[Agent], list[socket.socket]]] = {
    "200 idle connections": idle,
    "20 connections of random bytes": random_bytes,
    "a 4 GiB length prefix": huge_prefix,
    "a 40 MiB partial frame": lambda agent: partial_frames(agent, 1),
    "20 peers, 40 MiB partial frames": lambda agent: partial_frames(agent, 20),
}


def run_agent(args: argparse.Namespace) -> None:
    extra = shlex.split(args.agent_args)
    print(f"agent: {args.root}/examples/moving_avg.py {' '.join(extra)}")
    header = ("scenario", "threads", "fds", "RSS MiB", "peak MiB", "ended by the agent", "good host (s)")
    rows: list[tuple[Any, ...]] = []
    for name, scenario in SCENARIOS.items():
        if args.only and not any(word in name for word in args.only):
            continue
        agent = Agent(args.root, extra)
        try:
            base = agent.baseline()
            rows.append(
                (
                    f"(baseline for: {name})",
                    base["threads"],
                    base["fds"],
                    base["VmRSS"] / MiB,
                    base["VmHWM"] / MiB,
                    "",
                    "",
                )
            )
            socks = scenario(agent)
            during = agent.figures()
            served = good_host(agent.port)
            closed = set(closed_by_agent(socks))
            rows.append(
                (
                    name,
                    during["threads"],
                    during["fds"],
                    during["VmRSS"] / MiB,
                    during["VmHWM"] / MiB,
                    f"{len(closed)}/{len(socks)}",
                    served,
                )
            )
            if args.wait_after:
                time.sleep(args.wait_after)  # measurement only: past the agent's first-request timeout
                later = agent.figures()
                closed.update(closed_by_agent([sock for sock in socks if sock not in closed]))
                rows.append(
                    (
                        f"  {args.wait_after:g} s later",
                        later["threads"],
                        later["fds"],
                        later["VmRSS"] / MiB,
                        later["VmHWM"] / MiB,
                        f"{len(closed)}/{len(socks)}",
                        good_host(agent.port),
                    )
                )
            for sock in socks:
                sock.close()
        finally:
            agent.stop()
    print_table(header, rows)


# --- the host side -----------------------------------------------------------------------------------


HOST_CHILD = r"""
import sys, time, udf
port, what, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
base = rss()
u = udf.Socket(f"tcp://127.0.0.1:{port}", connect_timeout=10)
u.open()
u.info()
u.init({})
u.point_in.put(udf.Point(name="go", time=1))  # the hostile agent's cue
deadline = time.monotonic() + 60
last, still = -1, 0
while time.monotonic() < deadline and still < 20:  # until RSS stops growing for 2 s
    time.sleep(0.1)
    now = rss()
    still = still + 1 if now == last else 0
    last = now
print(base, rss(), u.point_out.qsize(), type(u.error).__name__ if u.error else "-", flush=True)
u.kill()
"""


def hostile_agent(listener: socket.socket, what: str, count: int, size: int) -> None:
    """Answer info and init, then at the first point flood the host with what ``what`` says."""
    import agent_pb2
    from udf.wire import FrameDecoder, encode_frame

    conn, _ = listener.accept()
    decoder = FrameDecoder()
    edge = agent_pb2.BATCH if what.startswith("open batch") else agent_pb2.STREAM
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for payload in decoder.feed(data):
                request = agent_pb2.Request.FromString(payload)
                kind = request.WhichOneof("message")
                if kind == "info":
                    response = agent_pb2.Response(info=agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=edge))
                elif kind == "init":
                    response = agent_pb2.Response(init=agent_pb2.InitResponse(success=True))
                elif kind == "point":
                    flood(conn, what, count, size)
                    continue
                else:
                    continue
                conn.sendall(encode_frame(response.SerializeToString()))


def flood(conn: socket.socket, what: str, count: int, size: int) -> None:
    import agent_pb2
    from udf.wire import encode_frame

    try:
        if what.startswith("open batch"):
            conn.sendall(encode_frame(agent_pb2.Response(begin=agent_pb2.BeginBatch(name="b")).SerializeToString()))
        point = agent_pb2.Point(name="p", fieldsString={"s": "x" * size})
        frame = encode_frame(agent_pb2.Response(point=point).SerializeToString())
        for _ in range(count):
            conn.sendall(frame)
    except OSError:
        pass


def run_host(args: argparse.Namespace) -> None:
    header = ("hostile agent sends", "items", "host RSS before MiB", "after MiB", "queued in point_out", "host's error")
    rows: list[tuple[Any, ...]] = []
    cases = [
        ("big points, no consumer", 4000, 256 * 1024),
        ("open batch, never ended", 1_000_000, 8),  # 20 MB of frames: under max_batch_bytes
        ("open batch, never ended", 4_000_000, 8),  # 80 MB of frames: past max_batch_bytes (64 MiB)
    ]
    for what, count, size in cases:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        agent = threading.Thread(target=hostile_agent, args=(listener, what, count, size), name="hostile-agent")
        agent.start()
        env = dict(os.environ, PYTHONPATH=ROOT)
        out = subprocess.run(
            [sys.executable, "-c", HOST_CHILD, str(port), what, str(count)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        agent.join(60)
        listener.close()
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        fields = out.stdout.split()
        base, after, queued = (int(v) for v in fields[:3])
        item = f"{count} x {size // 1024} KiB points" if size >= 1024 else f"BeginBatch + {count} points"
        rows.append((what, item, base / MiB, after / MiB, queued, fields[3]))
    print_table(header, rows)


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    def cell(value: Any) -> str:
        return f"{value:.0f}" if isinstance(value, float) else str(value)

    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", nargs="?", choices=["agent", "host"], default="agent")
    parser.add_argument("--root", default=ROOT, help="the checkout whose agent is measured (default: this one)")
    parser.add_argument("--agent-args", default="", help="extra flags for the agent, e.g. '--first-request-timeout 2'")
    parser.add_argument("--wait-after", type=float, default=0.0, help="measure again this many seconds later")
    parser.add_argument("--only", nargs="*", help="run the scenarios whose names contain these words")
    args = parser.parse_args(argv)
    if args.side == "host":
        run_host(args)
    else:
        run_agent(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
