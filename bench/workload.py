"""The benchmark's data: Telegraf-like ``cpu`` points and batches of them.

Two shapes:

* the **anchor** shape (:func:`make_anchor_points`, :func:`make_anchor_batches`):
  exactly the items of ``../shared/anchors/anchorbench`` (Kapacitor
  v1.3.0-rc4's Go ``udf.Server``), so that the Python rows and the Go rows send
  the same points: one series (``host=server01``), every point distinct (time
  and values vary), a 172-byte ``Request`` frame each;
* the **series** shape (:func:`make_series_points`): a realistic workload of
  many series, the host and cpu tags and the group varying from point to point,
  every point distinct. It is what any per-series cache must pay its way on.
"""

from __future__ import annotations

import random

from udf import Batch, BatchPoint, Dimensions, Point

#: anchorbench's first point time: 2017-07-14T02:40:00Z in nanoseconds.
ANCHOR_T0 = 1_500_000_000_000_000_000
#: 2023-11-14T22:13:20Z in nanoseconds.
T0 = 1_700_000_000_000_000_000
#: A second in nanoseconds.
SECOND = 1_000_000_000

ANCHOR_GROUP = "cpu\nhost=server01"


def _anchor_tags() -> dict:
    return {"region": "us-west", "host": "server01", "dc": "dc1"}


def _anchor_fields(i: int) -> dict:
    return {"usage_user": i * 1.5, "usage_system": i * 0.5, "count": i}


def make_anchor_points(n: int) -> list[Point]:
    """anchorbench's stream items 0..n-1 (``-mode stream``, ``-pool n`` cycles the same)."""
    return [
        Point(
            name="cpu",
            database="telegraf",
            retention_policy="autogen",
            group=ANCHOR_GROUP,
            dimensions=Dimensions(False, ["host"]),
            tags=_anchor_tags(),
            fields=_anchor_fields(i),
            time=ANCHOR_T0 + i * SECOND,
        )
        for i in range(n)
    ]


def make_anchor_batches(n: int, size: int = 100) -> list[Batch]:
    """anchorbench's batch items 0..n-1 (``-mode batch -bs size``): ``size`` consecutive points each."""
    batches = []
    for b in range(n):
        points = [
            BatchPoint(time=ANCHOR_T0 + i * SECOND, fields=_anchor_fields(i), tags=_anchor_tags())
            for i in range(b * size, (b + 1) * size)
        ]
        batches.append(
            Batch(name="cpu", tmax=points[-1].time, group=ANCHOR_GROUP, tags={"host": "server01"}, points=points)
        )
    return batches


REGIONS = ("us-west-2", "us-east-1", "eu-central-1")


def make_series_points(n: int, series: int = 2000, seed: int = 1) -> list[Point]:
    """``n`` distinct points over ``series`` series (Telegraf ``cpu``, grouped by host and cpu).

    Series ``s`` is host ``web-NNNN.example.com`` (``s // 2``) and cpu ``cpu0``
    or ``cpu1`` (``s % 2``), with that host's region and dc; its group is
    Kapacitor's group ID for ``groupBy('cpu', 'host')``. Consecutive points
    belong to different series, and each series comes back every ``series``
    points with new values and a new time.
    """
    rng = random.Random(seed)
    points = []
    for i in range(n):
        s = i % series
        host = f"web-{s // 2:04d}.example.com"
        cpu = f"cpu{s % 2}"
        region = REGIONS[(s // 2) % len(REGIONS)]
        points.append(
            Point(
                name="cpu",
                database="telegraf",
                retention_policy="autogen",
                group=f"cpu\ncpu={cpu},host={host}",
                dimensions=Dimensions(False, ["cpu", "host"]),
                tags={"cpu": cpu, "dc": region + "a", "host": host, "region": region},
                fields={"usage_user": rng.random() * 100.0, "usage_system": rng.random() * 100.0, "count": i},
                time=T0 + (i // series) * 10 * SECOND,
            )
        )
    return points
