"""moving_avg on Apache Beam: the moving_avg UDF over many series with udf.beam.RunUDF.

Reads line protocol (default: the bundled examples/data/hosts.lp, 120 hosts),
turns each line into a stream point grouped by ``host`` (as a TICKscript's
``|from().groupBy('host')``), runs ``examples/moving_avg.py`` on it sharded
over ``--shards`` agents, and writes the averages as line protocol to stdout
(or to text files with ``--output PREFIX``). Output order across series is free.

On the in-process runner (the default here), from the repository root::

    .venv-beam/bin/python examples/beam_moving_avg.py

Any other Beam pipeline option is passed to Beam, e.g. ``--runner=FlinkRunner``
or ``--runner=DataflowRunner`` (see docs/beam.md for the full commands); on a
remote worker the agent runs as ``--agent`` says (default: this Python and the
moving_avg.py next to this file, which the worker's image must contain).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

try:
    import udf
except ImportError:  # running from a checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import udf

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from udf.beam import RunUDF
from udf.cli import to_stream_point
from udf.lineprotocol import format_line, parse_line

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "hosts.lp")


def parse_point(line: str) -> list[udf.Point]:
    """One line of line protocol as a stream point grouped by host (none for a blank or comment line)."""
    parsed = parse_line(line)
    if parsed is None:
        return []
    if parsed.time is None:
        raise ValueError(f"line without a timestamp: {line!r}")
    return [to_stream_point(parsed, ["host"])]


def format_point(point: udf.Point) -> str:
    return format_line(point.name, point.tags, point.fields, point.time)


def build(
    pipeline: Any, input_path: str, agent: Sequence[str], field: str, size: int, shards: int, batch_size: int
) -> Any:
    """The pipeline's transforms: read, parse, RunUDF(moving_avg), format; returns the lines."""
    return (
        pipeline
        | "Read" >> beam.io.ReadFromText(input_path)
        | "Parse" >> beam.FlatMap(parse_point)
        | "MovingAvg"
        >> RunUDF(agent, {"field": field, "size": size, "as": "avg"}, shards=shards, batch_size=batch_size)
        | "Format" >> beam.Map(format_point)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=DEFAULT_INPUT, help="line protocol file (default: %(default)s)")
    parser.add_argument("--output", help="write text files with this prefix instead of printing")
    parser.add_argument("--field", default="usage_user", help="the field to average (default: %(default)s)")
    parser.add_argument("--size", type=int, default=5, help="window size (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=8, help="agents to spread the series over (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=100, help="points per snapshot barrier (default: %(default)s)"
    )
    parser.add_argument(
        "--agent",
        default=shlex.join([sys.executable, "-u", os.path.join(HERE, "moving_avg.py")]),
        help="the agent's command line as the workers run it (default: %(default)s)",
    )
    args, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    runner: Any = options.view_as(StandardOptions).runner
    if runner is None:
        # Beam's default DirectRunner may try to download the Prism runner: stay in-process.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    with beam.Pipeline(runner=runner, options=options) as pipeline:
        lines = build(
            pipeline, args.input, shlex.split(args.agent), args.field, args.size, args.shards, args.batch_size
        )
        if args.output:
            lines | "Write" >> beam.io.WriteToText(args.output)
        else:
            lines | "Print" >> beam.Map(print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
