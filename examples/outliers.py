"""outliers: a batch UDF keeping only the points whose field lies outside Tukey's fences.

Options (from the TICKscript, e.g. ``@outliers().field('usage_user').scale(1.5)``):

``field`` (STRING, required)
    the field to test; int and double values count, points without the field
    (or with a string or bool value, or NaN) are neither counted nor emitted.
``scale`` (DOUBLE, default 1.5; an INT is accepted too; must be finite and >= 0)
    the fences are ``Q1 - scale*IQR`` and ``Q3 + scale*IQR`` with ``IQR = Q3 - Q1``.

For each batch the UDF emits BeginBatch (same name, group, tags and byName;
``size`` = the number of outliers), the points strictly outside the fences in
the order they arrived, unchanged, and EndBatch (unchanged).

Quartiles: the values are sorted; Q1 is the median of the lower half and Q3 the
median of the upper half, where for an odd count the overall median belongs
to neither half (Tukey's hinges without the median, the method of Kapacitor's
own outliers example and of many calculators). A batch with fewer than two
values has no outliers.

Run over stdin/stdout, or as a socket server::

    python3 examples/outliers.py
    python3 examples/outliers.py --socket /tmp/outliers.sock
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

try:
    import agent_pb2
    from udf.agent import Handler, field_value, main, parse_options
    from udf.errors import UDFError
except ImportError:  # running from a checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import agent_pb2
    from udf.agent import Handler, field_value, main, parse_options
    from udf.errors import UDFError

#: Option name -> accepted value types (the first is the one advertised).
OPTIONS = {"field": (agent_pb2.STRING,), "scale": (agent_pb2.DOUBLE, agent_pb2.INT)}


def median(sorted_values: Sequence[float]) -> float:
    """The median of a non-empty sorted sequence."""
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3): medians of the lower and upper halves, excluding the median for odd counts."""
    xs = sorted(values)
    n = len(xs)
    if n < 2:
        raise ValueError("quartiles need at least two values")
    return median(xs[: n // 2]), median(xs[(n + 1) // 2 :])


def fences(values: Sequence[float], scale: float) -> tuple[float, float]:
    """Tukey's fences (Q1 - scale*IQR, Q3 + scale*IQR)."""
    q1, q3 = quartiles(values)
    iqr = q3 - q1
    return q1 - scale * iqr, q3 + scale * iqr


def numeric_field(point: Any, name: str) -> float | None:
    """The value of field ``name`` as a float; None if absent, not a number, or NaN."""
    value = field_value(point, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


class OutliersHandler(Handler):
    """Per batch, emit only the points whose ``field`` is outside Tukey's fences."""

    def __init__(self, agent: Any = None) -> None:
        super().__init__(agent)
        self.field = ""
        self.scale = 1.5
        self._begin: Any | None = None
        self._points: list[tuple[float, Any]] = []

    def info(self) -> Any:
        response = agent_pb2.InfoResponse(wants=agent_pb2.BATCH, provides=agent_pb2.BATCH)
        for name, value_types in OPTIONS.items():
            response.options[name].valueTypes.append(value_types[0])
        return response

    def init(self, init_req: Any) -> Any:
        values, errors = parse_options(init_req, OPTIONS, required=("field",))
        field = str(values.get("field", ""))
        scale = float(values.get("scale", 1.5))
        if "field" in values and not field:
            errors["field"] = "option 'field' must not be empty"
        if not math.isfinite(scale) or scale < 0:
            errors["scale"] = f"option 'scale' must be a finite number >= 0, got {scale}"
        if errors:
            return agent_pb2.InitResponse(success=False, error="; ".join(errors.values()))
        self.field, self.scale = field, scale
        return agent_pb2.InitResponse(success=True)

    def begin_batch(self, begin_req: Any) -> None:
        if self._begin is not None:
            raise UDFError("BeginBatch inside a batch")
        self._begin = begin_req
        self._points = []

    def point(self, point: Any) -> None:
        if self._begin is None:
            raise UDFError("outliers works on batches: point received outside a batch")
        value = numeric_field(point, self.field)
        if value is not None:
            self._points.append((value, point))

    def end_batch(self, end_req: Any) -> None:
        begin, points = self._begin, self._points
        if begin is None:
            raise UDFError("EndBatch without BeginBatch")
        self._begin, self._points = None, []
        outliers = []
        if len(points) >= 2:
            lower, upper = fences([v for v, _ in points], self.scale)
            outliers = [p for v, p in points if v < lower or v > upper]
        out_begin = agent_pb2.BeginBatch()
        out_begin.CopyFrom(begin)
        out_begin.size = len(outliers)
        responses = [agent_pb2.Response(begin=out_begin)]
        responses.extend(agent_pb2.Response(point=p) for p in outliers)
        responses.append(agent_pb2.Response(end=end_req))
        assert self.agent is not None
        self.agent.write_responses(responses, flush=False)

    def snapshot(self) -> Any:
        return agent_pb2.SnapshotResponse(snapshot=b"")  # no state between batches


if __name__ == "__main__":
    sys.exit(main(OutliersHandler, description="Kapacitor UDF: keep the outliers of each batch (Tukey's fences)."))
