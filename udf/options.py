"""Init options from Python values: one typing rule for ``init()``, ``udf.beam``, ``udf.flink`` and the CLI.

A mapping ``{name: value or [values]}`` becomes ``agent_pb2.Option`` messages,
each Python value typed as the protocol's: bool BOOL, int INT, float DOUBLE,
str STRING, ``datetime.timedelta`` DURATION (nanoseconds); an
``agent_pb2.OptionValue`` is sent as it is. A list of ``agent_pb2.Option`` is
accepted unchanged. Pure: no threads, no I/O.
"""

from __future__ import annotations

import datetime
from typing import Any, List, Mapping, Sequence, Union

import agent_pb2

__all__ = ["Options", "build_options", "option_value"]

#: What ``init()`` and the adapters take as options.
Options = Union[None, Sequence[Any], Mapping[str, Any]]


def option_value(name: str, value: Any) -> Any:
    """One ``agent_pb2.OptionValue`` typed from a Python value; ``TypeError`` naming the option otherwise."""
    if isinstance(value, agent_pb2.OptionValue):
        return value
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
        f"option {name!r}: values must be bool, int, float, str, timedelta or agent_pb2.OptionValue, "
        f"got {type(value).__name__}"
    )


def build_options(options: Options) -> List[Any]:
    """``agent_pb2.Option``s from ``None``, a list of them, or a mapping ``{name: value or [values]}``.

    An option given ``[]`` (or ``()``) is sent with no values, as a TICKscript
    property without arguments.
    """
    if options is None:
        return []
    if isinstance(options, Mapping):
        built = []
        for name, values in options.items():
            if not isinstance(name, str):
                raise TypeError(f"option names must be str, got {type(name).__name__}")
            if not isinstance(values, (list, tuple)):
                values = [values]
            built.append(agent_pb2.Option(name=name, values=[option_value(name, v) for v in values]))
        return built
    if isinstance(options, (str, bytes)):
        raise TypeError("options must be a mapping or a list of agent_pb2.Option, not a string")
    checked: List[Any] = []
    for option in options:
        if not isinstance(option, agent_pb2.Option):
            raise TypeError(f"init options must be agent_pb2.Option, got {type(option).__name__}")
        checked.append(option)
    return checked


