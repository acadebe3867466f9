"""The command-line tool (udf.cli, ``python -m udf``) and its line protocol adapter.

Unit tests cover line protocol parsing/formatting, option typing and batching;
the rest run real agents as child processes: a probe agent written here (it echoes
what it receives together with the init options it saw, and fails on demand) and
the bundled examples, through ``main()`` in-process and ``python -m udf`` as a
real subprocess.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import agent_pb2
from udf import Info
from udf.cli import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_UDF_FAILED,
    EXIT_USAGE,
    Batcher,
    CLIError,
    build_options,
    describe_options,
    group_id,
    parse_option_text,
    parse_option_value,
    to_stream_point,
)
from udf.lineprotocol import (
    MAX_TIME,
    MIN_TIME,
    LineProtocolError,
    ParsedLine,
    format_line,
    parse_line,
    read_lines,
)
from udf.options import Nanoseconds
from udf.options import build_options as udf_build_options

from ..helpers import AGENTS, ROOT, TIMEOUT, buffered_stdout_env, end_process, run_in_thread, run_main

EXAMPLES = ROOT / "examples"
CPU_LP = EXAMPLES / "data" / "cpu.lp"
PY = sys.executable


@pytest.fixture(scope="module")
def probe() -> Path:
    return AGENTS / "probe.py"


def cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m udf`` as a real subprocess."""
    return subprocess.run(
        [PY, "-m", "udf", *args], input=stdin, capture_output=True, timeout=TIMEOUT, cwd=ROOT, env=env, **kwargs
    )


def parse_output(text: str) -> list[ParsedLine]:
    points = []
    for line in text.splitlines():
        p = parse_line(line)
        assert p is not None, line
        points.append(p)
    return points


# --- line protocol: parsing ------------------------------------------------------------


def test_parse_line_value_types() -> None:
    p = parse_line(
        'cpu,host=a f=1.5,g=-2e3,h=3,i=42i,j=-9223372036854775808i,s="x",t=t,u=TRUE,v=False,w=f 1500000000000000000'
    )
    assert p is not None
    assert p.measurement == "cpu" and p.tags == {"host": "a"} and p.time == 1_500_000_000_000_000_000
    assert p.fields == {
        "f": 1.5,
        "g": -2000.0,
        "h": 3.0,
        "i": 42,
        "j": -(1 << 63),
        "s": "x",
        "t": True,
        "u": True,
        "v": False,
        "w": False,
    }
    assert type(p.fields["h"]) is float and type(p.fields["i"]) is int and type(p.fields["t"]) is bool


@pytest.mark.parametrize(
    "spelling, value",
    [(s, True) for s in ("t", "T", "true", "True", "TRUE")]
    + [(s, False) for s in ("f", "F", "false", "False", "FALSE")],
)
def test_parse_line_boolean_spellings(spelling: str, value: bool) -> None:
    p = parse_line(f"m b={spelling} 1")
    assert p is not None and p.fields == {"b": value}


def test_parse_line_escapes() -> None:
    line = r'my\ meas\,x,tag\ key=a\ b\,c\=d,t2=plain f\ k\=1\,2="he said \"hi\", a\\b c=d" 7'
    p = parse_line(line)
    assert p is not None
    assert p.measurement == "my meas,x"
    assert p.tags == {"tag key": "a b,c=d", "t2": "plain"}
    assert p.fields == {"f k=1,2": 'he said "hi", a\\b c=d'}
    assert p.time == 7


def test_read_lines_numbers_lines_skips_comments_and_reports_the_bad_one() -> None:
    text = b"# header\n\ncpu v=1 1\n   \ncpu v=2 2\ncpu v= 3\ncpu v=4 4\n"
    seen = []
    with pytest.raises(LineProtocolError) as info:
        for lineno, p in read_lines(io.BytesIO(text), source="in.lp"):
            seen.append((lineno, p.fields["v"]))
    assert seen == [(3, 1.0), (5, 2.0)]
    err = info.value
    assert (err.source, err.lineno, err.line) == ("in.lp", 6, "cpu v= 3")
    assert str(err).startswith("in.lp:6: bad line protocol: ") and str(err).endswith(": cpu v= 3")


def test_a_binary_bad_line_is_quoted_escaped_and_short() -> None:
    line = "cpu v=\x00\x1b[2J" + "\x00" * 500
    err = LineProtocolError("in.lp", 1, "bad", line)
    assert "\x00" not in str(err) and "\x1b" not in str(err)
    assert str(err).endswith(": 'cpu v=\\x00\\x1b[2J" + "\\x00" * 29 + "'...")  # 40 characters


def test_missing_timestamp_gets_the_read_time() -> None:
    clock = iter([111, 222])
    points = list(read_lines(["m v=1", "m v=2 5", "m v=3"], now=lambda: next(clock)))
    assert [p.time for _, p in points] == [111, 5, 222]


def test_precision_scales_timestamps() -> None:
    assert parse_line("m v=1 3", precision="s").time == 3_000_000_000  # type: ignore[union-attr]
    assert parse_line("m v=1 3", precision="ms").time == 3_000_000  # type: ignore[union-attr]
    assert parse_line("m v=1 3", precision="u").time == 3_000  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="does not fit in int64"):
        parse_line("m v=1 9223372037", precision="s")


@pytest.mark.parametrize(
    "line, reason",
    [
        ("m v=18446744073709551615u", "does not fit in int64"),
        ("m v=9223372036854775808i", "failed to parse"),
        ("m", "failed to parse"),
        ("m v=1 abc", "failed to parse"),
        ('m v="open', "failed to parse"),
        ("m,t= v=1", "failed to parse"),
    ],
)
def test_parse_line_errors(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_line(line)


def test_invalid_utf8_is_a_bad_line_with_its_number() -> None:
    with pytest.raises(LineProtocolError, match=r"^<stdin>:2: bad line protocol: not valid UTF-8"):
        list(read_lines(io.BytesIO(b"m v=1 1\nm,t=\xff v=1 2\n")))


# --- line protocol: writing --------------------------------------------------------------


def test_format_line_values_and_order() -> None:
    fields: dict[str, Any] = {"s": 'q"\\', "i": 3, "f": 1.0, "b": True, "c": False, "e": 1e-07}
    line = format_line("cpu", {"z": "1", "a": "2", "empty": ""}, fields, 99)
    assert line == 'cpu,a=2,z=1 b=true,c=false,e=1e-07,f=1.0,i=3i,s="q\\"\\\\" 99'


def test_format_line_writes_line_breaks_in_strings_as_is() -> None:
    # InfluxDB reads a line break inside a quoted string field; this tool reads line by line.
    assert format_line("m", {}, {"s": "a\nb"}, 1) == 'm s="a\nb" 1'


def test_format_line_escapes() -> None:
    line = format_line("a b,c=d", {"k ,=": "v ,="}, {"f ,=": "x y,z=w"}, 1)
    assert line == r'a\ b\,c=d,k\ \,\==v\ \,\= f\ \,\=="x y,z=w" 1'


@pytest.mark.parametrize(
    "name, tags, fields, match",
    [
        ("m", {}, {}, "without fields"),
        ("", {}, {"f": 1}, "measurement is empty"),
        ("#m", {}, {"f": 1}, "starts with '#'"),
        ("m", {"t": "a\nb"}, {"f": 1}, "line break"),
        ("m", {"t": "ends\\"}, {"f": 1}, "ends with a backslash"),
        ("m", {"": "v"}, {"f": 1}, "tag key is empty"),
        ("m", {}, {"f": math.nan}, "cannot be written"),
        ("m", {}, {"f": math.inf}, "cannot be written"),
        ("\tm", {}, {"f": 1}, "starts with a tab"),
        ("m", {}, {"\tf": 1, "g": 2}, "starts with a tab"),
        ("m", {}, {"a\\,b": 1}, "backslash before"),
        ("m", {}, {"a\\ b": 1}, "backslash before"),
        ("m", {"t": "a\0"}, {"f": 1}, "NUL"),
        ("m", {}, {"f": "a\0"}, "NUL"),
    ],
)
def test_format_line_rejects_what_line_protocol_cannot_carry(
    name: str, tags: dict[str, str], fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        format_line(name, tags, fields, 1)


def test_format_line_rejects_times_outside_influxdbs_range() -> None:
    for t in (MIN_TIME - 1, MAX_TIME + 1, -(1 << 63), (1 << 63) - 1):
        with pytest.raises(ValueError, match="outside InfluxDB's range"):
            format_line("m", {}, {"f": 1}, t)


ROUND_TRIPS = [
    ("cpu", {"host": "a"}, {"v": 1.5}, 1),
    ("a b,c", {"t k": "v,=w", "x=y": "a b"}, {"f k": 'say "hi"', "g": -3, "h": True}, 5),
    ("m", {"t": "back\\slash"}, {"s": "trailing\\", "q": '\\"', "e": ""}, 0),
    ("m", {"t": "a\\,b", "u": "a\\=b", "w": "a\\ b"}, {"f": 9_223_372_036_854_775_807, "g": -(1 << 63)}, -1),
    ("m\u00e9", {"ta\u00ef": "\u65e5\u672c"}, {"f": 1e300, "g": -0.0, "h": 2.2250738585072014e-308}, 17 * 10**17),
    ("m", {}, {"f": 1.7976931348623157e308, "g": 0.1}, MAX_TIME),
    ("m", {}, {"f": -1.5}, MIN_TIME),
]


@pytest.mark.parametrize("name, tags, fields, t", ROUND_TRIPS)
def test_format_then_parse_round_trips(name: str, tags: dict[str, str], fields: dict[str, Any], t: int) -> None:
    p = parse_line(format_line(name, tags, fields, t))
    assert p is not None
    assert (p.measurement, p.tags, p.fields, p.time) == (name, tags, fields, t)
    assert {k: type(v) for k, v in p.fields.items()} == {k: type(v) for k, v in fields.items()}


_ident = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r\0"), min_size=1, max_size=12
).filter(lambda s: not s.endswith("\\"))
_field_value = st.one_of(
    # Subnormal floats are left out: the parser refuses them (InfluxDB reads them).
    st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.booleans(),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=20),
)
_field_key = _ident.filter(lambda s: not re.search(r"\\[,= ]", s) and not s.startswith("\t"))


@settings(max_examples=300, deadline=None)
@given(
    name=_ident.filter(lambda s: not s.startswith(("#", "\t"))),
    tags=st.dictionaries(_ident, _ident, max_size=4),
    fields=st.dictionaries(_field_key, _field_value, min_size=1, max_size=5),
    t=st.integers(min_value=MIN_TIME, max_value=MAX_TIME),
)
def test_round_trip_property(name: str, tags: dict[str, str], fields: dict[str, Any], t: int) -> None:
    # Line protocol is line based: a string field with a line break is written (InfluxDB
    # reads it) but cannot be read back line by line.
    assume(not any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in fields.values()))
    line = format_line(name, tags, fields, t)
    p = parse_line(line)
    assert p is not None, line
    assert (p.measurement, p.tags, p.time) == (name, tags, t), line
    assert p.fields == fields, line
    assert {k: type(v) for k, v in p.fields.items()} == {k: type(v) for k, v in fields.items()}


# --- option typing -----------------------------------------------------------------------

T = agent_pb2


def probe_info(wants: int = T.STREAM) -> Info:
    options = {}
    for name, types in {
        "i": [T.INT],
        "d": [T.DOUBLE],
        "b": [T.BOOL],
        "s": [T.STRING],
        "dur": [T.DURATION],
        "pair": [T.INT, T.STRING],
        "flag": [],
    }.items():
        options[name] = T.OptionInfo(valueTypes=types)
    return Info(wants, wants, options)


@pytest.mark.parametrize(
    "text, value_type, field, expected",
    [
        ("42", T.INT, "intValue", 42),
        ("-9223372036854775808", T.INT, "intValue", -(1 << 63)),
        ("+7", T.INT, "intValue", 7),
        ("1.5", T.DOUBLE, "doubleValue", 1.5),
        ("2", T.DOUBLE, "doubleValue", 2.0),
        ("-2.5e-3", T.DOUBLE, "doubleValue", -0.0025),
        ("true", T.BOOL, "boolValue", True),
        ("FALSE", T.BOOL, "boolValue", False),
        ("a, b=c", T.STRING, "stringValue", "a, b=c"),
        ("", T.STRING, "stringValue", ""),
        ("10s", T.DURATION, "durationValue", 10 * 10**9),
        ("1m30s", T.DURATION, "durationValue", 90 * 10**9),
        ("500ms", T.DURATION, "durationValue", 500 * 10**6),
        ("1d", T.DURATION, "durationValue", 86_400 * 10**9),
        ("2w", T.DURATION, "durationValue", 14 * 86_400 * 10**9),
        ("5u", T.DURATION, "durationValue", 5_000),
        ("1500ns", T.DURATION, "durationValue", 1_500),  # finer than a timedelta: exact all the same
    ],
)
def test_parse_option_value(text: str, value_type: int, field: str, expected: Any) -> None:
    value = parse_option_value(text, value_type)
    assert value.type == value_type
    assert value.WhichOneof("value") == field
    assert getattr(value, field) == expected


@pytest.mark.parametrize(
    "text, value_type, match",
    [
        ("ten", T.INT, "is not an INT"),
        ("1.0", T.INT, "is not an INT"),
        ("9223372036854775808", T.INT, "does not fit"),
        ("1_000", T.INT, "is not an INT"),
        ("nan", T.DOUBLE, "is not a DOUBLE"),
        ("1,5", T.DOUBLE, "is not a DOUBLE"),
        ("yes", T.BOOL, "is not a BOOL"),
        ("1", T.BOOL, "is not a BOOL"),
        ("10", T.DURATION, "missing unit"),
        ("10y", T.DURATION, "unknown unit"),
    ],
)
def test_parse_option_value_errors(text: str, value_type: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_option_value(text, value_type)


def test_cli_options_are_typed_by_udf_options_rule() -> None:
    """The -o texts become Python values, and udf.options (init()'s rule) makes the same options of them."""
    specs = ["i=-3", "d=2", "b=TRUE", "s=x,y", "dur=1m30s", "pair=7,x", "flag"]
    from_cli = build_options(specs, probe_info())
    from_python = udf_build_options(
        {"i": -3, "d": 2.0, "b": True, "s": "x,y", "dur": datetime.timedelta(seconds=90), "pair": [7, "x"], "flag": []}
    )
    assert from_cli == from_python
    assert parse_option_text("1500ns", T.DURATION) == Nanoseconds(1500)
    assert type(parse_option_text("2", T.DOUBLE)) is float and type(parse_option_text("2", T.INT)) is int


def test_build_options_types_every_value_and_keeps_order() -> None:
    options = build_options(["i=1", "pair=7,x,y", "flag", "i=2", "s=a,b"], probe_info())
    assert [o.name for o in options] == ["i", "pair", "flag", "i", "s"]
    assert [(v.type, v.intValue) for v in options[0].values] == [(T.INT, 1)]
    assert [v.WhichOneof("value") for v in options[1].values] == ["intValue", "stringValue"]
    # The last value keeps the commas.
    assert (options[1].values[0].intValue, options[1].values[1].stringValue) == (7, "x,y")
    assert list(options[2].values) == []
    assert options[3].values[0].intValue == 2  # repeated, as a repeated TICKscript property
    assert options[4].values[0].stringValue == "a,b"  # one STRING: no splitting


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            "size=3",
            r"^unknown option 'size'; the UDF's options are: b \(BOOL\), d \(DOUBLE\), dur \(DURATION\), "
            r"flag \(no value\), i \(INT\), pair \(INT, STRING\), s \(STRING\)$",
        ),
        ("i=x", r"^option 'i': 'x' is not an INT .*; the UDF's options are: b \(BOOL\)"),
        ("i", r"^option 'i' needs a value: -o i=VALUE; the UDF's options are"),
        (
            "pair=7",
            r"^unexpected number of args to pair, got 1 expected 2 \(comma-separated INT, STRING\); the UDF's options",
        ),
        ("flag=1", r"^option 'flag' takes no value, got '1'"),
        ("=1", r"^bad option '=1': expected NAME=VALUE"),
    ],
)
def test_build_options_errors_list_the_udfs_options(spec: str, match: str) -> None:
    with pytest.raises(CLIError, match=match) as info:
        build_options([spec], probe_info())
    assert info.value.code == EXIT_USAGE


def test_describe_options_without_options() -> None:
    assert describe_options(Info(T.STREAM, T.STREAM, {})) == "none"


# --- grouping and batching ----------------------------------------------------------------


def pl(name: str, tags: dict[str, str], t: int, v: float = 1.0) -> ParsedLine:
    return ParsedLine(name, dict(tags), {"v": v}, t)


def test_group_id_is_kapacitors() -> None:
    tags = {"host": "a", "cpu": "0", "other": "x"}
    assert group_id("cpu", tags, ["cpu", "host"]) == "cpu\ncpu=0,host=a"
    assert group_id("cpu", tags, ["cpu", "host"], by_name=False) == "cpu=0,host=a"
    assert group_id("cpu", tags, []) == "cpu"
    assert group_id("cpu", tags, [], by_name=False) == ""


def test_stream_points_are_grouped_by_measurement_and_tags() -> None:
    p = to_stream_point(pl("cpu", {"host": "a", "cpu": "0"}, 5), None)
    assert (p.name, p.group) == ("cpu", "cpu\ncpu=0,host=a")
    assert (p.dimensions.by_name, p.dimensions.tag_names) == (True, ["cpu", "host"])
    assert (p.tags, p.fields, p.time) == ({"host": "a", "cpu": "0"}, {"v": 1.0}, 5)
    q = to_stream_point(pl("cpu", {"host": "a", "cpu": "0"}, 5), ["host"])
    assert (q.group, q.dimensions.tag_names, q.tags) == ("cpu\nhost=a", ["host"], {"host": "a", "cpu": "0"})
    r = to_stream_point(pl("cpu", {"host": "a"}, 5), [])
    assert (r.group, r.dimensions.tag_names) == ("cpu", [])


def test_batcher_whole_input_one_batch_per_group_in_first_seen_order() -> None:
    b = Batcher()
    assert b.add(pl("cpu", {"h": "b"}, 3)) == []
    assert b.add(pl("cpu", {"h": "a"}, 1)) == []
    assert b.add(pl("mem", {"h": "a"}, 2)) == []
    assert b.add(pl("cpu", {"h": "b"}, 2)) == []
    batches = b.flush()
    assert [(x.name, x.group, x.tags, x.by_name, x.tmax, [p.time for p in x.points]) for x in batches] == [
        ("cpu", "cpu\nh=b", {"h": "b"}, True, 3, [3, 2]),
        ("cpu", "cpu\nh=a", {"h": "a"}, True, 1, [1]),
        ("mem", "mem\nh=a", {"h": "a"}, True, 2, [2]),
    ]
    assert batches[0].points[0].tags == {"h": "b"} and batches[0].points[0].fields == {"v": 1.0}
    assert b.flush() == []


def test_batcher_size_emits_full_batches() -> None:
    b = Batcher(size=2)
    out = []
    for t in range(5):
        out += b.add(pl("m", {}, t))
    out += b.flush()
    assert [[p.time for p in x.points] for x in out] == [[0, 1], [2, 3], [4]]


def test_batcher_period_cuts_at_aligned_windows() -> None:
    b = Batcher(period=10)
    out: list[Any] = []
    for host, t in [("a", 1), ("b", 2), ("a", 9), ("a", 10), ("b", 15), ("a", 25), ("b", 21)]:
        out += [(x.tags["host"], [p.time for p in x.points]) for x in b.add(pl("m", {"host": host}, t))]
    out += [(x.tags["host"], [p.time for p in x.points]) for x in b.flush()]
    assert out == [("a", [1, 9]), ("b", [2]), ("a", [10]), ("b", [15]), ("a", [25]), ("b", [21])]


def test_batcher_group_by_subset_keeps_point_tags() -> None:
    b = Batcher(group_by=["host"])
    b.add(pl("m", {"host": "a", "cpu": "0"}, 1))
    b.add(pl("m", {"host": "a", "cpu": "1"}, 2))
    (batch,) = b.flush()
    assert (batch.group, batch.tags) == ("m\nhost=a", {"host": "a"})
    assert [p.tags for p in batch.points] == [{"host": "a", "cpu": "0"}, {"host": "a", "cpu": "1"}]


# --- the tool in-process, against a real probe agent ----------------------------------------


def probe_cmd(probe: Path, *extra: str) -> list[str]:
    return ["--", PY, str(probe), *extra]


def test_run_stream_types_options_from_the_udfs_info(probe: Path) -> None:
    args = [
        "run",
        "-o",
        "i=42",
        "-o",
        "d=1.5",
        "-o",
        "b=TRUE",
        "-o",
        "s=a, b",
        "-o",
        "dur=1m30s",
        "-o",
        "pair=7,x,y",
        "-o",
        "flag",
        "-o",
        "i=-1",
    ]
    code, out, err = run_main(args + probe_cmd(probe), b"cpu,host=a v=1 10\ncpu,host=b v=2 20\n")
    assert code == EXIT_OK, err
    points = parse_output(out)
    assert [(p.measurement, p.tags, p.fields["v"], p.time) for p in points] == [
        ("cpu", {"host": "a"}, 1.0, 10),
        ("cpu", {"host": "b"}, 2.0, 20),
    ]
    assert json.loads(str(points[0].fields["opts"])) == [
        ["i", ["INT", 42]],
        ["d", ["DOUBLE", 1.5]],
        ["b", ["BOOL", True]],
        ["s", ["STRING", "a, b"]],
        ["dur", ["DURATION", 90_000_000_000]],
        ["pair", ["INT", 7], ["STRING", "x,y"]],
        ["flag"],
        ["i", ["INT", -1]],
    ]
    assert points[0].fields["group"] == "cpu/host=a"  # Kapacitor's "cpu\nhost=a" (the probe shows \n as /)
    assert points[0].fields["dims"] == "host|byname"


def test_run_bad_option_exits_2_listing_the_options(probe: Path) -> None:
    code, out, err = run_main(["run", "-o", "size=10", *probe_cmd(probe)], b"m v=1 1\n")
    assert code == EXIT_USAGE and out == ""
    assert "udf: error: unknown option 'size'; the UDF's options are: b (BOOL), d (DOUBLE), dur (DURATION)" in err
    code, out, err = run_main(["run", "-o", "i=1.5", *probe_cmd(probe)], b"m v=1 1\n")
    assert code == EXIT_USAGE and "option 'i': '1.5' is not an INT" in err and "i (INT)" in err


def test_run_init_rejected_by_the_udf_exits_2(probe: Path) -> None:
    code, out, err = run_main(["run", "-o", "s=reject", *probe_cmd(probe)], b"m v=1 1\n")
    assert code == EXIT_USAGE and out == ""
    assert "udf: error: failed to initialize processes s must not be 'reject'; the UDF's options are: " in err


def test_run_bad_line_exits_3_after_writing_the_earlier_points(probe: Path) -> None:
    code, out, err = run_main(["run", *probe_cmd(probe)], b"m v=1 1\nm v=2 2\nm v=oops 3\nm v=4 4\n")
    assert code == EXIT_BAD_INPUT
    assert [p.fields["v"] for p in parse_output(out)] == [1.0, 2.0]
    assert "udf: error: <stdin>:3: bad line protocol: " in err and err.rstrip().endswith("m v=oops 3")


def test_run_udf_error_response_exits_1(probe: Path) -> None:
    code, out, err = run_main(["run", *probe_cmd(probe)], b'm v=1 1\nm fail="yes" 2\nm v=3 3\n')
    assert code == EXIT_UDF_FAILED
    assert "udf: error: the UDF failed: error processing request of type point: failing on purpose" in err


def test_run_udf_crash_exits_1_with_its_exit_status(probe: Path) -> None:
    code, out, err = run_main(["run", *probe_cmd(probe)], b'm v=1 1\nm crash="now" 2\n')
    assert code == EXIT_UDF_FAILED
    assert "udf: error: the UDF failed: process exited unexpectedly: exit status 3" in err
    assert "E! crashing on purpose" in err  # its stderr, logged with its level
    assert "last stderr lines" not in err  # already shown as it came
    code, out, err = run_main(["run", "-q", *probe_cmd(probe)], b'm crash="now" 1\n')
    assert code == EXIT_UDF_FAILED
    assert "exit status 3\nlast stderr lines:\nE! crashing on purpose" in err  # -q hides INFO lines: show the tail


def test_run_batch_groups_and_merges_batch_tags(probe: Path) -> None:
    data = b"cpu,host=a,cpu=0 v=1 1\ncpu,host=b,cpu=0 v=2 2\ncpu,host=a,cpu=1 v=3 3\nmem,host=a v=4 4\n"
    code, out, err = run_main(["run", "--batch", "--group-by", "host", *probe_cmd(probe, "--batch-mode")], data)
    assert code == EXIT_OK, err
    rows = [
        (p.measurement, p.tags, p.fields["v"], p.fields["bgroup"], p.fields["bsize"], p.fields["tmax"])
        for p in parse_output(out)
    ]
    # The probe strips point tags: what is left are the batch's (group-by) tags.
    assert rows == [
        ("cpu", {"host": "a"}, 1.0, "cpu/host=a", 2, 3),
        ("cpu", {"host": "a"}, 3.0, "cpu/host=a", 2, 3),
        ("cpu", {"host": "b"}, 2.0, "cpu/host=b", 1, 2),
        ("mem", {"host": "a"}, 4.0, "mem/host=a", 1, 4),
    ]
    code, out, err = run_main(["run", "--batch-size", "1", *probe_cmd(probe, "--batch-mode")], data)
    assert code == EXIT_OK, err
    assert [p.fields["bsize"] for p in parse_output(out)] == [1, 1, 1, 1]
    assert [p.tags for p in parse_output(out)][0] == {"host": "a", "cpu": "0"}  # group-by * : all tags


def test_run_mode_mismatch_and_usage_errors_exit_2(probe: Path, tmp_path: Path) -> None:
    code, _, err = run_main(["run", "--batch", *probe_cmd(probe)], b"")
    assert code == EXIT_USAGE and "--batch given, but the UDF wants a stream" in err
    code, _, err = run_main(["run", "--batch-size", "3", *probe_cmd(probe)], b"")
    assert code == EXIT_USAGE and "apply to batch UDFs" in err
    for args, message in [
        (["run"], "name exactly one UDF"),
        (["run", "--socket", "/x.sock", *probe_cmd(probe)], "name exactly one UDF"),
        (["run", "--function", "f", *probe_cmd(probe)], "--function needs --config"),
        (["run", "--timeout", "10", *probe_cmd(probe)], "missing unit"),
        (["run", "--batch-size", "0", *probe_cmd(probe)], "must be positive"),
        (["run", "--batch-size", "2", "--batch-period", "1m", *probe_cmd(probe)], "not both"),
        (["run", str(tmp_path / "none.lp"), *probe_cmd(probe)], "cannot read input: "),
        (["run", "--restore", str(tmp_path / "none.snap"), *probe_cmd(probe)], "cannot read snapshot: "),
        (["frobnicate"], "invalid choice"),
    ]:
        code, out, err = run_main(args)
        assert code == EXIT_USAGE, (args, err)
        assert message in err and err.startswith("udf: error: "), (args, err)


def test_snapshot_out_is_taken_after_all_input_and_restore_comes_first(probe: Path, tmp_path: Path) -> None:
    snap = tmp_path / "probe.snap"
    lines = b"".join(b"m v=%d %d\n" % (i, i) for i in range(3000))
    code, out, err = run_main(["run", "--snapshot-out", str(snap), *probe_cmd(probe)], lines)
    assert code == EXIT_OK, err
    assert snap.read_bytes() == b"3000"  # every point was handed over before the snapshot request
    code, out, err = run_main(["run", "--restore", str(snap), *probe_cmd(probe)], b"m v=1 1\nm v=2 2\n")
    assert code == EXIT_OK, err
    assert [p.fields["seen"] for p in parse_output(out)] == [3001, 3002]


def test_points_without_timestamp_get_the_current_time(probe: Path) -> None:
    before = time.time_ns()
    code, out, err = run_main(["run", *probe_cmd(probe)], b"m v=1\n")
    after = time.time_ns()
    assert code == EXIT_OK, err
    (p,) = parse_output(out)
    assert p.time is not None and before <= p.time <= after


def test_input_files_and_precision(probe: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.lp", tmp_path / "b.lp"
    a.write_text("m v=1 1\n")
    b.write_text("m v=2 2\nbroken\n")
    code, out, err = run_main(["run", str(a), "--precision", "s", str(b), *probe_cmd(probe)])  # intermixed
    assert code == EXIT_BAD_INPUT
    assert [p.time for p in parse_output(out)] == [1_000_000_000, 2_000_000_000]
    assert f"{b}:2: bad line protocol" in err


# --- python -m udf as a real subprocess, with the bundled examples ---------------------------


def test_e2e_info_prints_edges_and_options() -> None:
    result = cli("info", "--", PY, str(EXAMPLES / "moving_avg.py"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (
        "wants: stream\nprovides: stream\noptions:\n  as     STRING\n  field  STRING\n  size   INT\n"
    )
    result = cli("info", "--json", "--", PY, str(EXAMPLES / "outliers.py"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "wants": "batch",
        "provides": "batch",
        "options": {"field": ["STRING"], "scale": ["DOUBLE"]},
    }


def read_cpu() -> list[ParsedLine]:
    return [p for _, p in read_lines(CPU_LP.read_bytes().splitlines())]


def test_e2e_moving_average_on_the_sample_data() -> None:
    avg = ["--", PY, str(EXAMPLES / "moving_avg.py")]
    result = cli("run", "-o", "field=usage_user", "-o", "size=10", str(CPU_LP), *avg)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # not a terminal: no progress line
    got = [(p.tags["host"], p.time, p.fields["avg"]) for p in parse_output(result.stdout.decode())]
    # Expected, computed here: per host, the mean of the last 10 usage_user values once 10 are seen.
    expected = []
    windows: dict[str, list[float]] = {}
    for p in read_cpu():
        w = windows.setdefault(p.tags["host"], [])
        w.append(float(p.fields["usage_user"]))
        if len(w) >= 10:
            expected.append((p.tags["host"], p.time, math.fsum(w[-10:]) / 10))
    assert len(got) == len(expected) == 273
    assert [(h, t) for h, t, _ in got] == [(h, t) for h, t, _ in expected]
    assert all(math.isclose(float(g), e, rel_tol=1e-12) for (_, _, g), (_, _, e) in zip(got, expected, strict=True))


def _tukey_outliers(values: list[float], scale: float) -> list[int]:
    xs = sorted(values)
    n = len(xs)

    def median(s: list[float]) -> float:
        m = len(s) // 2
        return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2

    q1, q3 = median(xs[: n // 2]), median(xs[(n + 1) // 2 :])
    lo, hi = q1 - scale * (q3 - q1), q3 + scale * (q3 - q1)
    return [i for i, v in enumerate(values) if v < lo or v > hi]


def test_e2e_outliers_batches_on_the_sample_data() -> None:
    outliers = ["--", PY, str(EXAMPLES / "outliers.py")]
    result = cli("run", "--batch", "-o", "field=usage_user", *outliers, stdin=CPU_LP.read_bytes())
    assert result.returncode == 0, result.stderr
    got = parse_output(result.stdout.decode())
    # One batch per host (the whole input), in order of first appearance.
    expected: list[ParsedLine] = []
    by_host: dict[str, list[ParsedLine]] = {}
    for p in read_cpu():
        by_host.setdefault(p.tags["host"], []).append(p)
    for points in by_host.values():
        expected += [points[i] for i in _tukey_outliers([float(p.fields["usage_user"]) for p in points], 1.5)]
    assert expected, "the sample data should have outliers"

    def rows(points: list[ParsedLine]) -> list[Any]:
        return [(p.measurement, p.tags, p.fields, p.time) for p in points]

    assert rows(got) == rows(expected)


def test_e2e_snapshot_then_restore_equals_one_run(tmp_path: Path) -> None:
    lines = CPU_LP.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.lp", tmp_path / "second.lp"
    first.write_bytes(b"".join(lines[:140]))
    second.write_bytes(b"".join(lines[140:]))
    snap = tmp_path / "avg.snap"
    udf_args = ["--", PY, str(EXAMPLES / "moving_avg.py")]
    opts = ["-o", "field=usage_user", "-o", "size=10"]
    whole = cli("run", *opts, str(CPU_LP), *udf_args)
    part1 = cli("run", *opts, "--snapshot-out", str(snap), str(first), *udf_args)
    part2 = cli("run", *opts, "--restore", str(snap), str(second), *udf_args)
    assert (whole.returncode, part1.returncode, part2.returncode) == (0, 0, 0), part2.stderr
    assert json.loads(snap.read_bytes())["size"] == 10
    assert part1.stdout + part2.stdout == whole.stdout


@pytest.mark.slow
def test_e2e_errors_and_exit_codes(probe: Path) -> None:
    avg = ["--", PY, str(EXAMPLES / "moving_avg.py")]
    bad_option = cli("run", "-o", "field=usage_user", "-o", "size=ten", str(CPU_LP), *avg)
    assert bad_option.returncode == 2
    assert bad_option.stderr.decode() == (
        "udf: error: option 'size': 'ten' is not an INT (a decimal integer); "
        "the UDF's options are: as (STRING), field (STRING), size (INT)\n"
    )
    bad_line = cli("run", "-o", "field=v", "-o", "size=1", *avg, stdin=b"m v=1 1\nm v=1 2 3\n")
    assert bad_line.returncode == 3
    assert bad_line.stdout == b"m avg=1.0 1\n"
    assert bad_line.stderr.decode().startswith("udf: error: <stdin>:2: bad line protocol: ")
    crashed = cli("run", "--", PY, str(probe), stdin=b'm crash="1" 1\n')
    assert crashed.returncode == 1
    assert "udf: error: the UDF failed: process exited unexpectedly: exit status 3" in crashed.stderr.decode()
    missing = cli("info", "--", "/nonexistent/udf-program")
    assert missing.returncode == 1 and b"udf: error: cannot start the UDF: " in missing.stderr
    usage = cli()
    assert usage.returncode == 2 and b"usage: python -m udf" in usage.stderr
    assert cli("--help").returncode == 0


def on_a_terminal(*args: str, stdin: Any = subprocess.DEVNULL, feed: bytes = b"") -> tuple[int, str]:
    """Run ``python -m udf ARGS`` with its stderr on a pseudo-terminal; its exit code and what the terminal showed."""
    master, slave = pty.openpty()
    proc = None
    try:
        proc = subprocess.Popen(
            [PY, "-m", "udf", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave, stdin=stdin
        )
        os.close(slave)
        slave = -1
        if feed:
            assert proc.stdin is not None
            run_in_thread(lambda: (proc.stdin.write(feed), proc.stdin.close()))()  # type: ignore[union-attr]
        chunks = []
        while True:  # until the child (and its agent) closed the terminal
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(TIMEOUT)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        if proc is not None:
            end_process(proc)
    return code, b"".join(chunks).decode()


@pytest.mark.slow
def test_e2e_progress_on_a_terminal_reading_files() -> None:
    """Progress (lines read, rate, sent, written) appears on a terminal; not with -q, a pipe, or piped input."""
    avg = ["-o", "field=usage_user", "-o", "size=10"]
    udf_cmd = ["--", PY, str(EXAMPLES / "moving_avg.py")]
    half = EXAMPLES / "data" / "cpu.lp"
    code, shown = on_a_terminal("run", *avg, str(half), str(EXAMPLES / "data" / "hosts.lp"), *udf_cmd)
    assert code == 0, shown
    # 273 averages of the three hosts of cpu.lp, one for each of the 120 hosts of hosts.lp.
    final = shown.replace("\r\n", "\n").rsplit("\r", 1)[-1]  # the line is rewritten in place
    assert re.fullmatch(
        r"udf: 1,500 lines read \(100%\), [0-9.]+[kM]? lines/s, 1,500 sent, 393 points written \[\d\d:\d\d\]\n", final
    ), repr(shown)
    assert shown.startswith("\rudf: 0 lines read"), repr(shown[:80])

    code, shown = on_a_terminal("run", "-q", *avg, str(half), *udf_cmd)
    assert code == 0 and shown == "", "-q: no progress"
    code, shown = on_a_terminal("run", *avg, *udf_cmd, stdin=subprocess.PIPE, feed=half.read_bytes())
    assert code == 0 and shown == "", "input from a pipe: no progress"
    code, shown = on_a_terminal("run", *avg, "--no-progress", str(half), *udf_cmd)
    assert code == 0 and shown == ""
    piped = cli("run", *avg, str(half), *udf_cmd)
    assert piped.returncode == 0 and piped.stderr == b"", "stderr not a terminal: no progress"
    forced = cli("run", "--progress", *avg, *udf_cmd, stdin=half.read_bytes())
    assert forced.returncode == 0
    assert forced.stderr.decode().rsplit("\r", 1)[-1].startswith("udf: 300 lines read, "), "no percentage from a pipe"
    assert b"300 sent, 273 points written" in forced.stderr


def test_e2e_closed_stdout_exits_quietly() -> None:
    r, w = os.pipe()
    os.close(r)  # nobody will ever read: every write fails with EPIPE
    try:
        result = subprocess.run(
            [PY, "-m", "udf", "run", str(CPU_LP), "--", PY, str(EXAMPLES / "mirror.py")],
            cwd=ROOT,
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
        )
    finally:
        os.close(w)
    assert result.returncode == EXIT_BROKEN_PIPE
    assert b"Traceback" not in result.stderr


def test_e2e_socket_udf(tmp_path: Path) -> None:
    path = tmp_path / "mirror.sock"
    server = subprocess.Popen(
        [PY, str(EXAMPLES / "mirror.py"), "--socket", str(path)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        # The tool retries the connection until the server listens (bounded by --connect-timeout).
        data = b'm,t=a v=1i 1\nm,t=b s="x y" 2\n'
        result = cli("run", "--socket", str(path), "--connect-timeout", "10s", stdin=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b'm,t=a v=1i 1\nm,t=b s="x y" 2\n'
        info = cli("info", "--socket", str(path))
        assert info.returncode == 0 and info.stdout == b"wants: stream\nprovides: stream\noptions: none\n"
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=TIMEOUT)
    assert server.returncode == 0


def test_e2e_config_function(probe: Path, tmp_path: Path) -> None:
    conf = tmp_path / "kapacitor.conf"
    conf.write_text(
        "[udf]\n[udf.functions]\n"
        "  [udf.functions.probe]\n"
        f"    prog = {PY!r}\n"
        f"    args = [{str(probe)!r}]\n"
        '    timeout = "10s"\n'
        "    [udf.functions.probe.env]\n"
        '      PROBE_ENV = "configured"\n'
        "  [udf.functions.broken]\n"
        '    prog = "x"\n'
        '    timeout = "1ms"\n'
    )
    env = dict(os.environ, PROBE_PARENT="inherited")
    result = cli("run", "--config", str(conf), "--function", "probe", "-o", "i=3", stdin=b"m v=1 1\n", env=env)
    # The whole file is validated, as Kapacitor does at startup.
    assert result.returncode == 2
    assert result.stderr.decode() == f"udf: error: {conf}: UDF broken: timeout is too small: 1ms\n"
    conf.write_text(conf.read_text().replace('"1ms"', '"1s"'))
    result = cli("run", "--config", str(conf), "--function", "probe", "-o", "i=3", stdin=b"m v=1 1\n", env=env)
    assert result.returncode == 0, result.stderr
    (p,) = parse_output(result.stdout.decode())
    assert (p.fields["env"], p.fields["parent"]) == ("configured", "inherited")
    assert json.loads(str(p.fields["opts"])) == [["i", ["INT", 3]]]
    unknown = cli("info", "--config", str(conf), "--function", "prob")
    assert unknown.returncode == 2
    assert unknown.stderr.decode() == "udf: error: no such UDF prob (configured UDFs: broken, probe)\n"
    no_function = cli("info", "--config", str(conf))
    assert no_function.returncode == 2
    assert b"--config needs --function NAME (configured UDFs: probe, broken)" in no_function.stderr


def test_missing_cli_extra_is_a_clean_usage_error(probe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from udf import lineprotocol

    monkeypatch.setattr(lineprotocol, "_parser", None)
    monkeypatch.setitem(sys.modules, "line_protocol_parser", None)  # import now fails
    code, out, err = run_main(["run", *probe_cmd(probe)], b"m v=1 1\n")
    assert code == 2
    assert "needs the line-protocol-parser package: install the 'cli' extra: pip install '.[cli]' in a clone" in err
    assert "Traceback" not in err and out == ""


def test_e2e_answers_reach_a_pipe_while_input_is_still_open() -> None:
    """A filter in a pipeline: each answer is flushed once the UDF goes quiet, not at the end."""
    proc = subprocess.Popen(
        [PY, "-m", "udf", "run", "--", PY, str(EXAMPLES / "mirror.py")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=buffered_stdout_env(),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        for line in (b"cpu,host=a v=1.5 10\n", b"cpu,host=b v=2.5 20\n"):
            proc.stdin.write(line)
            proc.stdin.flush()
            # The input stays open: only the idle flush can bring the echo out now.
            assert run_in_thread(proc.stdout.readline)() == line
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()
        assert proc.stdout.read() == b""
    finally:
        end_process(proc)
