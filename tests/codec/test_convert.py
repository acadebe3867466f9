"""Tests of udf.convert: models <-> agent_pb2 messages, request frames, batch assembly.

Round trips go all the way through bytes (model -> message -> bytes -> message ->
model), and the frames ``encode_point``/``encode_batch`` produce are decoded with
the wire module and protobuf, not with the code under test.
"""

from __future__ import annotations

import decimal
import enum
import fractions
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent_pb2
import udf
from udf.convert import (
    BATCH,
    POINTS,
    BatchAssembler,
    Info,
    ResponseDecoder,
    batch_point_from_message,
    batch_point_to_message,
    encode_batch,
    encode_point,
    encode_request,
    fields_from_message,
    fields_to_message,
    info_from_message,
    point_from_message,
    point_to_message,
)
from udf.errors import AgentError, ProtocolError
from udf.models import Batch, BatchPoint, Dimensions, Point
from udf.wire import FrameDecoder

from ..helpers import NEGATIVE_ZERO_SURVIVES

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
TIMES = [0, 1, -1, 1_600_000_000_123_456_789, -1_600_000_000_123_456_789, INT64_MIN, INT64_MAX]


def through_bytes(msg: Any) -> Any:
    """Serialize and parse ``msg`` again, as the wire does."""
    return type(msg).FromString(msg.SerializeToString())


def requests_of(data: bytes) -> list[Any]:
    """Decode a run of frames into ``agent_pb2.Request`` messages."""
    decoder = FrameDecoder()
    payloads = decoder.feed(data)
    decoder.eof()
    return [agent_pb2.Request.FromString(p) for p in payloads]


def assert_same_typed(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal dicts whose values also have identical types (1 == 1.0 == True otherwise)."""
    assert a == b
    assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}


FIELDS: dict[str, Any] = {
    "f": 1.5,
    "whole_float": 2.0,
    "zero_float": 0.0,
    "i": 42,
    "zero_int": 0,
    "neg": -7,
    "imin": INT64_MIN,
    "imax": INT64_MAX,
    "s": "héllo",
    "empty_s": "",
    "t": True,
    "false": False,
}


def sample_point(time: int = 1_600_000_000_123_456_789) -> Point:
    """A point using every attribute and every field type."""
    return Point(
        name="cpu",
        database="telegraf",
        retention_policy="autogen",
        group="host=a,",
        dimensions=Dimensions(by_name=True, tag_names=["host", "dc"]),
        tags={"host": "a", "dc": "eu"},
        fields=dict(FIELDS),
        time=time,
    )


def sample_batch() -> Batch:
    """A batch using every attribute, with negative and extreme point times."""
    return Batch(
        name="mem",
        tmax=1_600_000_000_999_999_999,
        group="dc=eu,",
        by_name=True,
        tags={"dc": "eu"},
        points=[
            BatchPoint(time=1_600_000_000_000_000_001, fields={"used": 0.5, "n": 3}, tags={"dc": "eu", "h": "1"}),
            BatchPoint(time=-1, fields={"ok": False, "s": "x"}, tags={}),
            BatchPoint(time=INT64_MAX, fields={}, tags={"dc": "eu"}),
        ],
    )


# --- points -----------------------------------------------------------------------


@pytest.mark.parametrize("time", TIMES)
def test_point_round_trip(time: int) -> None:
    p = sample_point(time)
    back = point_from_message(through_bytes(point_to_message(p)))
    assert back == p
    assert back.time == time and type(back.time) is int
    assert_same_typed(back.fields, p.fields)


def test_point_fields_go_to_their_typed_maps() -> None:
    msg = point_to_message(sample_point())
    assert dict(msg.fieldsBool) == {"t": True, "false": False}
    assert dict(msg.fieldsInt) == {"i": 42, "zero_int": 0, "neg": -7, "imin": INT64_MIN, "imax": INT64_MAX}
    assert dict(msg.fieldsDouble) == {"f": 1.5, "whole_float": 2.0, "zero_float": 0.0}
    assert dict(msg.fieldsString) == {"s": "héllo", "empty_s": ""}


def test_bool_is_never_an_int() -> None:
    msg = through_bytes(point_to_message(Point(fields={"a": True, "b": False})))
    assert "a" not in msg.fieldsInt and "b" not in msg.fieldsInt
    assert dict(msg.fieldsBool) == {"a": True, "b": False}
    fields = fields_from_message(msg)
    assert fields["a"] is True and fields["b"] is False


def test_point_message_scalars() -> None:
    msg = point_to_message(sample_point())
    assert (msg.name, msg.database, msg.retentionPolicy, msg.group) == ("cpu", "telegraf", "autogen", "host=a,")
    assert msg.byName is True
    assert list(msg.dimensions) == ["host", "dc"]
    assert dict(msg.tags) == {"host": "a", "dc": "eu"}
    assert msg.time == 1_600_000_000_123_456_789


def test_default_point_round_trip() -> None:
    assert point_from_message(through_bytes(point_to_message(Point()))) == Point()


def test_special_floats_round_trip() -> None:
    p = Point(fields={"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "negzero": -0.0, "tiny": 5e-324})
    fields = point_from_message(through_bytes(point_to_message(p))).fields
    assert math.isnan(float(fields["nan"]))
    assert fields["inf"] == math.inf and fields["ninf"] == -math.inf
    assert fields["negzero"] == 0.0
    # The sign survives wherever protobuf keeps it (not old pure-Python backends).
    assert (math.copysign(1.0, fields["negzero"]) == -1.0) is NEGATIVE_ZERO_SURVIVES
    assert fields["tiny"] == 5e-324
    assert all(type(v) is float for v in fields.values())


class Color(enum.IntEnum):
    RED = 3


class Name(str):
    pass


class Ratio(float):
    pass


def test_numeric_subclasses_are_normalized() -> None:
    msg = point_to_message(
        Point(fields={"enum": Color.RED, "frac": fractions.Fraction(1, 4), "name": Name("n"), "ratio": Ratio(0.5)})  # type: ignore[dict-item]
    )
    assert dict(msg.fieldsInt) == {"enum": 3}
    assert dict(msg.fieldsDouble) == {"frac": 0.25, "ratio": 0.5}
    assert dict(msg.fieldsString) == {"name": "n"}


@pytest.mark.parametrize("time", TIMES)
def test_batch_point_round_trip(time: int) -> None:
    bp = BatchPoint(time=time, fields=dict(FIELDS), tags={"k": "v"})
    msg = through_bytes(batch_point_to_message(bp, "grp"))
    assert msg.group == "grp"
    back = batch_point_from_message(msg)
    assert back == bp
    assert_same_typed(back.fields, bp.fields)


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(
    fields=st.dictionaries(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
        st.one_of(
            st.booleans(),
            st.integers(INT64_MIN, INT64_MAX),
            st.floats(allow_nan=False),
            st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
        ),
        max_size=8,
    ),
    time=st.integers(INT64_MIN, INT64_MAX),
)
def test_point_round_trip_property(fields: dict[str, Any], time: int) -> None:
    p = Point(name="m", fields=fields, time=time)
    back = point_from_message(through_bytes(point_to_message(p)))
    assert back == p
    assert_same_typed(back.fields, fields)


# --- field merge order (Go: string, then int, then double, then bool) -------------------

MAPS = ["fieldsString", "fieldsInt", "fieldsDouble", "fieldsBool"]
VALUES = {"fieldsString": "s", "fieldsInt": 7, "fieldsDouble": 2.5, "fieldsBool": True}


@pytest.mark.parametrize(
    "present",
    [c for n in range(2, 5) for c in itertools.combinations(MAPS, n)],
    ids=lambda c: "+".join(m[6:] for m in c),
)
def test_duplicate_key_merge_order(present: tuple[str, ...]) -> None:
    msg = agent_pb2.Point()
    for name in present:
        getattr(msg, name)["k"] = VALUES[name]
    fields = fields_from_message(through_bytes(msg))
    winner = max(present, key=MAPS.index)
    assert fields == {"k": VALUES[winner]}
    assert type(fields["k"]) is type(VALUES[winner])


def test_distinct_keys_across_maps_all_survive() -> None:
    msg = agent_pb2.Point(fieldsString={"a": "x"}, fieldsInt={"b": 1}, fieldsDouble={"c": 1.0}, fieldsBool={"d": False})
    assert_same_typed(fields_from_message(msg), {"a": "x", "b": 1, "c": 1.0, "d": False})


# --- request frames ---------------------------------------------------------------------


def test_encode_point_frame() -> None:
    p = sample_point()
    [request] = requests_of(encode_point(p))
    assert request.WhichOneof("message") == "point"
    assert request.point == point_to_message(p)
    assert point_from_message(request.point) == p


def test_encode_request_frame() -> None:
    request = agent_pb2.Request(init=agent_pb2.InitRequest(taskID="task", nodeID="node"))
    assert requests_of(encode_request(request)) == [request]


def test_encode_batch_frames() -> None:
    b = sample_batch()
    requests = requests_of(encode_batch(b))
    kinds = [r.WhichOneof("message") for r in requests]
    assert kinds == ["begin"] + ["point"] * len(b.points) + ["end"]
    assert requests[0].begin == agent_pb2.BeginBatch(name="mem", group="dc=eu,", tags={"dc": "eu"}, size=3, byName=True)
    for request, bp in zip(requests[1:-1], b.points, strict=True):
        expected = agent_pb2.Point(time=bp.time, group="dc=eu,", tags=bp.tags)
        fields_to_message(expected, bp.fields)
        assert request.point == expected
    assert requests[-1].end == agent_pb2.EndBatch(
        name="mem", group="dc=eu,", tmax=1_600_000_000_999_999_999, tags={"dc": "eu"}
    )


def test_empty_batch_frames() -> None:
    requests = requests_of(encode_batch(Batch(name="e", tmax=5)))
    assert [r.WhichOneof("message") for r in requests] == ["begin", "end"]
    assert requests[0].begin.size == 0
    assert requests[1].end.tmax == 5


def assemble(requests: list[Any]) -> list[Batch]:
    """Feed BeginBatch/Point/EndBatch messages to a BatchAssembler; return the batches."""
    assembler = BatchAssembler()
    batches = []
    for r in requests:
        kind = r.WhichOneof("message")
        if kind == "begin":
            assembler.begin(r.begin)
        elif kind == "point":
            assembler.point(r.point)
        else:
            assert kind == "end"
            batches.append(assembler.end(r.end))
    assert not assembler.in_batch
    return batches


def test_batch_round_trip_through_frames() -> None:
    b = sample_batch()
    [back] = assemble(requests_of(encode_batch(b)))
    assert back == b
    for got, sent in zip(back.points, b.points, strict=True):
        assert_same_typed(got.fields, sent.fields)


def test_several_batches_in_one_stream() -> None:
    first, second = sample_batch(), Batch(name="other", tmax=-3, points=[BatchPoint(time=1, fields={"x": 1})])
    assert assemble(requests_of(encode_batch(first) + encode_batch(second))) == [first, second]


# --- invalid input ----------------------------------------------------------------------

# Each entry passes a wrong type on purpose (its type: ignore names which).
BAD_POINTS = [
    pytest.param(Point(fields={"bad": [1, 2]}), TypeError, "'bad'", id="list-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"bad": None}), TypeError, "'bad'", id="none-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"bad": object()}), TypeError, "'bad'", id="object-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"bad": b"bytes"}), TypeError, "'bad'", id="bytes-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"bad": decimal.Decimal("1.5")}), TypeError, "'bad'", id="decimal-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"bad": 1 + 2j}), TypeError, "'bad'", id="complex-value"),  # type: ignore[dict-item]
    pytest.param(Point(fields={"big": INT64_MAX + 1}), ValueError, "'big'", id="int-too-big"),
    pytest.param(Point(fields={"small": INT64_MIN - 1}), ValueError, "'small'", id="int-too-small"),
    pytest.param(Point(fields={"ok": 1.0, 3: 1.0}), TypeError, "field names must be str", id="int-field-key"),  # type: ignore[dict-item]
    pytest.param(Point(fields={None: "x"}), TypeError, "field names must be str", id="none-field-key"),  # type: ignore[dict-item]
    pytest.param(Point(tags={"host": 1}), TypeError, "'host'", id="int-tag-value"),  # type: ignore[dict-item]
    pytest.param(Point(tags={"host": None}), TypeError, "'host'", id="none-tag-value"),  # type: ignore[dict-item]
    pytest.param(Point(tags={5: "x"}), TypeError, "5", id="int-tag-key"),  # type: ignore[dict-item]
    pytest.param(Point(time=1.5), TypeError, "time", id="float-time"),  # type: ignore[arg-type]
    pytest.param(Point(time=True), TypeError, "time", id="bool-time"),
    pytest.param(Point(time=INT64_MAX + 1), (TypeError, ValueError), "time", id="time-too-big"),
    pytest.param(Point(time="now"), TypeError, "time", id="str-time"),  # type: ignore[arg-type]
    pytest.param(Point(time=None), TypeError, "time", id="none-time"),  # type: ignore[arg-type]
    pytest.param(Point(name=1), TypeError, "name", id="int-name"),  # type: ignore[arg-type]
    pytest.param(Point(name=None), TypeError, "name", id="none-name"),  # type: ignore[arg-type]
    pytest.param(Point(database=None), TypeError, "database", id="none-database"),  # type: ignore[arg-type]
    pytest.param(Point(retention_policy=1.0), TypeError, "retention_policy", id="float-rp"),  # type: ignore[arg-type]
    pytest.param(Point(group=None), TypeError, "group", id="none-group"),  # type: ignore[arg-type]
    pytest.param(Point(dimensions=Dimensions(by_name="yes")), TypeError, "by_name", id="str-by-name"),  # type: ignore[arg-type]
    pytest.param(Point(dimensions=Dimensions(by_name=None)), TypeError, "by_name", id="none-by-name"),  # type: ignore[arg-type]
    pytest.param(Point(dimensions=Dimensions(tag_names=[1])), TypeError, "tag_names", id="int-tag-name"),  # type: ignore[list-item]
    pytest.param(Point(dimensions=Dimensions(tag_names="host")), TypeError, "tag_names", id="str-tag-names"),  # type: ignore[arg-type]
    pytest.param(Point(dimensions=None), TypeError, "point.dimensions", id="none-dimensions"),  # type: ignore[arg-type]
    pytest.param(Point(tags=[("host", "a")]), TypeError, "point.tags", id="list-tags"),  # type: ignore[arg-type]
    pytest.param(Point(fields=[("v", 1.0)]), TypeError, "point.fields", id="list-fields"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("point, error, names", BAD_POINTS)
def test_bad_point_is_refused_naming_the_field(point: Point, error: Any, names: str) -> None:
    with pytest.raises(error) as info:
        encode_point(point)
    assert names in str(info.value)


@pytest.mark.parametrize(
    "item",
    [Batch(), BatchPoint(), {"name": "cpu"}, None, "cpu", agent_pb2.Point(name="cpu")],
    ids=["batch", "batch-point", "dict", "none", "str", "pb-point"],
)
def test_encode_point_refuses_other_types(item: Any) -> None:
    with pytest.raises(TypeError, match="expected udf.Point"):
        encode_point(item)


@pytest.mark.parametrize(
    "item",
    [Point(), BatchPoint(), {"name": "cpu"}, None, [BatchPoint()]],
    ids=["point", "batch-point", "dict", "none", "list"],
)
def test_encode_batch_refuses_other_types(item: Any) -> None:
    with pytest.raises(TypeError, match="expected udf.Batch"):
        encode_batch(item)


# Each entry passes a wrong type on purpose (its type: ignore names which).
BAD_BATCHES = [
    pytest.param(Batch(points=[BatchPoint(), Point()]), TypeError, "batch.points[1]", id="point-in-batch"),  # type: ignore[list-item]
    pytest.param(Batch(points=[{"time": 1}]), TypeError, "batch.points[0]", id="dict-in-batch"),  # type: ignore[list-item]
    pytest.param(
        Batch(points=[BatchPoint(), BatchPoint(), BatchPoint(fields={"v": None})]),  # type: ignore[dict-item]
        TypeError,
        "'v'",
        id="bad-field-in-third-point",
    ),
    pytest.param(Batch(points=[BatchPoint(fields={"v": 2**64})]), ValueError, "'v'", id="int-too-big"),
    pytest.param(Batch(points=[BatchPoint(tags={"t": 1})]), TypeError, "'t'", id="bad-point-tag"),  # type: ignore[dict-item]
    pytest.param(Batch(points=[BatchPoint(time=1.0)]), TypeError, "time", id="float-point-time"),  # type: ignore[arg-type]
    pytest.param(Batch(points=[BatchPoint(time=None)]), TypeError, "time", id="none-point-time"),  # type: ignore[arg-type]
    pytest.param(Batch(tags={"t": 2}), TypeError, "'t'", id="bad-batch-tag"),  # type: ignore[dict-item]
    pytest.param(Batch(tmax=2.5), TypeError, "tmax", id="float-tmax"),  # type: ignore[arg-type]
    pytest.param(Batch(tmax=None), TypeError, "tmax", id="none-tmax"),  # type: ignore[arg-type]
    pytest.param(Batch(tmax=False), TypeError, "tmax", id="bool-tmax"),
    pytest.param(Batch(name=None), TypeError, "name", id="none-name"),  # type: ignore[arg-type]
    pytest.param(Batch(group=3), TypeError, "group", id="int-group"),  # type: ignore[arg-type]
    pytest.param(Batch(by_name=None), TypeError, "by_name", id="none-by-name"),  # type: ignore[arg-type]
    pytest.param(Batch(tags=["dc"]), TypeError, "batch.tags", id="list-batch-tags"),  # type: ignore[arg-type]
    pytest.param(Batch(points=[BatchPoint(fields=["v"])]), TypeError, "batch.points[0].fields", id="list-point-fields"),  # type: ignore[arg-type]
    pytest.param(Batch(points=[BatchPoint(tags=["t"])]), TypeError, "batch.points[0].tags", id="list-point-tags"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("batch, error, names", BAD_BATCHES)
def test_bad_batch_is_refused_naming_the_field(batch: Batch, error: Any, names: str) -> None:
    with pytest.raises(error) as info:
        encode_batch(batch)
    assert names in str(info.value)


def test_bad_batch_point_error_names_its_index() -> None:
    b = Batch(points=[BatchPoint(), BatchPoint(), BatchPoint(fields={"v": object()})])  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"batch\.points\[2\]: field 'v'"):
        encode_batch(b)


def test_refusal_leaves_inputs_unchanged() -> None:
    p = Point(tags={"a": "b"}, fields={"x": 1.0, "bad": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        encode_point(p)
    assert p == Point(tags={"a": "b"}, fields={"x": 1.0, "bad": None})  # type: ignore[dict-item]


# --- batch assembly ---------------------------------------------------------------------


def test_batch_assembler_takes_by_name_from_begin_and_the_rest_from_end() -> None:
    assembler = BatchAssembler()
    assert not assembler.in_batch
    assembler.begin(agent_pb2.BeginBatch(name="begin-name", group="begin-group", tags={"b": "1"}, size=2, byName=True))
    assert assembler.in_batch
    assembler.point(agent_pb2.Point(time=10, fieldsDouble={"v": 1.0}, tags={"p": "1"}))
    assembler.point(agent_pb2.Point(time=20, fieldsInt={"v": 2}))
    batch = assembler.end(
        agent_pb2.EndBatch(name="end-name", group="end-group", tmax=20, tags={"e": "1"}, byName=False)
    )
    assert not assembler.in_batch
    assert batch == Batch(
        name="end-name",
        tmax=20,
        group="end-group",
        by_name=True,
        tags={"e": "1"},
        points=[BatchPoint(time=10, fields={"v": 1.0}, tags={"p": "1"}), BatchPoint(time=20, fields={"v": 2})],
    )


def test_batch_assembler_is_reusable_and_batches_are_independent() -> None:
    assembler = BatchAssembler()
    assembler.begin(agent_pb2.BeginBatch())
    assembler.point(agent_pb2.Point(time=1))
    first = assembler.end(agent_pb2.EndBatch(name="a"))
    assembler.begin(agent_pb2.BeginBatch(byName=False))
    second = assembler.end(agent_pb2.EndBatch(name="b"))
    assert first.points == [BatchPoint(time=1)] and second.points == []
    assert (first.name, second.name) == ("a", "b")


def test_end_without_begin_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="EndBatch"):
        BatchAssembler().end(agent_pb2.EndBatch())


def test_begin_inside_a_batch_is_a_protocol_error() -> None:
    assembler = BatchAssembler()
    assembler.begin(agent_pb2.BeginBatch())
    with pytest.raises(ProtocolError, match="BeginBatch"):
        assembler.begin(agent_pb2.BeginBatch())


def test_point_outside_a_batch_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        BatchAssembler().point(agent_pb2.Point())


# --- Info -------------------------------------------------------------------------------


def test_info_from_info_response() -> None:
    response = through_bytes(
        agent_pb2.InfoResponse(
            wants=agent_pb2.STREAM,
            provides=agent_pb2.BATCH,
            options={
                "field": agent_pb2.OptionInfo(valueTypes=[agent_pb2.STRING]),
                "window": agent_pb2.OptionInfo(valueTypes=[agent_pb2.DURATION, agent_pb2.INT]),
                "flag": agent_pb2.OptionInfo(),
            },
        )
    )
    info = info_from_message(response)
    assert udf.Info is Info
    assert info.wants == agent_pb2.STREAM and info.provides == agent_pb2.BATCH
    assert set(info.options) == {"field", "window", "flag"}
    assert list(info.options["window"].valueTypes) == [agent_pb2.DURATION, agent_pb2.INT]
    assert all(isinstance(o, agent_pb2.OptionInfo) for o in info.options.values())
    assert info == Info(
        agent_pb2.STREAM,
        agent_pb2.BATCH,
        {
            "field": agent_pb2.OptionInfo(valueTypes=[agent_pb2.STRING]),
            "window": agent_pb2.OptionInfo(valueTypes=[agent_pb2.DURATION, agent_pb2.INT]),
            "flag": agent_pb2.OptionInfo(),
        },
    )
    # The Info owns its options: later changes to the message do not leak in.
    response.options["field"].valueTypes.append(agent_pb2.BOOL)
    assert list(info.options["field"].valueTypes) == [agent_pb2.STRING]
    assert "STREAM" in repr(info) and "BATCH" in repr(info) and "DURATION" in repr(info)


def test_info_without_options() -> None:
    info = info_from_message(agent_pb2.InfoResponse(wants=agent_pb2.BATCH, provides=agent_pb2.STREAM))
    assert info == Info(agent_pb2.BATCH, agent_pb2.STREAM, {})
    assert Info(agent_pb2.BATCH, agent_pb2.STREAM).options == {}
    assert info != Info(agent_pb2.STREAM, agent_pb2.STREAM)


def test_batch_assembler_eof() -> None:
    assembler = BatchAssembler()
    assembler.eof()  # nothing open: fine
    assembler.begin(agent_pb2.BeginBatch())
    assembler.point(agent_pb2.Point(time=1))
    assembler.point(agent_pb2.Point(time=2))
    with pytest.raises(ProtocolError, match=r"inside a batch \(2 points"):
        assembler.eof()
    assert not assembler.in_batch


# --- ResponseDecoder ---------------------------------------------------------------------


def payloads(*responses: Any) -> list[bytes]:
    """Serialized ``agent_pb2.Response`` messages, built from ``(kind, message)`` pairs or raw bytes."""
    out = []
    for r in responses:
        out.append(r if isinstance(r, bytes) else agent_pb2.Response(**{r[0]: r[1]}).SerializeToString())
    return out


def pb_point(time: int, **kwargs: Any) -> Any:
    """An ``agent_pb2.Point`` at ``time``."""
    return agent_pb2.Point(time=time, **kwargs)


def test_response_decoder_groups_points_and_keeps_stream_order() -> None:
    decoder = ResponseDecoder()
    info = agent_pb2.InfoResponse(wants=agent_pb2.BATCH)
    events, error = decoder.decode(
        payloads(
            ("point", pb_point(1, name="a")),
            ("point", pb_point(2, name="b")),
            ("begin", agent_pb2.BeginBatch(byName=True)),
            ("point", pb_point(10, fieldsInt={"n": 1})),
            ("end", agent_pb2.EndBatch(name="b1", tmax=10)),
            ("point", pb_point(3)),
            ("keepalive", agent_pb2.KeepaliveResponse(time=5)),  # an event, but does not split a run
            ("point", pb_point(4)),
            ("info", info),
            ("point", pb_point(5)),
        )
    )
    assert error is None
    assert [kind for kind, _ in events] == [POINTS, BATCH, POINTS, "keepalive", "info", POINTS]
    assert events[0][0] is POINTS and events[1][0] is BATCH  # the server compares with ``is``
    assert [p.time for p in events[0][1]] == [1, 2] and events[0][1][0].name == "a"
    assert events[1][1] == Batch(name="b1", tmax=10, by_name=True, points=[BatchPoint(time=10, fields={"n": 1})])
    assert [p.time for p in events[2][1]] == [3, 4]
    assert events[3][1].keepalive.time == 5
    assert events[4][1].info == info
    assert [p.time for p in events[5][1]] == [5]


@pytest.mark.parametrize("kind", ["info", "init", "snapshot", "restore"])
def test_response_decoder_passes_request_answers_through(kind: str) -> None:
    messages = {
        "info": agent_pb2.InfoResponse(),
        "init": agent_pb2.InitResponse(success=True),
        "snapshot": agent_pb2.SnapshotResponse(snapshot=b"\x00state"),
        "restore": agent_pb2.RestoreResponse(error="bad"),
    }
    events, error = ResponseDecoder().decode(payloads((kind, messages[kind])))
    assert error is None
    [(got_kind, response)] = events
    assert got_kind == kind
    assert getattr(response, kind) == messages[kind]


def test_response_decoder_assembles_a_batch_across_calls() -> None:
    decoder = ResponseDecoder()
    assert decoder.decode(payloads(("begin", agent_pb2.BeginBatch()))) == ([], None)
    assert decoder.decode(payloads(("point", pb_point(1)), ("point", pb_point(2)))) == ([], None)
    events, error = decoder.decode(payloads(("end", agent_pb2.EndBatch(name="x", group="g", tags={"t": "v"}))))
    assert error is None
    assert events == [
        (BATCH, Batch(name="x", group="g", tags={"t": "v"}, points=[BatchPoint(time=1), BatchPoint(time=2)]))
    ]
    decoder.eof()  # the batch was closed


def test_response_decoder_eof_inside_a_batch() -> None:
    decoder = ResponseDecoder()
    decoder.decode(payloads(("begin", agent_pb2.BeginBatch()), ("point", pb_point(1))))
    with pytest.raises(ProtocolError, match="inside a batch"):
        decoder.eof()


def test_response_decoder_agent_error_keeps_what_came_before() -> None:
    events, error = ResponseDecoder().decode(
        payloads(
            ("point", pb_point(1)),
            ("error", agent_pb2.ErrorResponse(error="boom: bad input")),
            ("point", pb_point(2)),  # after the error: not decoded
        )
    )
    assert isinstance(error, AgentError) and str(error) == "boom: bad input"
    assert [(kind, [p.time for p in item]) for kind, item in events] == [(POINTS, [1])]


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"\x0a\x05ab", "undecodable Response"),
        (b"", "no known message set"),
        (agent_pb2.Response(end=agent_pb2.EndBatch()).SerializeToString(), "EndBatch received without a BeginBatch"),
    ],
    ids=["undecodable", "empty-oneof", "end-without-begin"],
)
def test_response_decoder_protocol_errors(bad: bytes, message: str) -> None:
    events, error = ResponseDecoder().decode(payloads(("point", pb_point(7))) + [bad])
    assert isinstance(error, ProtocolError)
    assert message in str(error)
    assert [kind for kind, _ in events] == [POINTS]


def test_response_decoder_begin_inside_a_batch() -> None:
    events, error = ResponseDecoder().decode(
        payloads(("begin", agent_pb2.BeginBatch()), ("begin", agent_pb2.BeginBatch()))
    )
    assert isinstance(error, ProtocolError) and "BeginBatch" in str(error)
    assert events == []
