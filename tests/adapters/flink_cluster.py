"""A standalone Flink cluster from PyFlink's own ``bin/``, for the tests and bench/flink_scale.py.

``FlinkCluster(workdir, taskmanagers=2, slots=2)`` writes a configuration
folder (a copy of PyFlink's ``conf/`` with the ``config.yaml`` that
docs/flink.md writes, but on free ports), then ``start()`` runs
``bin/jobmanager.sh start`` and ``bin/taskmanager.sh start`` once per
TaskManager, exactly as docs/flink.md does, and waits on the REST API until
every slot is registered. ``stop()`` runs ``taskmanager.sh stop-all`` and
``jobmanager.sh stop``, then ends every process the cluster started that is
still running (a killed TaskManager's Python workers and their agents are
orphans no script stops): every one carries ``UDF_FLINK_CLUSTER=<workdir>`` in
its environment, inherited from the JVMs started here, and is found by a scan
of ``/proc``. Logs stay in ``<workdir>/log``.

Needs PyFlink (``.venv-flink``) and Java.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..helpers import ROOT

#: Seconds a cluster may take to start, a job to be accepted, processes to end.
STARTUP_TIMEOUT = 120.0
MARKER = "UDF_FLINK_CLUSTER"


#: This process's environment before any PyFlink job ran in it (see clean_environ).
_ENVIRON_AT_START = dict(os.environ)


def clean_environ() -> dict[str, str]:
    """This process's environment as it was before PyFlink changed it.

    A local job runs its Python workers in the client process ("loopback"
    mode), and PyFlink copies each worker's whole environment into
    ``os.environ``: ``PYTHON_LOOPBACK_SERVER_ADDRESS``, ``PYFLINK_GATEWAY_DISABLED``,
    ``FLINK_CONF_DIR``... A Flink command or a job started with those would send
    its Python workers back to this process, refuse to start its gateway, or read
    the wrong configuration. So commands get the environment this module saw
    when first imported (before any job), without PyFlink's own variables.
    """
    return {
        k: v
        for k, v in _ENVIRON_AT_START.items()
        if not k.startswith(("FLINK_", "PYFLINK_", "_PYFLINK_", "PYTHON_LOOPBACK"))
    }


def flink_home() -> Path:
    """The Flink distribution inside the installed PyFlink package."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port: int = s.getsockname()[1]
        return port


def java_options_line() -> str:
    """The JVM options of PyFlink's own config.yaml (Java 17 needs its --add-opens), as a flat key."""
    for line in (flink_home() / "conf" / "config.yaml").read_text().splitlines():
        if line.strip().startswith("all: "):
            return "env.java.opts.all: " + line.split("all: ", 1)[1].strip()
    raise LookupError("no env.java.opts.all in PyFlink's config.yaml")


def config_yaml(work: str, python: str, slots: int = 2, rest_port: int = 8081, rpc_port: int = 6123) -> str:
    """The settings docs/flink.md writes into config.yaml after the JVM options (tests/adapters/test_flink_extra.py
    checks that the two are the same text): ``work`` the cluster's folder, ``python`` the workers' Python."""
    return f"""\
env.log.dir: {work}/log
env.pid.dir: {work}
io.tmp.dirs: {work}/tmp
jobmanager.rpc.address: localhost
jobmanager.bind-host: localhost
jobmanager.rpc.port: {rpc_port}
jobmanager.memory.process.size: 1024m
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: {slots}
taskmanager.memory.process.size: 1024m
taskmanager.memory.managed.fraction: 0.2
rest.address: localhost
rest.bind-address: localhost
rest.port: {rest_port}
parallelism.default: 2
execution.checkpointing.interval: 1s
restart-strategy.type: fixed-delay
restart-strategy.fixed-delay.attempts: 3
restart-strategy.fixed-delay.delay: 1s
heartbeat.interval: 1000
heartbeat.timeout: 20000
python.executable: {python}
python.client.executable: {python}
python.fn-execution.bundle.size: 1000
"""


def marked_pids(value: str) -> list[int]:
    """Processes of this user whose environment holds ``UDF_FLINK_CLUSTER=<value>``."""
    entry = f"{MARKER}={value}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or not ours
            continue
    return found


def parent_of(pid: int) -> int:
    """The parent of ``pid`` (-1 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" once it is gone, or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ancestors(pid: int) -> list[int]:
    """The parent of ``pid``, its parent, ... up to init."""
    chain = []
    while pid > 1:
        pid = parent_of(pid)
        chain.append(pid)
    return chain


def end_marked(value: str, timeout: float = STARTUP_TIMEOUT) -> list[int]:
    """SIGKILL every process marked ``value`` until none is left; return the pids ended."""
    ended: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = marked_pids(value)
        if not pids:
            return ended
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the Flink cluster {value} survived SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.2)  # the kernel reaps them; nothing to wait on for processes not our children


class FlinkCluster:
    """A JobManager and ``taskmanagers`` TaskManagers of ``slots`` slots, configured in ``workdir``."""

    def __init__(self, workdir: Path, taskmanagers: int = 2, slots: int = 2, python: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.taskmanagers = taskmanagers
        self.slots = slots
        self.home = flink_home()
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.rest_port = free_port()
        self.python = python or sys.executable
        self.env = {
            **clean_environ(),
            "FLINK_HOME": str(self.home),
            "FLINK_CONF_DIR": str(self.conf_dir),
            MARKER: str(self.workdir),
        }

    @property
    def url(self) -> str:
        return f"http://localhost:{self.rest_port}"

    def write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        for item in (self.home / "conf").iterdir():
            shutil.copy(item, self.conf_dir / item.name)
        text = config_yaml(str(self.workdir), self.python, self.slots, self.rest_port, free_port())
        (self.conf_dir / "config.yaml").write_text(java_options_line() + "\n" + text)

    def bin(self, script: str, *args: str, timeout: float = STARTUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run ``$FLINK_HOME/bin/<script> args`` with the cluster's environment; raise if it fails."""
        done = subprocess.run(
            [str(self.home / "bin" / script), *args],
            cwd=ROOT,  # as docs/flink.md runs them: from the repository root
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"bin/{script} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def start(self) -> None:
        self.write_conf()
        self.bin("jobmanager.sh", "start")
        for _ in range(self.taskmanagers):
            self.bin("taskmanager.sh", "start")
        self.wait_for_slots(self.taskmanagers * self.slots)

    def start_taskmanager(self) -> None:
        """One more TaskManager (after one was killed)."""
        self.bin("taskmanager.sh", "start")

    def rest(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def wait_for(self, what: str, predicate: Any, timeout: float = STARTUP_TIMEOUT, poll: float = 0.2) -> Any:
        """Poll ``predicate()`` until it returns something true; return it (REST errors count as not yet)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except (urllib.error.URLError, ConnectionError, OSError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Flink cluster at {self.url}: {what} not within {timeout:.0f} s (logs: {self.log_dir})"
                )
            time.sleep(poll)  # polling a REST API: nothing to wait on

    def wait_for_slots(self, slots: int) -> None:
        self.wait_for(f"{slots} free task slots", lambda: self.rest("/overview")["slots-available"] >= slots)

    def taskmanager_pids(self) -> list[int]:
        """The TaskManager JVMs started by taskmanager.sh still running (from its pid file, in start order)."""
        pids = []
        for pid_file in self.workdir.glob("flink-*-taskexecutor.pid"):
            pids += [int(line) for line in pid_file.read_text().split()]
        return [pid for pid in pids if _alive(pid)]

    def taskmanager_pid(self, resource_id: str) -> int:
        """The pid of the TaskManager registered as ``resource_id`` (its log names it)."""
        for log in self.log_dir.glob("flink-*-taskexecutor-*.log"):
            text = log.read_text(errors="replace")
            if resource_id in text:
                index = int(log.name.split("-taskexecutor-")[1].split("-")[0])
                pid_file = next(self.workdir.glob("flink-*-taskexecutor.pid"))
                return int(pid_file.read_text().split()[index])
        raise LookupError(f"no TaskManager log names {resource_id} in {self.log_dir}")

    def flink(self, *args: str, timeout: float = STARTUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``bin/flink args`` (e.g. ``run -py job.py``); raise if it fails."""
        return self.bin("flink", *args, timeout=timeout)

    def job_ids(self) -> list[str]:
        return [job["jid"] for job in self.rest("/jobs/overview")["jobs"]]

    def job(self, job_id: str) -> dict[str, Any]:
        details: dict[str, Any] = self.rest(f"/jobs/{job_id}")
        return details

    def stop(self) -> list[int]:
        """Stop the daemons, then end whatever they left; return the pids that had to be killed."""
        for script, arg in (("taskmanager.sh", "stop-all"), ("jobmanager.sh", "stop")):
            try:
                self.bin(script, arg, timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"flink_cluster: {exc}", file=sys.stderr)
        return end_marked(str(self.workdir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
