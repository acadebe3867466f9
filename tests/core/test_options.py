"""udf.options: init() takes a mapping, typed by the same rule as udf.beam and the CLI."""

from __future__ import annotations

import datetime
import sys
from typing import Any

import pytest

import agent_pb2
import udf
from udf.options import Nanoseconds, build_options

from ..helpers import TIMEOUT


def test_a_mapping_is_typed_from_python_values() -> None:
    built = build_options(
        {
            "flag": True,
            "n": 3,
            "x": 1.5,
            "s": "a",
            "d": datetime.timedelta(seconds=1, microseconds=2),
            "two": [1, "b"],
            "none": [],
        }
    )
    assert [o.name for o in built] == ["flag", "n", "x", "s", "d", "two", "none"]
    flag, n, x, s, d, two, none = built
    assert (flag.values[0].type, flag.values[0].boolValue) == (agent_pb2.BOOL, True)
    assert (n.values[0].type, n.values[0].intValue) == (agent_pb2.INT, 3)
    assert (x.values[0].type, x.values[0].doubleValue) == (agent_pb2.DOUBLE, 1.5)
    assert (s.values[0].type, s.values[0].stringValue) == (agent_pb2.STRING, "a")
    assert (d.values[0].type, d.values[0].durationValue) == (agent_pb2.DURATION, 1_000_002_000)
    assert [v.type for v in two.values] == [agent_pb2.INT, agent_pb2.STRING]
    assert list(none.values) == []


@pytest.mark.parametrize(
    "options, match",
    [
        ({"x": object()}, "option 'x': values must be bool, int, float, str, timedelta, Nanoseconds"),
        ({1: "a"}, "option names must be str"),
        ("field=x", "not a string"),
        ([{"name": "x"}], "init options must be agent_pb2.Option, got dict"),
    ],
)
def test_bad_options_name_what_is_wrong(options: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        build_options(options)


def test_nanoseconds_are_a_duration_finer_than_a_timedelta() -> None:
    (period,) = build_options({"period": Nanoseconds(1500)})
    assert (period.values[0].type, period.values[0].durationValue) == (agent_pb2.DURATION, 1500)
    assert repr(Nanoseconds(3)) == "Nanoseconds(3)"
    (count,) = build_options({"count": 1500})
    assert count.values[0].type == agent_pb2.INT, "a plain int stays an INT"


def test_a_list_of_options_passes_unchanged() -> None:
    option = agent_pb2.Option(name="size", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=2)])
    assert build_options([option]) == [option]
    assert build_options(None) == []


def test_process_init_with_a_mapping_runs_a_real_agent() -> None:
    """moving_avg initialized from a dict averages as it would from agent_pb2.Options (a full window of 2)."""
    with udf.Process(sys.executable, ["-u", "examples/moving_avg.py"], timeout=TIMEOUT) as proc:
        proc.init({"field": "value", "size": 2, "as": "avg"})
        for i in range(3):
            proc.point_in.put(udf.Point(name="m", tags={"h": "a"}, fields={"value": float(i)}, time=i * 10**9))
        got = [proc.point_out.get(timeout=TIMEOUT).fields["avg"] for _ in range(2)]
    assert got == [0.5, 1.5]


def test_init_with_a_bad_mapping_fails_before_anything_is_sent() -> None:
    with udf.Process(sys.executable, ["-u", "examples/moving_avg.py"], timeout=TIMEOUT) as proc:
        with pytest.raises(TypeError, match="option 'size'"):
            proc.init({"size": object()})
        proc.init({"field": "value", "size": 2})  # the agent was not disturbed
