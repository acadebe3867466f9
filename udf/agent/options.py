"""The options of an ``agent_pb2.InitRequest`` and the fields of an ``agent_pb2.Point`` as Python values."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import agent_pb2

from ..models import FieldValue

__all__ = ["OptionPyValue", "option_value", "init_options", "parse_options", "field_value"]

#: The Python value of one ``agent_pb2.OptionValue`` (a DURATION is an int of nanoseconds).
OptionPyValue = bool | int | float | str


def option_value(value: Any) -> OptionPyValue:
    """The Python value of an ``agent_pb2.OptionValue``; durations are ints of nanoseconds."""
    kind = value.WhichOneof("value")
    if kind is None:  # nothing set: the zero value of the declared type
        zeros: dict[int, OptionPyValue] = {agent_pb2.BOOL: False, agent_pb2.DOUBLE: 0.0, agent_pb2.STRING: ""}
        return zeros.get(value.type, 0)
    result: OptionPyValue = getattr(value, kind)
    return result


def init_options(init_req: Any) -> dict[str, list[OptionPyValue]]:
    """The options of an ``agent_pb2.InitRequest`` as ``{name: [values]}``.

    When an option is given several times, the last one wins.
    """
    return {opt.name: [option_value(v) for v in opt.values] for opt in init_req.options}


def parse_options(
    init_req: Any,
    types: Mapping[str, int | Collection[int]],
    required: Iterable[str] = (),
) -> tuple[dict[str, OptionPyValue], dict[str, str]]:
    """Check the options of an ``agent_pb2.InitRequest`` that take one value each.

    ``types`` maps each known option to its ``agent_pb2.ValueType`` (or a
    collection of accepted ones). Returns ``(values, errors)``: the value of
    each good option, and an error message for each unknown, missing (from
    ``required``), multi-valued or wrongly typed one, both keyed by name.
    """
    values: dict[str, OptionPyValue] = {}
    errors: dict[str, str] = {}
    type_name = agent_pb2.ValueType.Name
    for opt in init_req.options:
        name = opt.name
        accepted = types.get(name)
        if accepted is None:
            errors[name] = f"unknown option {name!r}"
            continue
        if isinstance(accepted, int):
            accepted = (accepted,)
        if len(opt.values) != 1:
            errors[name] = f"option {name!r} takes exactly one value, got {len(opt.values)}"
        elif opt.values[0].type not in accepted:
            want = " or ".join(type_name(t) for t in accepted)
            errors[name] = f"option {name!r} must be {want}, got {type_name(opt.values[0].type)}"
        else:
            values[name] = option_value(opt.values[0])
            errors.pop(name, None)  # a later good value replaces an earlier bad one
    for name in required:
        if name not in values and name not in errors:
            errors[name] = f"missing required option {name!r}"
    return values, errors


def field_value(point: Any, name: str) -> FieldValue | None:
    """The value of field ``name`` of an ``agent_pb2.Point``, or ``None`` if absent.

    A name in several typed maps resolves as Go does (and as
    :func:`fields_from_message`): fieldsBool wins over fieldsDouble, which
    wins over fieldsInt, which wins over fieldsString.
    """
    for fields in (point.fieldsBool, point.fieldsDouble, point.fieldsInt, point.fieldsString):
        if name in fields:
            value: FieldValue = fields[name]
            return value
    return None
