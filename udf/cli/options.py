"""UDF options from the command line: ``-o NAME=VALUE`` typed from the UDF's own info.

Each text becomes the Python value of the type the UDF declares (INT an int,
DOUBLE a float, BOOL a bool, STRING a str, DURATION :class:`udf.options.Nanoseconds`);
:mod:`udf.options` then builds the option, by the one typing rule ``init()``
and ``udf.beam`` use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import agent_pb2

from .. import config as udf_config
from ..convert import Info
from ..models import INT64_MAX, INT64_MIN
from ..options import Nanoseconds, option, option_value
from .exits import CLIError

__all__ = ["describe_options", "parse_option_text", "parse_option_value", "build_options", "type_name"]

#: TICKscript duration units the option parser accepts besides Go's.
_TICK_UNITS = {"u": 1_000, "\u00b5": 1_000, "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_TYPE_NAMES = {v: k for k, v in agent_pb2.ValueType.items()}


def type_name(value_type: int) -> str:
    return str(_TYPE_NAMES.get(value_type, f"ValueType({value_type})"))


def describe_options(info: Info) -> str:
    """The UDF's options as ``"as (STRING), size (INT)"``, sorted by name."""
    if not info.options:
        return "none"
    parts = []
    for name in sorted(info.options):
        types = ", ".join(type_name(t) for t in info.options[name].valueTypes) or "no value"
        parts.append(f"{name} ({types})")
    return ", ".join(parts)


def parse_option_text(text: str, value_type: int) -> Any:
    """One option value from text, as the Python value of ``value_type``; ``ValueError`` saying why.

    INT: a decimal int64; DOUBLE: a decimal float (``1``, ``1.5``, ``2e-3``);
    BOOL: ``true``/``false`` (any case); STRING: the text as is; DURATION: a Go or
    TICKscript duration (``10s``, ``1m30s``, ``500ms``, ``1d``) as :class:`Nanoseconds`.
    """
    if value_type == agent_pb2.STRING:
        return text
    if value_type == agent_pb2.INT:
        if not _INT_RE.match(text):
            raise ValueError(f"{text!r} is not an INT (a decimal integer)")
        number = int(text)
        if not INT64_MIN <= number <= INT64_MAX:
            raise ValueError(f"{text!r} does not fit in an INT (int64)")
        return number
    if value_type == agent_pb2.DOUBLE:
        if not _FLOAT_RE.match(text):
            raise ValueError(f"{text!r} is not a DOUBLE (a decimal number like 1.5)")
        return float(text)
    if value_type == agent_pb2.BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"{text!r} is not a BOOL (true or false)")
        return lowered == "true"
    if value_type == agent_pb2.DURATION:
        try:
            return Nanoseconds(udf_config.parse_duration(text, _TICK_UNITS))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a DURATION (like 10s, 1m30s, 500ms): {exc}") from None
    raise ValueError(f"the UDF declares an unknown value type {value_type}")


def parse_option_value(text: str, value_type: int, name: str = "") -> Any:
    """One ``agent_pb2.OptionValue`` of ``value_type`` from text (see :func:`parse_option_text`)."""
    value = option_value(name, parse_option_text(text, value_type))
    assert value.type == value_type, "udf.options types each Python value as parse_option_text meant"
    return value


def build_options(specs: Sequence[str], info: Info) -> list[Any]:
    """Turn ``-o NAME=VALUE`` specs into ``agent_pb2.Option``s typed from the UDF's ``info``.

    An option declaring several value types takes as many comma-separated values
    (the last one keeps any further commas); one declaring none is given as
    ``-o NAME``. A repeated ``-o`` sends the option again, as a repeated
    TICKscript property does. Raises :class:`CLIError` listing the UDF's options.
    """
    options = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        listing = f"the UDF's options are: {describe_options(info)}"
        if not name:
            raise CLIError(f"bad option {spec!r}: expected NAME=VALUE; {listing}")
        option_info = info.options.get(name)
        if option_info is None:
            raise CLIError(f"unknown option {name!r}; {listing}")
        types = list(option_info.valueTypes)
        if not types:
            if sep and text:
                raise CLIError(f"option {name!r} takes no value, got {text!r}; {listing}")
            options.append(option(name, []))
            continue
        if not sep:
            raise CLIError(f"option {name!r} needs a value: -o {name}=VALUE; {listing}")
        texts = [text] if len(types) == 1 else text.split(",", len(types) - 1)
        if len(texts) != len(types):
            raise CLIError(
                f"unexpected number of args to {name}, got {len(texts)} expected {len(types)}"
                f" (comma-separated {', '.join(type_name(t) for t in types)}); {listing}"
            )
        values = []
        for value_text, value_type in zip(texts, types, strict=True):
            try:
                values.append(parse_option_text(value_text, value_type))
            except ValueError as exc:
                raise CLIError(f"option {name!r}: {exc}; {listing}") from None
        options.append(option(name, values))
    return options
