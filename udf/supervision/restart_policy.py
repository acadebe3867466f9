"""When to restart a failed agent, and after how long: Erlang/OTP's restart intensity and a jittered backoff.

Pure: no threads, no I/O; the clock (``now``, monotonic seconds) and the
jitter's random source are passed in, so a test drives it with a fake clock.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterator

from ..socket import backoff_delays

__all__ = ["JITTER", "RestartLimit", "RestartPolicy"]

#: Jitter of the backoff delays: each is the nominal delay times a factor in [1 - J, 1 + J].
JITTER = 0.25


class RestartLimit(Exception):
    """The restart that was asked for would exceed the intensity: give up instead. ``why`` says how."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class RestartPolicy:
    """At most ``max_restarts`` restarts within any ``period`` seconds; the delay before each.

    The failure that would need one more restart gives up instead (so
    ``max_restarts=3`` means at most 4 agents in a burst); every attempt
    counts, also one whose agent did not start or died while replayed into.
    The delay before attempt *n* of a burst is ``initial * factor**(n-1)``,
    at most ``cap``, jittered; it starts from ``initial`` again once an agent
    ran ``period`` seconds. More than ``max_restarts`` agents in a row dying
    while replayed into (a poison item) gives up too, whatever ``period`` is.
    """

    def __init__(
        self,
        max_restarts: int,
        period: float,
        backoff: tuple[float, float, float],
        jitter: float = JITTER,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.max_restarts = max_restarts
        self.period = period
        self._backoff = backoff
        self._jitter = jitter
        self._rand = rand
        self._delays = self._new_delays()
        self._times: collections.deque[float] = collections.deque()  # when the restarts within the last period began
        self._healthy_since = 0.0
        self._replay_failures = 0  # agents in a row that died while replayed into
        #: Restart attempts so far (``stats().restarts``).
        self.restarts = 0

    def _new_delays(self) -> Iterator[float]:
        initial, factor, cap = self._backoff
        return backoff_delays(initial, factor, cap, self._jitter, self._rand)

    def agent_running(self, now: float) -> None:
        """An agent came up at ``now`` (and replay into it completed)."""
        self._healthy_since = now
        self._replay_failures = 0

    def agent_failed(self, now: float) -> None:
        """The running agent failed at ``now``: after ``period`` healthy seconds the backoff starts over."""
        if now - self._healthy_since >= self.period:
            self._delays = self._new_delays()

    def replay_failed(self) -> None:
        """The agent of the last attempt died while the log was replayed into it."""
        self._replay_failures += 1

    def next_delay(self, now: float) -> float:
        """A restart attempt at ``now``: the seconds to wait before it; :class:`RestartLimit` to give up instead."""
        times = self._times
        while times and now - times[0] >= self.period:
            times.popleft()
        if len(times) >= self.max_restarts:
            raise RestartLimit(f"{len(times)} restarts within {self.period:g}s")
        if self._replay_failures > self.max_restarts:
            raise RestartLimit(f"{self._replay_failures} agents in a row failed while replaying")
        times.append(now)
        self.restarts += 1
        return next(self._delays)
