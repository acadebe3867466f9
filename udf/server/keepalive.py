"""The keepalive thread: a ping every ``timeout / 2``, and the verdict when the agent goes quiet.

Any bytes from the agent count as liveness, and so does time the reader spends
waiting on a slow consumer (not the agent's fault). Nothing for ``timeout``
seconds: the server aborts with :class:`~udf.errors.KeepaliveTimeoutError`,
and a ``udf-killer`` thread calls the kill callback if the I/O has not ended
``2 * timeout`` later (Go: "process not responding! killing").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import agent_pb2

from ..convert import encode_request
from ..errors import ChannelClosed, KeepaliveTimeoutError
from .callbacks import call_safely
from .outbox import Outbox
from .progress import Progress

__all__ = ["Keepalive"]


class Keepalive:
    """Pings the agent and watches its liveness; ``run`` is the ``udf-keepalive`` thread's body."""

    def __init__(
        self,
        timeout: float,
        progress: Progress,
        outbox: Outbox,
        counted: Callable[[], None],
        abort: Callable[[BaseException], None],
        kill_callback: Callable[[], Any] | None,
        logger: logging.Logger,
    ) -> None:
        self._timeout = timeout
        self._progress = progress
        self._outbox = outbox
        self._counted = counted  # counts a ping sent, for stats()
        self._abort = abort
        self._kill_callback = kill_callback
        self._logger = logger
        #: Set by stop() (the server's stop(), abort() or the reader's end): nothing more to watch.
        self._quiet = threading.Event()
        #: The udf-killer thread, once a timeout started one.
        self.killer: threading.Thread | None = None

    def stop(self) -> None:
        """End the thread at its next wake-up (idempotent)."""
        self._quiet.set()

    def run(self, io_done: threading.Event) -> None:
        """Ping every timeout/2 until stopped; abort (and start the killer) after timeout of silence."""
        timeout = self._timeout
        interval = timeout / 2
        progress = self._progress
        alive_at = time.monotonic()
        next_ping = alive_at + interval
        while True:
            now = time.monotonic()
            alive_at = progress.heard_at(now, alive_at)
            wake = min(next_ping, alive_at + timeout)
            # Woken by stop() (the server's stop(), abort() or the reader's end).
            if self._quiet.wait(max(0.0, wake - now)):
                return
            now = time.monotonic()
            alive_at = progress.heard_at(now, alive_at)
            if now - alive_at >= timeout:
                self._timed_out(alive_at, io_done)
                return
            if now >= next_ping:
                if not self._ping():
                    return
                next_ping = now + interval

    def _ping(self) -> bool:
        """Queue a KeepaliveRequest ahead of the data; False once the server takes no more."""
        ping = agent_pb2.Request(keepalive=agent_pb2.KeepaliveRequest(time=time.time_ns()))
        try:
            self._outbox.put_request(encode_request(ping), urgent=True)
        except ChannelClosed:
            return False
        self._counted()
        return True

    def _timed_out(self, alive_at: float, io_done: threading.Event) -> None:
        last_ns = time.time_ns() - int((time.monotonic() - alive_at) * 1e9)
        err = KeepaliveTimeoutError(last_ns)
        self._logger.error("%s", err)
        killer = threading.Thread(target=self._kill_if_stuck, args=(io_done,), name="udf-killer", daemon=True)
        killer.start()
        self.killer = killer  # published started: the server joins it
        self._abort(err)

    def _kill_if_stuck(self, io_done: threading.Event) -> None:
        """The ``udf-killer`` thread: the kill callback if the I/O has not ended 2*timeout after the abort."""
        # Set by the server when its reader and writer have ended.
        if not io_done.wait(2 * self._timeout) and self._kill_callback is not None:
            self._logger.error("process not responding! killing")
            call_safely(self._logger, "kill callback", self._kill_callback)
