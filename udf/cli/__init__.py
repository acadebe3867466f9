"""``python -m udf``: look at a UDF, or run one on InfluxDB line protocol.

::

    python -m udf info -- python examples/moving_avg.py
    python -m udf run -o field=usage_user -o size=10 examples/data/cpu.lp -- python examples/moving_avg.py

``info`` prints what the UDF wants and provides and its options; ``run`` starts
the UDF (a program after ``--``, ``--socket ADDR``, or ``--config FILE --function
NAME``), initializes it with ``-o NAME=VALUE`` options typed from its own info,
feeds it line protocol (files or stdin) as stream points or as batches, and
writes what it returns to stdout as line protocol. See docs/cli.md.

Exit codes: 0 success; 1 the UDF failed; 2 a usage error (command line, option,
configuration, input file); 3 a bad input line; 130 interrupted; 141 stdout closed.
"""

from .batching import Batcher, group_id, to_stream_point
from .command import console_main, main
from .exits import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UDF_FAILED,
    EXIT_USAGE,
    CLIError,
)
from .options import build_options, describe_options, parse_option_text, parse_option_value

__all__ = [
    "main",
    "console_main",
    "parse_option_text",
    "parse_option_value",
    "build_options",
    "describe_options",
    "group_id",
    "Batcher",
    "to_stream_point",
    "CLIError",
    "EXIT_OK",
    "EXIT_UDF_FAILED",
    "EXIT_USAGE",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
]
