"""moving_avg: a stream UDF computing a per-group moving average of one field.

Options (from the TICKscript, e.g. ``@movingAvg().field('usage_user').size(10).as('avg')``):

``field`` (STRING, required)
    the field to average; int and double values are used, points without the
    field (or with a string or bool value) are skipped.
``size`` (INT, required, > 0)
    how many of the latest values of each group are averaged.
``as`` (STRING, default ``"avg"``)
    the name of the output field.

For every input point, once its group (``point.group``) has seen ``size``
values, the UDF emits a point with the input's name, time, group, tags,
dimensions, database and retention policy and one double field, ``as``, the
mean of the last ``size`` values. While a group's window is filling nothing is
emitted (Kapacitor's example emits a running mean of the partial window
instead; a "moving average of 10" over 3 values is misleading).

snapshot/restore carry the windows as JSON::

    {"size": 3, "windows": {"<group>": [1.0, 2.0, 3.0], ...}}

Run over stdin/stdout, or as a socket server::

    python3 examples/moving_avg.py
    python3 examples/moving_avg.py --socket /tmp/moving_avg.sock
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from typing import Any

try:
    import agent_pb2
    from udf.agent import Handler, field_value, main, parse_options
except ImportError:  # running from a checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import agent_pb2
    from udf.agent import Handler, field_value, main, parse_options

#: Option name -> the one value type it takes.
OPTIONS = {"field": agent_pb2.STRING, "size": agent_pb2.INT, "as": agent_pb2.STRING}


def numeric_field(point: Any, name: str) -> float | None:
    """The value of field ``name`` as a float, or None if absent, a string or a bool."""
    value = field_value(point, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class MovingAverageHandler(Handler):
    """Per-group moving average of ``field`` over the last ``size`` values."""

    def __init__(self, agent: Any = None) -> None:
        super().__init__(agent)
        self.field = ""
        self.size = 0
        self.as_ = "avg"
        self.windows: dict[str, collections.deque[float]] = {}

    def info(self) -> Any:
        response = agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)
        for name, value_type in OPTIONS.items():
            response.options[name].valueTypes.append(value_type)
        return response

    def init(self, init_req: Any) -> Any:
        values, errors = parse_options(init_req, OPTIONS, required=("field", "size"))
        field = str(values.get("field", ""))
        size = int(values.get("size", 0))
        as_ = str(values.get("as", "avg"))
        if "field" in values and not field:
            errors["field"] = "option 'field' must not be empty"
        if "size" in values and size <= 0:
            errors["size"] = f"option 'size' must be > 0, got {size}"
        if not as_:
            errors["as"] = "option 'as' must not be empty"
        if errors:
            return agent_pb2.InitResponse(success=False, error="; ".join(errors.values()))
        self.field, self.size, self.as_ = field, size, as_
        self.windows = {}
        return agent_pb2.InitResponse(success=True)

    def point(self, point: Any) -> None:
        value = numeric_field(point, self.field)
        if value is None:
            return
        window = self.windows.get(point.group)
        if window is None:
            window = self.windows[point.group] = collections.deque(maxlen=self.size)
        window.append(value)
        if len(window) < self.size:
            return
        out = agent_pb2.Point(
            time=point.time,
            name=point.name,
            database=point.database,
            retentionPolicy=point.retentionPolicy,
            group=point.group,
            byName=point.byName,
            dimensions=list(point.dimensions),
            tags=dict(point.tags),
            fieldsDouble={self.as_: math.fsum(window) / self.size},
        )
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(point=out), flush=False)

    def snapshot(self) -> Any:
        state = {"size": self.size, "windows": {g: list(w) for g, w in self.windows.items()}}
        return agent_pb2.SnapshotResponse(snapshot=json.dumps(state, sort_keys=True).encode())

    def restore(self, restore_req: Any) -> Any:
        if self.size <= 0:
            return agent_pb2.RestoreResponse(success=False, error="restore before init: size is unknown")
        if not restore_req.snapshot:
            self.windows = {}
            return agent_pb2.RestoreResponse(success=True)
        try:
            state = json.loads(restore_req.snapshot.decode())
            windows = state["windows"]
            if not isinstance(windows, dict):
                raise ValueError("'windows' must be an object")
            restored: dict[str, collections.deque[float]] = {}
            for group, values in windows.items():
                if not isinstance(values, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
                ):
                    raise ValueError(f"window of group {group!r} must be a list of numbers")
                # A smaller size keeps the latest values.
                restored[group] = collections.deque((float(v) for v in values), maxlen=self.size)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return agent_pb2.RestoreResponse(success=False, error=f"invalid moving_avg snapshot: {exc}")
        self.windows = restored
        return agent_pb2.RestoreResponse(success=True)


if __name__ == "__main__":
    sys.exit(main(MovingAverageHandler, description="Kapacitor UDF: per-group moving average of a field."))
