"""What the engine adapters' tests share (udf.beam, udf.flink): the sample data and the plain run.

The plain run is the reference every adapter's output must equal: a
:class:`udf.Process` fed each series in turn, in time order.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import udf
from udf.cli import Batcher, to_stream_point
from udf.lineprotocol import read_lines
from udf.options import build_options

from ..helpers import ROOT, TIMEOUT

EXAMPLES = os.path.join(ROOT, "examples")
HOSTS_LP = os.path.join(EXAMPLES, "data", "hosts.lp")
MOVING_AVG = [sys.executable, "-u", os.path.join(EXAMPLES, "moving_avg.py")]
OUTLIERS = [sys.executable, "-u", os.path.join(EXAMPLES, "outliers.py")]
KILL_ONCE = os.path.join(ROOT, "tests", "agents", "kill_once.py")
AVG_OPTIONS = {"field": "usage_user", "size": 4, "as": "avg"}
OUTLIERS_OPTIONS = {"field": "usage_user", "scale": 1.5}


# --- data and the reference run -------------------------------------------------------


def sample_series() -> dict[str, list[udf.Point]]:
    """examples/data/hosts.lp as stream points grouped by host, series by series, in time order."""
    with open(HOSTS_LP, encoding="utf-8") as f:
        points = [to_stream_point(parsed, ["host"]) for _, parsed in read_lines(f, HOSTS_LP)]
    series: dict[str, list[udf.Point]] = collections.defaultdict(list)
    for point in points:
        series[point.group].append(point)
    return dict(series)


def sample_batches() -> list[udf.Batch]:
    """examples/data/hosts.lp as one batch per host."""
    batcher = Batcher(group_by=["host"])
    with open(HOSTS_LP, encoding="utf-8") as f:
        for _, parsed in read_lines(f, HOSTS_LP):
            assert batcher.add(parsed) == []
    return batcher.flush()


def normalize(item: Any) -> Any:
    """A point or batch as a hashable tuple of everything it carries."""
    if isinstance(item, udf.Point):
        return (
            "point",
            item.name,
            item.database,
            item.retention_policy,
            item.group,
            item.dimensions.by_name,
            tuple(item.dimensions.tag_names),
            tuple(sorted(item.tags.items())),
            tuple(sorted(item.fields.items())),
            item.time,
        )
    assert isinstance(item, udf.Batch), item
    points = tuple((bp.time, tuple(sorted(bp.tags.items())), tuple(sorted(bp.fields.items()))) for bp in item.points)
    return ("batch", item.name, item.tmax, item.group, item.by_name, tuple(sorted(item.tags.items())), points)


def reference_run(command: Sequence[str], options: Any, series: Sequence[Sequence[Any]], edge: str) -> Counter[Any]:
    """A plain udf.Process fed each series in turn (in time order): the multiset of its outputs."""
    process = udf.Process(command[0], command[1:], timeout=TIMEOUT)
    outputs: list[Any] = []
    with process:
        process.init(build_options(options))
        inlet = process.point_in if edge == "stream" else process.batch_in
        out = process.point_out if edge == "stream" else process.batch_out
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                for items in series:
                    for item in items:
                        inlet.put(item, timeout=TIMEOUT)
                process.close()  # ends the agent's output once it answered everything
            except BaseException as exc:
                failure.append(exc)
                process.abort(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

        feeder = threading.Thread(target=feed, name="udf-test-feeder", daemon=True)
        feeder.start()
        for item in out:
            outputs.append(item)
        feeder.join(TIMEOUT)
        assert not feeder.is_alive()
        assert not failure, failure
    return collections.Counter(normalize(item) for item in outputs)


def interleaved(series: dict[str, list[Any]]) -> list[Any]:
    """Every item, series interleaved round-robin (Beam promises no order anyway)."""
    lists = list(series.values())
    return [s[i] for i in range(max(map(len, lists))) for s in lists if i < len(s)]
