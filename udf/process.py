"""Run a UDF agent as a child process and talk to it over its stdin/stdout (Go: ``udf.Process``).

The child starts in its own process group (a new session), so that signals sent
while closing reach whatever it started too, and a Ctrl-C meant for the host is
not also delivered to the agent behind the host's back. Besides the
:class:`~udf.server.Server` on the child's pipes, a :class:`Process` runs two
helper threads:

* ``udf-stderr`` drains the child's stderr and logs each line; a Kapacitor level
  prefix (``E!``, ``W!``, ``I!``, ``D!``) picks the level and is stripped, other
  lines log at INFO. The last :data:`STDERR_TAIL` lines are kept for error messages.
* ``udf-process-waiter`` reaps the child and tells the server how it ended
  (:meth:`~udf.server.Server.explain_end`), without waiting for the server: a
  :class:`~udf.errors.ProcessExitedError` that is the error of every call once
  the child died (a non-zero status or a signal while open), or that explains a
  failed write (an exit 0 while input was still being sent). The server never
  calls back into the process.

:meth:`Process.close` stops the server (queued data is written, the child's stdin
closed and its stdout read to the end) and reaps the child. Its watcher
(:mod:`udf.closing`) escalates only when the agent stops making progress -- no
output from it, no input taken, and our reader not waiting on a slow consumer --
for ``kill_grace`` seconds: SIGTERM to its process group, then SIGKILL.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .closing import Stall
from .errors import ProcessExitedError, UDFError
from .server import OUT_CHANNEL_SIZE, OUTBOX_SIZE, Server
from .transport import ServerBacked
from .wire import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FRAME_SIZE

__all__ = ["Process", "describe_exit_status", "STDERR_TAIL", "STDERR_LINE_LIMIT"]

#: Stderr lines kept for the error raised when the process dies.
STDERR_TAIL = 20
#: Bytes of one stderr line that are logged; the rest is counted and dropped.
STDERR_LINE_LIMIT = 4096
#: Bytes asked of the child's stderr per read.
STDERR_CHUNK = 64 * 1024
#: How long the waiter waits, after the child exited, for its stderr to end (its
#: last lines go into the error); bounded, because a grandchild may hold the pipe.
EXIT_GRACE = 5.0
#: How long the server waits, after the child's output ended (or a write to it
#: failed), for the waiter's word on its exit before its own view stands.
CAUSE_GRACE = 2 * EXIT_GRACE
#: Default ``kill_grace``: seconds without progress, while closing, before SIGTERM,
#: and again before SIGKILL.
DEFAULT_KILL_GRACE = 5.0

_LEVEL_PREFIXES = {"E!": logging.ERROR, "W!": logging.WARNING, "I!": logging.INFO, "D!": logging.DEBUG}

# Go's names for signals (its ``syscall`` signal table), used in "signal: NAME".
_GO_SIGNAL_NAMES = {
    "SIGHUP": "hangup",
    "SIGINT": "interrupt",
    "SIGQUIT": "quit",
    "SIGILL": "illegal instruction",
    "SIGTRAP": "trace/breakpoint trap",
    "SIGABRT": "aborted",
    "SIGBUS": "bus error",
    "SIGFPE": "floating point exception",
    "SIGKILL": "killed",
    "SIGUSR1": "user defined signal 1",
    "SIGSEGV": "segmentation fault",
    "SIGUSR2": "user defined signal 2",
    "SIGPIPE": "broken pipe",
    "SIGALRM": "alarm clock",
    "SIGTERM": "terminated",
}
_SIGNAL_NAMES: dict[int, str] = {
    int(getattr(signal, name)): text for name, text in _GO_SIGNAL_NAMES.items() if hasattr(signal, name)
}


def describe_exit_status(returncode: int) -> str:
    """Go's wording for a process state: ``"exit status 3"`` or ``"signal: killed"``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    name = _SIGNAL_NAMES.get(signum)
    if name is None:
        text = signal.strsignal(signum) if hasattr(signal, "strsignal") else None
        name = text[0].lower() + text[1:] if text else f"signal {signum}"
    return f"signal: {name}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Process(ServerBacked):
    """A UDF agent run as a child process, spoken to over its stdin and stdout.

    ``prog`` and ``args`` form the command line (no shell). ``env=None`` inherits
    this process's environment; a mapping is the child's whole environment.
    ``timeout`` is the keepalive timeout (seconds or ``timedelta``; ``<= 0``
    disables keepalives); ``abort_callback`` runs once if the server aborts.
    ``kill_grace`` is how long :meth:`close` lets the child go without progress
    (no output, no input taken, nothing waiting on our consumer) before sending
    SIGTERM to its process group, and again before SIGKILL: a slow but working
    agent, or a slow consumer of its output, is never killed. ``in_queue_size``
    and ``out_queue_size`` size the server's queues (see :class:`udf.Server`).
    """

    _what = "process"

    def __init__(
        self,
        prog: str | os.PathLike[str],
        args: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        timeout: float | datetime.timedelta = 0.0,
        abort_callback: Callable[[], Any] | None = None,
        *,
        kill_grace: float = DEFAULT_KILL_GRACE,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        in_queue_size: int = OUTBOX_SIZE,
        out_queue_size: int = OUT_CHANNEL_SIZE,
    ) -> None:
        if isinstance(args, (str, bytes)):
            raise TypeError("args must be a sequence of arguments, not a single string")
        if kill_grace < 0:
            raise ValueError(f"kill_grace must not be negative, got {kill_grace}")
        self._argv: list[str] = [os.fspath(prog), *(os.fspath(a) for a in args)]
        self._env: dict[str, str] | None = dict(env) if env is not None else None
        self._kill_grace = float(kill_grace)

        super().__init__(
            logger, timeout, abort_callback, max_frame_size, in_queue_size, out_queue_size, max_batch_bytes
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

        self._exited = threading.Event()  # set by the waiter once the child is reaped
        self._stderr_done = threading.Event()  # set by the stderr thread at EOF

        self._tail_lock = threading.Lock()
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._exit_lock = threading.Lock()
        self._exit_error: ProcessExitedError | None = None
        self._exit_signals: list[str] = []  # the escalation steps _exit_error names

    # --- information ------------------------------------------------------------

    @property
    def args(self) -> list[str]:
        """The command line: ``[prog, *args]``."""
        return list(self._argv)

    @property
    def pid(self) -> int | None:
        """The child's process id, once opened."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once reaped (negative: killed by that signal)."""
        return self._proc.returncode if self._proc is not None and self._exited.is_set() else None

    @property
    def stderr_tail(self) -> list[str]:
        """The last lines the child wrote to stderr (at most :data:`STDERR_TAIL`)."""
        with self._tail_lock:
            return list(self._tail)

    # --- lifecycle ----------------------------------------------------------------

    def _start_agent(self) -> Server:
        """open(): start the program in its own process group, with a server on its pipes."""
        try:
            proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            raise UDFError(f"failed to start process {self._argv[0]!r}: {exc}") from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            server = self._new_server(proc.stdout, proc.stdin, cause_grace=CAUSE_GRACE)
        except BaseException:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
            raise
        self._proc = proc
        self._threads = [
            threading.Thread(target=self._drain_stderr, name="udf-stderr", daemon=True),
            threading.Thread(target=self._wait_for_exit, name="udf-process-waiter", daemon=True),
        ]
        return server

    def _after_start(self) -> None:
        # After server.start(): the waiter may report the exit at once.
        for thread in self._threads:
            thread.start()

    def _helper_threads(self) -> list[threading.Thread]:
        return self._threads

    def _grace(self) -> float:
        return self._kill_grace

    def _finish_events(self) -> list[threading.Event]:
        return [self._exited]

    def _exit_wait(self) -> str:
        return f"process {self.pid} to exit"

    def _escalate(self, step: int, grace: float, stall: Stall) -> bool:
        """close()'s escalation: SIGTERM, then SIGKILL, to the group; then only say that it is still stuck."""
        proc = self._proc
        assert proc is not None
        if step >= 2:
            self._logger.error(
                "process %d: its output is still open %gs after SIGKILL (held by a process outside its group?)",
                proc.pid,
                grace,
            )
            return False
        signum = (signal.SIGTERM, signal.SIGKILL)[step]
        reason = self._stuck_reason(grace, stall)
        name = _signal_name(signum)
        self._logger.warning("process %d %s: sending %s to its process group", proc.pid, reason, name)
        self._escalation.record(name, reason)
        _signal_group(proc, signum)
        return True

    def _stuck_reason(self, grace: float, stall: Stall) -> str:
        """What the agent is failing to do, for the log and the error."""
        proc = self._proc
        assert proc is not None
        if self._exited.is_set():
            status = describe_exit_status(proc.returncode)
            return f"exited ({status}) but its output stayed open after it exited (held by a child of it?)"
        if stall.io_over:
            return f"closed its output but did not exit within {grace:g}s"
        if stall.aborted:
            return f"did not end its output within {grace:g}s after the server aborted"
        if not stall.input_closed:
            return f"stopped reading its input (no progress for {grace:g}s)"
        return f"did not exit within {grace:g}s after its input was closed"

    def _release(self, err: BaseException | None) -> BaseException | None:
        """After the server stopped: reap the child, join the helpers, close the pipes; the error close() raises."""
        proc = self._proc
        assert proc is not None
        self._exited.wait()  # the watcher returned: it exited (SIGKILL cannot be ignored)
        stderr_thread, waiter = self._threads
        waiter.join()
        stderr_thread.join(EXIT_GRACE)
        for stream in (proc.stdin, proc.stdout):
            _close_quietly(stream)
        if stderr_thread.is_alive():
            # Only a process outside the group can still hold the stderr pipe;
            # leave the thread the stream it is reading rather than closing it under its feet.
            self._logger.warning("process %d exited but its stderr is still open", proc.pid)
        else:
            _close_quietly(proc.stderr)
        if err is None and (proc.returncode != 0 or self._escalation.taken()[0]):
            err = self._process_error()
        return err

    def _kill(self) -> None:
        """End the agent now (the server's kill callback, and kill()): SIGKILL its process group."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)

    # --- helper threads -------------------------------------------------------------

    def _wait_for_exit(self) -> None:
        """The waiter thread: reap the child, and tell the server how it ended (never waiting for the server)."""
        proc, server = self._proc, self._server
        assert proc is not None and server is not None
        try:
            proc.wait()
        finally:
            self._exited.set()
        err = self._process_error()  # waits (bounded) for the last stderr lines
        # A death (non-zero, or a signal) is an error in itself while the server
        # runs; while it stops, close() reports the exit unless it broke something.
        server.explain_end(err, fatal=proc.returncode != 0)

    def _drain_stderr(self) -> None:
        """The stderr thread: log each line, however long, until EOF."""
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        read = proc.stderr.read
        line = bytearray()
        dropped = 0
        limit = STDERR_LINE_LIMIT
        try:
            while True:
                chunk = read(STDERR_CHUNK)
                if not chunk:
                    break
                start = 0
                while True:
                    end = chunk.find(b"\n", start)
                    piece = chunk[start:] if end < 0 else chunk[start:end]
                    room = limit - len(line)
                    if room > 0:
                        line += piece[:room]
                    dropped += max(0, len(piece) - max(room, 0))
                    if end < 0:
                        break
                    self._log_stderr_line(bytes(line), dropped)
                    line.clear()
                    dropped = 0
                    start = end + 1
        except (OSError, ValueError) as exc:
            self._logger.error("reading the process's stderr failed: %s", exc)
        finally:
            if line or dropped:
                self._log_stderr_line(bytes(line), dropped)
            self._stderr_done.set()

    def _log_stderr_line(self, raw: bytes, dropped: int) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if dropped:
            text += f"... [{dropped} more bytes not logged]"
        if not text.strip():
            return
        with self._tail_lock:
            self._tail.append(text)
        level = _LEVEL_PREFIXES.get(text[:2])
        if level is None:
            level = logging.INFO
        else:
            text = text[3:] if text[2:3] == " " else text[2:]
        self._logger.log(level, "%s", text)

    # --- errors ---------------------------------------------------------------------

    def _process_error(self) -> ProcessExitedError:
        """The error describing the child's exit, built after it exited: the one cause.

        Built again only if close() signalled the group since (a child of the
        agent held its output after the agent exited): the first one then
        explained nothing, so nobody has seen it.
        """
        with self._exit_lock:
            proc = self._proc
            assert proc is not None and proc.returncode is not None
            signals, reason = self._escalation.taken()
            if self._exit_error is None or (signals and signals != self._exit_signals):
                self._stderr_done.wait(EXIT_GRACE)
                status = describe_exit_status(proc.returncode)
                if signals:
                    message = f"process {reason}: sent {', then '.join(signals)}; {status}"
                else:
                    message = f"process exited unexpectedly: {status}"
                tail = self.stderr_tail
                if tail:
                    message += "\nlast stderr lines:\n" + "\n".join(tail)
                self._exit_error = ProcessExitedError(message)
                self._exit_signals = signals
            return self._exit_error

    # --- the server's API (the rest comes from ServerBacked) -----------------------

    def __enter__(self) -> Process:
        self.open()
        return self

    def __repr__(self) -> str:
        return f"<udf.Process {self._argv!r} pid={self.pid} returncode={self.returncode}>"


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child's process group (the child and what it started; it leads the group)."""
    try:
        os.killpg(proc.pid, signum)
    except OSError:  # ESRCH: the whole group is gone
        pass


def _close_quietly(stream: Any) -> None:
    if stream is None:
        return
    try:
        stream.close()
    except (OSError, ValueError):
        pass
