"""The benchmark's data: typical Telegraf ``cpu`` points and batches of them.

Every point is distinct (host, values and time vary), so nothing in the
library can profit from seeing the same object twice; a stream point encodes
to a ~174-byte ``Request`` frame, as in the issue's reference figures.
"""

from __future__ import annotations

import random
from typing import List

from udf import Batch, BatchPoint, Dimensions, Point

#: 2023-11-14T22:13:20Z in nanoseconds.
T0 = 1_700_000_000_000_000_000
#: A second in nanoseconds.
SECOND = 1_000_000_000


def _tags(i: int) -> dict:
    return {"host": "web-server-%03d.example.com" % (i % 1000), "region": "us-west-2", "dc": "us-west-2a"}


def _fields(rng: random.Random, i: int) -> dict:
    return {"usage_user": rng.random() * 100.0, "usage_system": rng.random() * 100.0, "count": i}


def make_points(n: int, seed: int = 1) -> List[Point]:
    """``n`` distinct stream points: measurement ``cpu``, tags host/region/dc, two floats and an int."""
    rng = random.Random(seed)
    return [
        Point(
            name="cpu",
            database="telegraf",
            retention_policy="autogen",
            dimensions=Dimensions(False, []),
            tags=_tags(i),
            fields=_fields(rng, i),
            time=T0 + i * SECOND,
        )
        for i in range(n)
    ]


def make_batches(n: int, size: int = 100, seed: int = 2) -> List[Batch]:
    """``n`` distinct batches of ``size`` points each, like a batch query's result."""
    rng = random.Random(seed)
    batches = []
    for b in range(n):
        start = T0 + b * size * SECOND
        points = [
            BatchPoint(time=start + j * SECOND, fields=_fields(rng, b * size + j), tags=_tags(b * size + j))
            for j in range(size)
        ]
        batches.append(Batch(name="cpu", tmax=start + (size - 1) * SECOND, tags={"dc": "us-west-2a"}, points=points))
    return batches
