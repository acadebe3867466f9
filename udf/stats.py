"""A snapshot of a server's health, cheap enough to take at any time."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(frozen=True)
class Stats:
    """What :meth:`udf.Server.stats` returns: counters since ``start()`` and current depths.

    ``points_in``/``batches_in`` count items accepted by ``put()``;
    ``points_out``/``batches_out`` items delivered to ``point_out``/``batch_out``;
    ``bytes_in``/``bytes_out`` bytes read from / written to the agent;
    ``requests`` requests sent by kind (info, init, snapshot, restore, keepalive);
    ``errors`` error events (aborts, whoever called them, and unsolicited
    responses); ``error`` the first error's message; ``*_queue`` current queue
    depths; ``keepalive_rtt`` the last keepalive round trip in seconds (``None``
    before the first); ``uptime`` seconds since ``start()``; ``state`` one of
    "new", "running", "stopping", "stopped", "aborted"; ``dropped`` points and
    batches the agent sent after their channel was closed by its consumer or by
    ``discard_output()``.
    """

    state: str
    uptime: float
    points_in: int
    batches_in: int
    points_out: int
    batches_out: int
    bytes_in: int
    bytes_out: int
    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    error: str | None = None
    in_queue: int = 0
    point_out_queue: int = 0
    batch_out_queue: int = 0
    keepalive_rtt: float | None = None
    dropped: int = 0
