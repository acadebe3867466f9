"""The abort callbacks: the constructor's ``abort_callback`` and the listeners added later, run once.

They run with the server's first error, exactly once. When the owner's thread
aborts (``server.abort(err)``) they run there, as in Go. When the server's own
threads abort (an ``ErrorResponse``, the agent's end, a keepalive timeout) they
run in a ``udf-abort-callbacks`` thread instead: a callback may then wait for
anything -- ``stop()`` or ``close()`` handed to another thread included --
without holding up the I/O that such a call waits for (Go's ``Stop()`` from its
abort callback deadlocks). Exceptions they raise are logged, never raised into
the server's threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["AbortCallbacks", "AbortListener", "call_safely"]

#: ``add_abort_callback``: called once with the server's first error.
AbortListener = Callable[[BaseException], Any]


def call_safely(logger: logging.Logger, what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run a user callback; its exception is logged, never raised into our threads."""
    try:
        fn(*args)
    except Exception:
        logger.exception("%s failed", what)


class AbortCallbacks:
    """The callbacks of one server, and the thread they run in when the server aborts itself."""

    def __init__(self, abort_callback: Callable[[], Any] | None, logger: logging.Logger) -> None:
        self._abort_callback = abort_callback
        self._logger = logger
        self._lock = threading.Lock()
        self._listeners: list[AbortListener] = []
        #: The error they ran with, once they ran (the server's first error).
        self._fired: BaseException | None = None
        #: The udf-abort-callbacks thread, when they run in one.
        self.thread: threading.Thread | None = None

    def add(self, listener: AbortListener) -> None:
        """Add a listener; after the callbacks ran, it is called at once with the same error."""
        with self._lock:
            fired = self._fired
            if fired is None:
                self._listeners.append(listener)
        if fired is not None:
            call_safely(self._logger, "abort listener", listener, fired)

    def fire(self, err: BaseException, inline: bool) -> None:
        """Run them all with ``err``, once: here (``inline``), or in a new ``udf-abort-callbacks`` thread."""
        with self._lock:
            if self._fired is not None:
                return
            self._fired = err
            listeners = list(self._listeners)
            if not inline:  # published before it runs (a callback asks whether it runs in it), started under the lock
                self.thread = threading.Thread(
                    target=self._run, args=(err, listeners), name="udf-abort-callbacks", daemon=True
                )
                self.thread.start()
        if inline:
            self._run(err, listeners)

    def _run(self, err: BaseException, listeners: list[AbortListener]) -> None:
        if self._abort_callback is not None:
            call_safely(self._logger, "abort callback", self._abort_callback)
        for listener in listeners:
            call_safely(self._logger, "abort listener", listener, err)

    def fired_before(self) -> bool:
        """Whether they have been fired (are running, or ran)."""
        with self._lock:
            return self._fired is not None

    def wait(self) -> None:
        """Wait until callbacks running in their own thread have returned (at once if none, or from there)."""
        with self._lock:  # assigned and started under it
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
