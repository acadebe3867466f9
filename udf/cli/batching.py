"""Grouping and batching line-protocol points as Kapacitor's ``|from()`` / ``|query()`` would."""

from __future__ import annotations

from collections.abc import Sequence

from ..lineprotocol import ParsedLine
from ..models import Batch, BatchPoint, Dimensions, Point

__all__ = ["group_id", "Batcher", "to_stream_point"]


def group_id(name: str, tags: dict[str, str], tag_names: Sequence[str], by_name: bool = True) -> str:
    """Kapacitor's group ID (``models.ToGroupID``): ``name\\nk1=v1,k2=v2`` with sorted tag names."""
    if not tag_names:
        return name if by_name else ""
    dims = ",".join(f"{k}={tags.get(k, '')}" for k in tag_names)
    return f"{name}\n{dims}" if by_name else dims


def _dimensions(tags: dict[str, str], group_by: list[str] | None) -> list[str]:
    """Sorted group-by tag names of a point: all its tags (``*``) or the chosen ones."""
    if group_by is None:
        return sorted(tags)
    return group_by


class Batcher:
    """Cut a sequence of points into batches per measurement and group.

    A group is a measurement and its group-by tags (all tags by default). Without
    limits a group's batch holds all its points and is emitted at the end (in
    order of first appearance); ``size`` emits a group's batch when it holds that
    many points; ``period`` (ns) cuts batches at epoch-aligned time windows: when
    a point of a later window arrives, every open batch is emitted.
    """

    def __init__(self, group_by: list[str] | None = None, size: int = 0, period: int = 0) -> None:
        self._group_by = group_by
        self._size = size
        self._period = period
        self._open: dict[str, tuple[Batch, int]] = {}  # group ID -> (batch, window)
        self._window: int | None = None

    def add(self, point: ParsedLine) -> list[Batch]:
        """Add one point; return the batches it completed."""
        assert point.time is not None
        done: list[Batch] = []
        window = point.time // self._period if self._period else 0
        if self._period and (self._window is None or window > self._window):
            if self._window is not None:
                done.extend(self.flush())
            self._window = window
        dims = _dimensions(point.tags, self._group_by)
        gid = group_id(point.measurement, point.tags, dims)
        entry = self._open.get(gid)
        if entry is not None and entry[1] != window:
            done.append(self._close(gid))
            entry = None
        if entry is None:
            batch = Batch(
                name=point.measurement,
                group=gid,
                by_name=True,
                tags={k: point.tags.get(k, "") for k in dims},
            )
            self._open[gid] = (batch, window)
        else:
            batch = entry[0]
        batch.points.append(BatchPoint(time=point.time, fields=point.fields, tags=point.tags))
        if point.time > batch.tmax or len(batch.points) == 1:
            batch.tmax = point.time
        if self._size and len(batch.points) >= self._size:
            done.append(self._close(gid))
        return done

    def _close(self, gid: str) -> Batch:
        return self._open.pop(gid)[0]

    def flush(self) -> list[Batch]:
        """Emit every open batch, in order of first appearance."""
        batches = [batch for batch, _ in self._open.values()]
        self._open.clear()
        return batches


def to_stream_point(point: ParsedLine, group_by: list[str] | None) -> Point:
    """A parsed line as a stream :class:`Point` grouped like ``|from().groupBy(...)`` by measurement."""
    assert point.time is not None
    dims = _dimensions(point.tags, group_by)
    return Point(
        name=point.measurement,
        group=group_id(point.measurement, point.tags, dims),
        dimensions=Dimensions(by_name=True, tag_names=list(dims)),
        tags=point.tags,
        fields=point.fields,
        time=point.time,
    )
