"""moving_avg on Apache Flink: the moving_avg UDF over many series with udf.flink.run_udf.

Reads line protocol (default: the bundled examples/data/hosts.lp, 120 hosts)
with a ``FileSource``, turns each line into a stream point grouped by ``host``
(as a TICKscript's ``|from().groupBy('host')``), runs ``examples/moving_avg.py``
on it sharded over ``--shards`` agents, and writes the averages as line
protocol: to stdout, or with ``--output DIR`` to a ``FileSink`` that commits
its files on each checkpoint (exactly once). Output order across series is free.

On a local Flink environment (a mini cluster in this process), from the
repository root::

    .venv-flink/bin/python examples/flink_moving_avg.py

On a Flink cluster (see docs/flink.md for the whole recipe)::

    "$FLINK_HOME"/bin/flink run -py examples/flink_moving_avg.py --output /tmp/avg

Each TaskManager's Python worker starts the agent as ``--agent`` says
(default: this Python and the moving_avg.py next to this file), so that
command must work on every TaskManager machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

try:
    import udf
except ImportError:  # running from a checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import udf

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSink, FileSource, RollingPolicy, StreamFormat

from udf.cli import to_stream_point
from udf.flink import run_udf
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=DEFAULT_INPUT, help="line protocol file (default: %(default)s)")
    parser.add_argument("--output", help="write committed files into this folder (a FileSink) instead of printing")
    parser.add_argument("--field", default="usage_user", help="the field to average (default: %(default)s)")
    parser.add_argument("--size", type=int, default=5, help="window size (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=8, help="agents to spread the series over (default: %(default)s)")
    parser.add_argument("--flush-every", type=int, default=100, help="items per hand-over (default: %(default)s)")
    parser.add_argument(
        "--checkpoint-interval", type=int, default=1000, help="ms between checkpoints, 0: none (default: %(default)s)"
    )
    parser.add_argument("--parallelism", type=int, help="the job's parallelism (default: Flink's)")
    parser.add_argument(
        "--agent",
        default=shlex.join([sys.executable, "-u", os.path.join(HERE, "moving_avg.py")]),
        help="the agent's command line as the TaskManagers run it (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_python_executable(sys.executable)  # the Python workers run this Python (it has udf)
    if args.parallelism:
        env.set_parallelism(args.parallelism)
    if args.checkpoint_interval > 0:
        env.enable_checkpointing(args.checkpoint_interval)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), os.path.abspath(args.input)).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "line protocol")
    points = lines.flat_map(parse_point, output_type=Types.PICKLED_BYTE_ARRAY()).name("parse")
    averages = run_udf(
        points,
        shlex.split(args.agent),
        {"field": args.field, "size": args.size, "as": "avg"},
        shards=args.shards,
        flush_every=args.flush_every,
    )
    out = averages.map(format_point, output_type=Types.STRING()).name("format")
    if args.output:
        sink = (
            FileSink.for_row_format(os.path.abspath(args.output), Encoder.simple_string_encoder())
            .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
            .build()
        )
        out.sink_to(sink).name("files")
        env.execute("flink_moving_avg")
    else:
        with out.execute_and_collect("flink_moving_avg") as results:
            for line in results:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
