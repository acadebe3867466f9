"""What the monitor thread is asked to do: typed commands, sent through one queue, handled in order.

Any thread sends them (:meth:`udf.supervision.monitor.Monitor.send`): the
agents' abort callbacks, producers and request callers, the output channels,
``close()`` and ``abort()``. A failure report names the agent's generation, so
a report about an agent already replaced is recognized as stale.
"""

from __future__ import annotations

import dataclasses

__all__ = ["AgentFailed", "SnapshotDue", "CloseAgents", "Abort", "Command"]


@dataclasses.dataclass(frozen=True)
class AgentFailed:
    """Agent ``gen`` failed with ``cause``.

    ``soft``: ``cause`` is not the agent's own error (its output ended
    cleanly, or a put met it closing before it said why): the agent is given
    time to exit and explain itself before it is killed.
    """

    gen: int
    cause: BaseException
    soft: bool


@dataclasses.dataclass(frozen=True)
class SnapshotDue:
    """``snapshot_every`` items were accepted since the last snapshot (or a replay made the log long): take one."""


@dataclasses.dataclass(frozen=True)
class CloseAgents:
    """``close()``: close the current agent (recovering a failure met meanwhile), then end."""

    discard_output: bool


@dataclasses.dataclass(frozen=True)
class Abort:
    """``abort(err)`` (or a ``close()`` that timed out): discard the agent now and end; nothing is restarted."""

    error: BaseException


Command = AgentFailed | SnapshotDue | CloseAgents | Abort
