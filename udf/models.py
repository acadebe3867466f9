"""The data a UDF consumes and produces: points and batches.

Plain dataclasses mirroring Kapacitor's ``models.Point`` / ``models.Batch``.
Times are integers in nanoseconds since the Unix epoch (UTC), never datetimes,
so a round trip never changes a timestamp. Field values are ``float``, ``int``
(int64 range), ``str`` or ``bool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FieldValue", "Fields", "Tags", "Dimensions", "Point", "BatchPoint", "Batch", "INT64_MIN", "INT64_MAX"]

#: The range of Go's int64: integer fields, times and INT options must fit in it.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

FieldValue = float | int | str | bool
Fields = dict[str, FieldValue]
Tags = dict[str, str]


@dataclass(slots=True)
class Dimensions:
    """How a point is grouped (Go: ``models.Dimensions``)."""

    by_name: bool = False
    tag_names: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Point:
    """A stream point (Go: ``models.Point``); ``time`` is ns since the epoch."""

    name: str = ""
    database: str = ""
    retention_policy: str = ""
    group: str = ""
    dimensions: Dimensions = field(default_factory=Dimensions)
    tags: Tags = field(default_factory=dict)
    fields: Fields = field(default_factory=dict)
    time: int = 0


@dataclass(slots=True)
class BatchPoint:
    """One point of a batch (Go: ``models.BatchPoint``)."""

    time: int = 0
    fields: Fields = field(default_factory=dict)
    tags: Tags = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """A batch of points (Go: ``models.Batch``); ``tmax`` is ns since the epoch."""

    name: str = ""
    tmax: int = 0
    group: str = ""
    by_name: bool = False
    tags: Tags = field(default_factory=dict)
    points: list[BatchPoint] = field(default_factory=list)
