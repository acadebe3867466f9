"""udf.beam.RunUDF on Beam's in-process runner (FnApiRunner), with real agents.

Needs Apache Beam (extra ``beam``): nox's ``beam`` session runs this file in its own
virtual environment; elsewhere it is skipped.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Hashable
from typing import Any

import pytest

try:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import BeamAssertException, assert_that

    import udf.beam as udf_beam
    from udf.beam import RunUDF, UDFItemCoder, default_key, shard_of
except ImportError:  # the main environment: every test here is collected, and skipped
    beam = None

import udf
from udf.lineprotocol import format_line

from ..helpers import ROOT, TIMEOUT
from .reference import (
    AVG_OPTIONS,
    EXAMPLES,
    KILL_ONCE,
    MOVING_AVG,
    OUTLIERS,
    OUTLIERS_OPTIONS,
    interleaved,
    normalize,
    reference_run,
    sample_batches,
    sample_series,
)

# Skipped test by test, not the whole module: a run of this file alone where
# Beam is missing then reports skips (exit status 0), not "no tests" (5).
pytestmark = pytest.mark.skipif(
    beam is None, reason="Apache Beam is not installed (extra 'beam'; nox -s beam runs this in its own environment)"
)


@pytest.fixture(autouse=True)
def beam_tmpdir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam leaves beam-temp* directories in TMPDIR: keep them in the test's own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


class _MultisetEqual:
    """An assert_that matcher: the PCollection, normalized, is exactly ``expected`` as a multiset."""

    def __init__(self, expected: Counter[Hashable]) -> None:
        self.expected = expected

    def __call__(self, actual: list[Hashable]) -> None:
        got = collections.Counter(actual)
        if got != self.expected:
            missing, extra = self.expected - got, got - self.expected
            raise BeamAssertException(
                f"outputs differ: {sum(missing.values())} missing (e.g. {list(missing)[:2]}), "
                f"{sum(extra.values())} unexpected (e.g. {list(extra)[:2]})"
            )


def run_pipeline(items: list[Any], transform: Any, expected: Counter[Hashable]) -> dict[str, int]:
    """Run ``items | transform`` on the in-process runner, assert its output; return RunUDF's counters."""
    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = pipeline | beam.Create(items) | transform | beam.Map(normalize)
    assert_that(outputs, _MultisetEqual(expected))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    return {c.key.metric.name: c.committed for c in counters if c.key.metric.namespace == udf_beam.METRICS_NAMESPACE}


# --- the coder -------------------------------------------------------------------------------


def test_coder_round_trips_points_and_batches_exactly() -> None:
    coder = UDFItemCoder()
    point = udf.Point(
        name="cpu",
        database="db",
        retention_policy="rp",
        group="cpu\nhost=a",
        dimensions=udf.Dimensions(True, ["host"]),
        tags={"host": "a", "empty": ""},
        fields={"f": -0.0, "big": 2**62, "s": "x\ny", "b": True, "tiny": 5e-324},
        time=-(2**62),
    )
    batch = udf.Batch(
        name="cpu",
        tmax=10**18,
        group="g",
        by_name=True,
        tags={"host": "a"},
        points=[udf.BatchPoint(1, {"v": 1.5}, {"host": "a"}), udf.BatchPoint(2, {"n": -3}, {})],
    )
    for item in (point, batch, udf.Point(), udf.Batch()):
        assert coder.decode(coder.encode(item)) == item
    back = coder.decode(coder.encode(point))
    assert isinstance(back, udf.Point)
    assert str(back.fields["f"]) == "-0.0"
    assert type(back.fields["big"]) is int
    with pytest.raises(TypeError, match="udf.Point or udf.Batch, got dict"):
        coder.encode({"name": "cpu"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a UDFItemCoder encoding"):
        coder.decode(b"Xjunk")
    assert beam.coders.registry.get_coder(udf.Point) == coder
    assert beam.coders.registry.get_coder(udf.Batch) == coder


def test_keys_and_shards_are_stable() -> None:
    assert default_key(udf.Point(name="cpu", group="cpu\nhost=a", tags={"host": "b"})) == "cpu\nhost=a"
    assert default_key(udf.Point(name="cpu", tags={"b": "2", "a": "1"})) == "cpu\na=1,b=2"
    assert default_key(udf.Batch(name="cpu", tags={"host": "a"})) == "cpu\nhost=a"
    assert shard_of("cpu\nhost=a", 64) == 3973279567 % 64  # crc32, the same in every process
    assert {shard_of(f"h{i}", 4) for i in range(100)} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"command": "python agent.py"}, TypeError, "argv as a list"),
        ({"command": []}, ValueError, "non-empty list"),
        ({"edge": "table"}, ValueError, "edge must be 'stream' or 'batch'"),
        ({"shards": 0}, ValueError, "shards must be a positive int"),
        ({"batch_size": 1.5}, ValueError, "batch_size must be a positive int"),
        ({"timeout": "10s"}, TypeError, "timeout must be seconds"),
        ({"key": "host"}, TypeError, "key must be a callable"),
        ({"options": {"size": [object()]}}, TypeError, "option 'size': values must be"),
        ({"options": ["field=x"]}, TypeError, "options must be agent_pb2.Option, got str"),
    ],
)
def test_bad_arguments_are_refused_naming_what(kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"command": MOVING_AVG, **kwargs}
    command = arguments.pop("command")
    with pytest.raises(error, match=message):
        RunUDF(command, **arguments)


# --- equivalence with a plain udf.Process ----------------------------------------------------------


def test_stream_moving_avg_equals_a_plain_process_run() -> None:
    series = sample_series()
    assert len(series) >= 100
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    assert sum(expected.values()) == len(series) * (10 - 4 + 1)
    counters = run_pipeline(interleaved(series), RunUDF(MOVING_AVG, AVG_OPTIONS, shards=4, batch_size=64), expected)
    assert counters["agents_started"] == 4
    assert counters.get("agent_failures", 0) == 0


def test_batch_outliers_equals_a_plain_process_run() -> None:
    batches = sample_batches()
    assert len(batches) >= 100
    options = OUTLIERS_OPTIONS
    expected = reference_run(OUTLIERS, options, [[b] for b in batches], "batch")
    assert sum(expected.values()) == len(batches)
    assert sum(len(b[-1]) for b in expected.elements()) >= 30  # the sample's spikes and dips are found
    counters = run_pipeline(batches, RunUDF(OUTLIERS, options, edge="batch", shards=3, batch_size=16), expected)
    assert counters["agents_started"] == 3


def test_evicted_agents_are_restored_from_beam_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """One live agent for three shards: every switch restores a shard's snapshot, and nothing changes."""
    monkeypatch.setattr(udf_beam, "MAX_AGENTS", 1)
    series = sample_series()
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    counters = run_pipeline(interleaved(series), RunUDF(MOVING_AVG, AVG_OPTIONS, shards=3, batch_size=150), expected)
    assert counters["restores"] >= 1
    assert counters["agents_started"] == counters["restores"] + 3  # each shard's first agent starts empty


# --- failures ---------------------------------------------------------------------------------------


def test_an_agent_killed_mid_pipeline_changes_nothing(tmp_path: Any) -> None:
    series = sample_series()
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    marker = tmp_path / "killed"
    command = [sys.executable, "-u", KILL_ONCE, str(marker), "70"]
    counters = run_pipeline(interleaved(series), RunUDF(command, AVG_OPTIONS, shards=4, batch_size=50), expected)
    assert marker.exists(), "no agent reached its 70th point: the test injected nothing"
    assert counters["agent_failures"] == 1
    assert counters["agents_started"] == 5  # four shards and one replacement
    assert counters["restores"] == 1  # the replacement continued from the last snapshot


def test_a_udf_failing_init_fails_the_pipeline_with_its_error() -> None:
    pipeline = beam.Pipeline(runner=FnApiRunner())
    points = [udf.Point(name="cpu", group="g", fields={"v": 1.0}, time=1)]
    pipeline | beam.Create(points) | RunUDF(MOVING_AVG, {"size": 3}, shards=2)
    with pytest.raises(Exception, match="missing required option 'field'"):
        pipeline.run().wait_until_finish()


def test_an_agent_of_the_other_edge_type_is_refused() -> None:
    pipeline = beam.Pipeline(runner=FnApiRunner())
    pipeline | beam.Create(sample_batches()[:2]) | RunUDF(MOVING_AVG, AVG_OPTIONS, edge="batch", shards=1)
    with pytest.raises(Exception, match="wants stream data, but RunUDF was given edge='batch'"):
        pipeline.run().wait_until_finish()


# --- the example ----------------------------------------------------------------------------------------


def test_beam_moving_avg_example_runs_on_the_sample_data(tmp_path: Any) -> None:
    series = sample_series()
    options = {"field": "usage_user", "size": 5, "as": "avg"}
    expected = reference_run(MOVING_AVG, options, list(series.values()), "stream")
    lines = collections.Counter(format_line(p[1], dict(p[7]), dict(p[8]), p[9]) for p in expected.elements())
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "beam_moving_avg.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=20 * TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert collections.Counter(done.stdout.splitlines()) == lines
    assert sum(lines.values()) == 120 * 6


def test_docs_usage_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    with open(os.path.join(ROOT, "docs", "beam.md"), encoding="utf-8") as f:
        code = re.search(r"## Usage \(in-process runner\)\n\n```python\n(.*?)```", f.read(), re.S)
    assert code is not None
    cwd = os.getcwd()
    os.chdir(ROOT)  # the example names examples/moving_avg.py relative to the checkout
    try:
        exec(compile(code.group(1), "docs/beam.md", "exec"), {"__name__": "docs_beam"})
    finally:
        os.chdir(cwd)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 * (20 - 5 + 1)
    assert all(line.startswith("Point(name='cpu'") and "'avg':" in line for line in lines)
