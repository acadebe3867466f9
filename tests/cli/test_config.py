"""udf.config: kapacitor.conf's [udf.functions.NAME] sections, Kapacitor's rules and messages.

Reference: Kapacitor's services/udf/config.go (Validate) and service.go (Create),
influxdb's toml.Duration and Go's time.ParseDuration / Duration.String.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import udf
from udf import config as udf_config
from udf.config import (
    Config,
    ConfigError,
    FunctionConfig,
    format_duration,
    load,
    loads,
    parse_duration,
)

from ..helpers import AGENTS, ROOT, TIMEOUT

SAMPLE = r"""
# A trimmed kapacitor.conf: other sections are ignored.
hostname = "localhost"
data_dir = "/var/lib/kapacitor"

[http]
  bind-address = ":9092"

[[influxdb]]
  enabled = true
  urls = ["http://localhost:8086"]

[udf]
[udf.functions]
    [udf.functions.movingAverage]
        prog = "/usr/bin/python3"
        args = ["-u", "/opt/udf/moving_avg.py"]
        timeout = "10s"
        [udf.functions.movingAverage.env]
            PYTHONPATH = "/opt/udf/lib"
            LEVEL = "debug"

    [udf.functions.outliers]
        prog = "/usr/local/bin/outliers"
        timeout = "1m30s"

    [udf.functions.sockAvg]
        socket = "/var/run/kapacitor/avg.sock"
        timeout = "500ms"
"""


def test_load_sample_with_several_functions(tmp_path: Path) -> None:
    path = tmp_path / "kapacitor.conf"
    path.write_text(SAMPLE)
    conf = load(path)
    assert conf.names() == ["movingAverage", "outliers", "sockAvg"]  # file order
    assert len(conf) == 3 and "outliers" in conf and "nope" not in conf
    avg = conf.function("movingAverage")
    assert avg == FunctionConfig(
        name="movingAverage",
        prog="/usr/bin/python3",
        args=("-u", "/opt/udf/moving_avg.py"),
        env={"PYTHONPATH": "/opt/udf/lib", "LEVEL": "debug"},
        timeout=10 * 10**9,
        socket="",
    )
    assert avg.timeout_seconds == 10.0 and not avg.is_socket
    outliers = conf.function("outliers")
    assert (outliers.prog, outliers.args, dict(outliers.env)) == ("/usr/local/bin/outliers", (), {})
    assert outliers.timeout == 90 * 10**9
    sock = conf.function("sockAvg")
    assert sock.is_socket and sock.socket == "/var/run/kapacitor/avg.sock"
    assert sock.timeout == 500 * 10**6 and sock.timeout_seconds == 0.5


def test_no_udf_section_means_no_functions() -> None:
    assert loads('hostname = "x"\n[http]\nbind-address = ":9092"\n').names() == []
    assert loads("[udf]\n[udf.functions]\n").names() == []


# --- validation: Kapacitor's rules and wording ------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ('prog = "/bin/udf"', "UDF f: timeout is too small: 0s"),  # no timeout at all
        ('prog = "/bin/udf"\ntimeout = ""', "UDF f: timeout is too small: 0s"),  # toml.Duration: empty = unset
        ('prog = "/bin/udf"\ntimeout = 0', "UDF f: timeout is too small: 0s"),  # a TOML number is read as text: "0"
        ('prog = "/bin/udf"\ntimeout = "1ms"', "UDF f: timeout is too small: 1ms"),  # <= 1ms, not < 1ms
        ('prog = "/bin/udf"\ntimeout = "999us"', "UDF f: timeout is too small: 999\u00b5s"),
        ('prog = "/bin/udf"\ntimeout = "-5s"', "UDF f: timeout is too small: -5s"),
        ('socket = "/s.sock"\nprog = "/bin/udf"\ntimeout = "10s"', "UDF f: both socket and process config provided"),
        ('socket = "/s.sock"\nargs = ["-v"]\ntimeout = "10s"', "UDF f: both socket and process config provided"),
        (
            'socket = "/s.sock"\ntimeout = "10s"\n[udf.functions.f.env]\nA = "1"',
            "UDF f: both socket and process config provided",
        ),
        ('timeout = "10s"', "UDF f: must set either prog or socket"),
        ('args = ["x"]\ntimeout = "10s"', "UDF f: must set either prog or socket"),
    ],
)
def test_validation_errors_use_kapacitors_messages(body: str, message: str) -> None:
    text = f"[udf.functions.f]\n{body}\n"
    with pytest.raises(ConfigError) as info:
        loads(text)
    assert str(info.value) == message
    assert isinstance(info.value, udf.UDFError)
    # validate=False loads what Kapacitor would decode, and validate() then says the same.
    conf = loads(text, validate=False)
    with pytest.raises(ConfigError, match=f"^{message}$"):
        conf.validate()


def test_function_validate_has_no_name_prefix() -> None:
    with pytest.raises(ConfigError, match="^must set either prog or socket$"):
        FunctionConfig(name="x", timeout=10**10).validate()
    FunctionConfig(name="x", prog="p", timeout=1_000_001).validate()  # just over 1ms is fine


def test_timeout_just_above_one_millisecond_is_valid() -> None:
    conf = loads('[udf.functions.f]\nprog = "p"\ntimeout = "1.001ms"\n')
    assert conf.function("f").timeout == 1_001_000


@pytest.mark.parametrize(
    "value, error",
    [
        ("10", 'time: missing unit in duration "10"'),  # TOML integer 10 -> "10", as BurntSushi/toml does
        ("1.5", 'time: missing unit in duration "1.500000"'),  # float -> "%f"
        ('"10 s"', 'time: unknown unit " s" in duration "10 s"'),
        ('"ten"', 'time: invalid duration "ten"'),
        ("true", 'time: invalid duration "true"'),
    ],
)
def test_timeout_decoding_errors(value: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(f'[udf.functions.f]\nprog = "p"\ntimeout = {value}\n')
    assert str(info.value) == f"UDF f: timeout: {error}"


@pytest.mark.parametrize(
    "body, message",
    [
        ("prog = 1", "UDF f: prog must be a string, got an integer"),
        ("socket = true", "UDF f: socket must be a string, got a boolean"),
        ('args = "-v"', "UDF f: args must be an array of strings"),
        ("args = [1]", "UDF f: args must be an array of strings"),
        ('env = "A=1"', "UDF f: env must be a table of strings"),
        ("env = {A = 1}", "UDF f: env must be a table of strings"),
    ],
)
def test_wrong_toml_types_are_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        loads(f'[udf.functions.f]\ntimeout = "10s"\n{body}\n')


def test_unknown_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="udf.config"):
        conf = loads('[udf.functions.f]\nprog = "p"\ntimeout = "10s"\narg = ["typo"]\n')
    assert conf.function("f").args == ()
    assert "UDF f: ignoring unknown keys arg" in caplog.text


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match=f"cannot read {missing}"):
        load(missing)
    bad = tmp_path / "bad.conf"
    bad.write_text("[udf.functions.f\n")
    with pytest.raises(ConfigError, match=f"^{bad}: invalid TOML: "):
        load(bad)
    invalid = tmp_path / "invalid.conf"
    invalid.write_text('[udf.functions.f]\ntimeout = "10s"\n')
    with pytest.raises(ConfigError, match=f"^{invalid}: UDF f: must set either prog or socket$"):
        load(invalid)


# --- durations ---------------------------------------------------------------------------

GO_DURATIONS = [
    ("0", 0),
    ("+0", 0),
    ("-0", 0),
    ("5s", 5 * 10**9),
    ("30s", 30 * 10**9),
    ("1478s", 1478 * 10**9),
    ("-5s", -5 * 10**9),
    ("+5s", 5 * 10**9),
    ("5.0s", 5 * 10**9),
    ("5.6s", 5_600_000_000),
    ("5.s", 5 * 10**9),
    (".5s", 500_000_000),
    ("1.0s", 10**9),
    ("1.004s", 1_004_000_000),
    ("100.00100s", 100_001_000_000),
    ("10ns", 10),
    ("11us", 11_000),
    ("12\u00b5s", 12_000),  # micro sign
    ("12\u03bcs", 12_000),  # Greek mu
    ("13ms", 13_000_000),
    ("14s", 14 * 10**9),
    ("15m", 15 * 60 * 10**9),
    ("16h", 16 * 3600 * 10**9),
    ("3h30m", (3 * 3600 + 30 * 60) * 10**9),
    ("10.5s4m", 4 * 60 * 10**9 + 10_500_000_000),
    ("-2m3.4s", -(2 * 60 * 10**9 + 3_400_000_000)),
    ("1h2m3s4ms5us6ns", 3600 * 10**9 + 2 * 60 * 10**9 + 3 * 10**9 + 4 * 10**6 + 5 * 10**3 + 6),
    ("39h9m14.425s", 140_954_425_000_000),
    ("52763797000ns", 52_763_797_000),
    ("0.3333333333333333333h", 1_200_000_000_000),  # Go's float fraction arithmetic
    ("9007199254.740993ms", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
]


@pytest.mark.parametrize("text, ns", GO_DURATIONS)
def test_parse_duration_matches_go(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "text, error",
    [
        ("", 'time: invalid duration ""'),
        ("3", 'time: missing unit in duration "3"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        ("-.", 'time: invalid duration "-."'),
        (".s", 'time: invalid duration ".s"'),
        ("+.s", 'time: invalid duration "+.s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1s2", 'time: missing unit in duration "1s2"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_parse_duration_errors_match_go(text: str, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == error


def test_parse_duration_extra_units() -> None:
    assert parse_duration("2d", {"d": 86_400 * 10**9}) == 2 * 86_400 * 10**9
    with pytest.raises(TypeError):
        parse_duration(10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0s"),
        (1, "1ns"),
        (1_100, "1.1\u00b5s"),
        (2_200_000, "2.2ms"),
        (3_300_000_000, "3.3s"),
        (4 * 60 * 10**9 + 5 * 10**9, "4m5s"),
        (4 * 60 * 10**9 + 5_001_000_000, "4m5.001s"),
        (5 * 3600 * 10**9 + 6 * 60 * 10**9 + 7_001_000_000, "5h6m7.001s"),
        (8 * 60 * 10**9 + 1, "8m0.000000001s"),
        (3600 * 10**9, "1h0m0s"),
        (10 * 10**9, "10s"),
        (90 * 10**9, "1m30s"),
        ((1 << 63) - 1, "2562047h47m16.854775807s"),
        (-(1 << 63), "-2562047h47m16.854775808s"),
        (-1_500_000, "-1.5ms"),
    ],
)
def test_format_duration_matches_go(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


# --- environment and create() ---------------------------------------------------------------


def test_environment_is_the_parent_environment_plus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UDF_TEST_PARENT", "parent")
    monkeypatch.setenv("UDF_TEST_SHARED", "from-parent")
    env_conf = {"UDF_TEST_SHARED": "from-config", "UDF_TEST_NEW": "new"}
    fc = FunctionConfig(name="f", prog="p", timeout=10**10, env=env_conf)
    env = fc.environment()
    assert env["UDF_TEST_PARENT"] == "parent"  # inherited
    assert env["UDF_TEST_SHARED"] == "from-config"  # the configured value wins, as the later entry in Go's Env
    assert env["UDF_TEST_NEW"] == "new"
    assert env["PATH"] == os.environ["PATH"]
    assert fc.environment({"ONLY": "this"}) == {"ONLY": "this", "UDF_TEST_SHARED": "from-config", "UDF_TEST_NEW": "new"}


class _Recorder:
    """Stands in for udf.Process / udf.Socket to see exactly what create() passes."""

    calls: list[dict[str, Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Recorder.calls.append({"args": args, "kwargs": kwargs})


def test_create_passes_kapacitors_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import udf.process
    import udf.socket

    monkeypatch.setattr(udf.process, "Process", _Recorder)
    monkeypatch.setattr(udf.socket, "Socket", _Recorder)
    monkeypatch.setenv("UDF_TEST_PARENT", "parent")
    _Recorder.calls = []
    conf = loads(SAMPLE)

    def abort() -> None:
        pass

    conf.create("movingAverage", abort_callback=abort)
    call = _Recorder.calls.pop()
    assert call["args"] == ("/usr/bin/python3", ("-u", "/opt/udf/moving_avg.py"))
    kwargs = call["kwargs"]
    assert kwargs["timeout"] == 10.0 and kwargs["abort_callback"] is abort
    assert kwargs["env"]["UDF_TEST_PARENT"] == "parent" and kwargs["env"]["PYTHONPATH"] == "/opt/udf/lib"

    conf.create("outliers")
    kwargs = _Recorder.calls.pop()["kwargs"]
    assert kwargs["env"] is None  # no env configured: inherit the parent's
    assert kwargs["timeout"] == 90.0

    conf.create("sockAvg")
    call = _Recorder.calls.pop()
    assert call["args"] == ("/var/run/kapacitor/avg.sock",)
    assert call["kwargs"]["timeout"] == 0.5 and "connect_timeout" not in call["kwargs"]
    conf.create("sockAvg", connect_timeout=2.0)
    assert _Recorder.calls.pop()["kwargs"]["connect_timeout"] == 2.0


def test_create_returns_real_process_and_socket() -> None:
    conf = loads(SAMPLE)
    process = conf.create("movingAverage")
    assert isinstance(process, udf.Interface)
    assert type(process).__name__ == "Process"
    assert process.args == ["/usr/bin/python3", "-u", "/opt/udf/moving_avg.py"]  # type: ignore[attr-defined]
    sock = conf.create("sockAvg")
    assert type(sock).__name__ == "Socket"
    assert sock.address.endswith("/var/run/kapacitor/avg.sock")  # type: ignore[attr-defined]


def test_unknown_function_lists_the_known_ones() -> None:
    conf = loads(SAMPLE)
    with pytest.raises(ConfigError) as info:
        conf.create("movingAvg")
    assert str(info.value) == "no such UDF movingAvg (configured UDFs: movingAverage, outliers, sockAvg)"
    with pytest.raises(ConfigError, match=r"configured UDFs: none\)$"):
        Config().function("x")


def test_created_process_runs_with_the_merged_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a real agent started from the config sees the parent's and the configured variables."""
    probe = AGENTS / "probe.py"
    monkeypatch.setenv("PROBE_PARENT", "from-parent")
    text = (
        "[udf.functions.probe]\n"
        f"prog = {sys.executable!r}\n"
        f"args = [{str(probe)!r}]\n"
        'timeout = "10s"\n'
        "[udf.functions.probe.env]\n"
        f'PROBE_ENV = "from-config"\n'
        f"PYTHONPATH = {str(ROOT)!r}\n"
    )
    conf = loads(text)
    agent = conf.create("probe")
    agent.open()
    try:
        info = agent.info()
        assert set(info.options) >= {"i", "s", "dur"}
        agent.init([])
        agent.point_in.put(udf.Point(name="m", fields={"x": 1.0}, time=1))
        out = agent.point_out.get(timeout=TIMEOUT)
    finally:
        agent.close()
    assert out.fields["env"] == "from-config"
    assert out.fields["parent"] == "from-parent"


def test_config_module_exports() -> None:
    assert udf_config.MIN_TIMEOUT_NS == 1_000_000
    assert set(udf_config.__all__) >= {"Config", "FunctionConfig", "ConfigError", "load", "loads", "parse_duration"}
