"""Init options from Python values: one typing rule for ``init()``, ``udf.beam``, ``udf.flink`` and the CLI.

A mapping ``{name: value or [values]}`` becomes ``agent_pb2.Option`` messages,
each Python value typed as the protocol's: bool BOOL, int INT, float DOUBLE,
str STRING, ``datetime.timedelta`` or :class:`Nanoseconds` DURATION
(nanoseconds); an ``agent_pb2.OptionValue`` is sent as it is. A list of
``agent_pb2.Option`` is accepted unchanged. The CLI's ``-o`` parses each text
to the Python value of the type the UDF declares, then builds the option here.
Pure: no threads, no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import agent_pb2

__all__ = ["Options", "Nanoseconds", "build_options", "option", "option_value"]

#: What ``init()`` and the adapters take as options.
Options = None | Sequence[Any] | Mapping[str, Any]


class Nanoseconds(int):
    """A duration in nanoseconds, sent as DURATION: for one finer than a ``timedelta``'s microsecond.

    ``init({"period": Nanoseconds(1500)})``; the CLI types ``-o period=1500ns`` so.
    """

    def __repr__(self) -> str:
        return f"Nanoseconds({int(self)})"


def option_value(name: str, value: Any) -> Any:
    """One ``agent_pb2.OptionValue`` typed from a Python value; ``TypeError`` naming the option otherwise."""
    if isinstance(value, agent_pb2.OptionValue):
        return value
    if isinstance(value, Nanoseconds):  # before int: it is one
        return agent_pb2.OptionValue(type=agent_pb2.DURATION, durationValue=int(value))
    if isinstance(value, bool):  # before int: bool is an int subclass
        return agent_pb2.OptionValue(type=agent_pb2.BOOL, boolValue=value)
    if isinstance(value, int):
        return agent_pb2.OptionValue(type=agent_pb2.INT, intValue=value)
    if isinstance(value, float):
        return agent_pb2.OptionValue(type=agent_pb2.DOUBLE, doubleValue=value)
    if isinstance(value, str):
        return agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue=value)
    if isinstance(value, datetime.timedelta):
        ns = (value.days * 86_400 + value.seconds) * 10**9 + value.microseconds * 1000
        return agent_pb2.OptionValue(type=agent_pb2.DURATION, durationValue=ns)
    raise TypeError(
        f"option {name!r}: values must be bool, int, float, str, timedelta, Nanoseconds or agent_pb2.OptionValue, "
        f"got {type(value).__name__}"
    )


def option(name: str, values: Any) -> Any:
    """One ``agent_pb2.Option``: ``values`` a Python value or a list of them (``[]``: an option without values)."""
    if not isinstance(name, str):
        raise TypeError(f"option names must be str, got {type(name).__name__}")
    if not isinstance(values, (list, tuple)):
        values = [values]
    return agent_pb2.Option(name=name, values=[option_value(name, v) for v in values])


def build_options(options: Options) -> list[Any]:
    """``agent_pb2.Option``s from ``None``, a list of them, or a mapping ``{name: value or [values]}``.

    An option given ``[]`` (or ``()``) is sent with no values, as a TICKscript
    property without arguments.
    """
    if options is None:
        return []
    if isinstance(options, Mapping):
        return [option(name, values) for name, values in options.items()]
    if isinstance(options, (str, bytes)):
        raise TypeError("options must be a mapping or a list of agent_pb2.Option, not a string")
    checked: list[Any] = []
    for given in options:
        if not isinstance(given, agent_pb2.Option):
            raise TypeError(f"init options must be agent_pb2.Option, got {type(given).__name__}")
        checked.append(given)
    return checked
