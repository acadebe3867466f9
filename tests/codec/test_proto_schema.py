"""The checked-in agent_pb2 matches udf.proto, and both match SPEC's field numbers.

No protoc exists at test time, so this file carries a small parser for the
proto3 subset udf.proto uses (syntax, package, messages with nested messages,
enums, ``repeated``, ``map<k, v>``, ``oneof``, comments). Both the parsed
.proto and ``agent_pb2.DESCRIPTOR`` are reduced to the same plain shape and
compared field by field; a test proves a mutated copy of the .proto is caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

import agent_pb2

from ..helpers import ROOT

PROTO_PATH = ROOT / "udf.proto"

SCALARS: dict[str, int] = {
    "double": FieldDescriptor.TYPE_DOUBLE,
    "float": FieldDescriptor.TYPE_FLOAT,
    "int64": FieldDescriptor.TYPE_INT64,
    "uint64": FieldDescriptor.TYPE_UINT64,
    "int32": FieldDescriptor.TYPE_INT32,
    "fixed64": FieldDescriptor.TYPE_FIXED64,
    "fixed32": FieldDescriptor.TYPE_FIXED32,
    "bool": FieldDescriptor.TYPE_BOOL,
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "uint32": FieldDescriptor.TYPE_UINT32,
    "sfixed32": FieldDescriptor.TYPE_SFIXED32,
    "sfixed64": FieldDescriptor.TYPE_SFIXED64,
    "sint32": FieldDescriptor.TYPE_SINT32,
    "sint64": FieldDescriptor.TYPE_SINT64,
}


# --- the common shape -----------------------------------------------------------------


@dataclass(frozen=True)
class Type:
    """A field's (or map value's) type: a FieldDescriptor.TYPE_* and, for messages and enums, the full name."""

    kind: int
    name: str | None = None


@dataclass(frozen=True)
class Field:
    """One field as both sides describe it."""

    number: int
    type: Type
    repeated: bool = False
    oneof: str | None = None
    map_key: Type | None = None  # set for map<k, v> fields; ``type`` is then v


@dataclass
class Schema:
    """A .proto file reduced to what must match: package, messages' fields, enums' values."""

    package: str
    messages: dict[str, dict[str, Field]] = field(default_factory=dict)  # full name -> fields
    enums: dict[str, dict[str, int]] = field(default_factory=dict)  # full name -> values


# --- a parser for the proto3 subset udf.proto uses -------------------------------------------

_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|(?P<tok>"[^"]*"|[A-Za-z_][\w.]*|-?\d+|[{}<>;=,])', re.S)


def tokenize(text: str) -> list[str]:
    """Split proto text into tokens, dropping whitespace and comments; refuse anything else."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SyntaxError(f"unsupported proto syntax at {text[pos : pos + 30]!r}")
        if m.group("tok"):
            tokens.append(m.group("tok"))
        pos = m.end()
    return tokens


@dataclass
class _RawField:
    scope: str  # full name of the enclosing message
    name: str
    number: int
    type_name: str
    repeated: bool
    oneof: str | None
    map_key: str | None


class ProtoParser:
    """A recursive-descent parser; field types are resolved once every name is known."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.syntax: str | None = None
        self.package = ""
        self.raw_fields: list[_RawField] = []
        self.message_names: list[str] = []
        self.enums: dict[str, dict[str, int]] = {}

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise SyntaxError(f"unexpected end of file, expected {expected or 'a token'}")
        token = self.tokens[self.pos]
        if expected is not None and token != expected:
            raise SyntaxError(f"expected {expected!r}, got {token!r} (token {self.pos})")
        self.pos += 1
        return token

    def number(self) -> int:
        token = self.take()
        if not re.fullmatch(r"-?\d+", token):
            raise SyntaxError(f"expected a number, got {token!r}")
        return int(token)

    def parse(self) -> Schema:
        while self.peek() is not None:
            keyword = self.take()
            if keyword == "syntax":
                self.take("=")
                self.syntax = self.take().strip('"')
                self.take(";")
            elif keyword == "package":
                self.package = self.take()
                self.take(";")
            elif keyword == "message":
                self.message(self.package)
            elif keyword == "enum":
                self.enum(self.package)
            elif keyword != ";":
                raise SyntaxError(f"unsupported top-level statement {keyword!r}")
        if self.syntax != "proto3":
            raise SyntaxError(f"expected proto3, got {self.syntax!r}")
        return self.resolve()

    def message(self, parent: str) -> None:
        full = f"{parent}.{self.take()}".lstrip(".")
        self.message_names.append(full)
        self.take("{")
        while self.peek() != "}":
            token = self.peek()
            if token == "message":
                self.take()
                self.message(full)
            elif token == "enum":
                self.take()
                self.enum(full)
            elif token == "oneof":
                self.take()
                name = self.take()
                self.take("{")
                while self.peek() != "}":
                    self.field(full, oneof=name)
                self.take("}")
            elif token == ";":
                self.take()
            else:
                self.field(full, oneof=None)
        self.take("}")

    def field(self, scope: str, oneof: str | None) -> None:
        repeated = False
        map_key = None
        if self.peek() == "repeated":
            if oneof is not None:
                raise SyntaxError("repeated field inside a oneof")
            self.take()
            repeated = True
        if self.peek() == "map":
            self.take()
            self.take("<")
            map_key = self.take()
            self.take(",")
            type_name = self.take()
            self.take(">")
        else:
            type_name = self.take()
        if type_name in ("optional", "required", "group", "extend", "reserved", "option"):
            raise SyntaxError(f"unsupported construct {type_name!r}")
        name = self.take()
        self.take("=")
        number = self.number()
        self.take(";")
        self.raw_fields.append(_RawField(scope, name, number, type_name, repeated, oneof, map_key))

    def enum(self, parent: str) -> None:
        full = f"{parent}.{self.take()}".lstrip(".")
        values: dict[str, int] = {}
        self.take("{")
        while self.peek() != "}":
            name = self.take()
            if name == ";":
                continue
            self.take("=")
            values[name] = self.number()
            self.take(";")
        self.take("}")
        self.enums[full] = values

    def resolve_type(self, type_name: str, scope: str) -> Type:
        """Resolve a type name as protoc does: innermost enclosing scope first."""
        if type_name in SCALARS:
            return Type(SCALARS[type_name])
        if type_name.startswith("."):
            candidates = [type_name[1:]]
        else:
            parts = scope.split(".")
            candidates = [".".join(parts[:i] + [type_name]) for i in range(len(parts), -1, -1)]
        for candidate in candidates:
            candidate = candidate.lstrip(".")
            if candidate in self.message_names:
                return Type(FieldDescriptor.TYPE_MESSAGE, candidate)
            if candidate in self.enums:
                return Type(FieldDescriptor.TYPE_ENUM, candidate)
        raise SyntaxError(f"unknown type {type_name!r} in {scope}")

    def resolve(self) -> Schema:
        schema = Schema(self.package, {name: {} for name in self.message_names}, dict(self.enums))
        for raw in self.raw_fields:
            fields = schema.messages[raw.scope]
            if raw.name in fields:
                raise SyntaxError(f"duplicate field {raw.scope}.{raw.name}")
            fields[raw.name] = Field(
                number=raw.number,
                type=self.resolve_type(raw.type_name, raw.scope),
                repeated=raw.repeated or raw.map_key is not None,
                oneof=raw.oneof,
                map_key=self.resolve_type(raw.map_key, raw.scope) if raw.map_key else None,
            )
        return schema


def parse_proto(text: str) -> Schema:
    """Parse proto3 text into a Schema."""
    return ProtoParser(text).parse()


# --- the same shape from the runtime descriptors -------------------------------------------------


def _is_repeated(fd: Any) -> bool:
    """``FieldDescriptor.is_repeated`` on new protobuf, ``label`` on old."""
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(fd: Any) -> bool:
    """A map<k, v> field: a repeated message whose type is a map entry."""
    return bool(fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)


def _type_of(fd: Any) -> Type:
    """The Type of a field descriptor, with the full name of its message or enum."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return Type(fd.type, fd.message_type.full_name)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return Type(fd.type, fd.enum_type.full_name)
    return Type(fd.type)


def describe(file_descriptor: Any) -> Schema:
    """Reduce a FileDescriptor (e.g. ``agent_pb2.DESCRIPTOR``) to a Schema; map entries fold into their fields."""
    schema = Schema(file_descriptor.package)

    def add_enum(ed: Any) -> None:
        schema.enums[ed.full_name] = {v.name: v.number for v in ed.values}

    def add_message(md: Any) -> None:
        fields: dict[str, Field] = {}
        for fd in md.fields:
            oneof = fd.containing_oneof.name if fd.containing_oneof is not None else None
            if _is_map(fd):
                entry = fd.message_type
                key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
                assert (key.number, value.number) == (1, 2), entry.full_name
                fields[fd.name] = Field(fd.number, _type_of(value), True, oneof, _type_of(key))
            else:
                fields[fd.name] = Field(fd.number, _type_of(fd), _is_repeated(fd), oneof)
        schema.messages[md.full_name] = fields
        for nested in md.nested_types:
            if not nested.GetOptions().map_entry:
                add_message(nested)
        for ed in md.enum_types:
            add_enum(ed)

    for md in file_descriptor.message_types_by_name.values():
        add_message(md)
    for ed in file_descriptor.enum_types_by_name.values():
        add_enum(ed)
    return schema


def compare(expected: Schema, actual: Schema) -> list[str]:
    """Every difference between two schemas, as readable lines; empty when they match."""
    problems = []
    if expected.package != actual.package:
        problems.append(f"package: {expected.package!r} != {actual.package!r}")
    for name in sorted(expected.messages.keys() | actual.messages.keys()):
        if name not in actual.messages:
            problems.append(f"message {name}: missing from the descriptor")
            continue
        if name not in expected.messages:
            problems.append(f"message {name}: not in the .proto")
            continue
        want, got = expected.messages[name], actual.messages[name]
        for fname in sorted(want.keys() | got.keys()):
            if fname not in got:
                problems.append(f"field {name}.{fname}: missing from the descriptor")
            elif fname not in want:
                problems.append(f"field {name}.{fname}: not in the .proto")
            elif want[fname] != got[fname]:
                problems.append(f"field {name}.{fname}: {want[fname]} != {got[fname]}")
    for name in sorted(expected.enums.keys() | actual.enums.keys()):
        if expected.enums.get(name) != actual.enums.get(name):
            problems.append(f"enum {name}: {expected.enums.get(name)} != {actual.enums.get(name)}")
    return problems


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proto_text() -> str:
    """The checked-in udf.proto."""
    return PROTO_PATH.read_text(encoding="utf-8")


def test_agent_pb2_matches_udf_proto(proto_text: str) -> None:
    parsed = parse_proto(proto_text)
    described = describe(agent_pb2.DESCRIPTOR)
    assert compare(parsed, described) == []
    # The comparison saw the whole file, not an empty subset of it.
    assert len(parsed.messages) == 19 and len(parsed.enums) == 2
    assert sum(len(f) for f in parsed.messages.values()) == sum(len(f) for f in described.messages.values()) > 60


def test_file_level_facts(proto_text: str) -> None:
    assert parse_proto(proto_text).package == "agent"
    assert agent_pb2.DESCRIPTOR.package == "agent"
    proto = descriptor_pb2.FileDescriptorProto()
    agent_pb2.DESCRIPTOR.CopyToProto(proto)
    assert proto.syntax == "proto3"
    assert proto.name == "udf.proto"
    assert not proto.dependency  # self-contained


MUTATIONS = [
    pytest.param(
        "map<string, bool> fieldsBool = 12;",
        "map<string, bool> fieldsBool = 13;",
        "agent.Point.fieldsBool",
        id="renumbered",
    ),
    pytest.param("string taskID = 2;", "string taskID = 4;", "agent.InitRequest.taskID", id="renumbered-init"),
    pytest.param("int64 tmax = 3;", "int32 tmax = 3;", "agent.EndBatch.tmax", id="retyped"),
    pytest.param(
        "map<string, int64> fieldsInt = 9;",
        "map<string, int32> fieldsInt = 9;",
        "agent.Point.fieldsInt",
        id="map-value",
    ),
    pytest.param(
        "repeated string dimensions = 6;", "string dimensions = 6;", "agent.Point.dimensions", id="not-repeated"
    ),
    pytest.param(
        "    bool byName = 11;\n",
        "    bool byName = 11;\n    bool extra = 13;\n",
        "agent.Point.extra",
        id="extra-field",
    ),
    pytest.param("    DURATION = 4;\n", "    DURATION = 5;\n", "agent.ValueType", id="enum-value"),
    pytest.param(
        "        EndBatch end = 18;\n    }\n}\n\nmessage Response",
        "    }\n    EndBatch end = 18;\n}\n\nmessage Response",
        "agent.Request.end",
        id="out-of-oneof",
    ),
    pytest.param("package agent;", "package agentx;", "package", id="package"),
]


@pytest.mark.parametrize("old, new, reported", MUTATIONS)
def test_a_mutated_proto_is_detected(proto_text: str, old: str, new: str, reported: str) -> None:
    assert proto_text.count(old) == 1, f"mutation anchor {old!r} not unique in udf.proto"
    mutated = parse_proto(proto_text.replace(old, new))
    problems = compare(mutated, describe(agent_pb2.DESCRIPTOR))
    assert problems, "the mutation went unnoticed"
    assert any(reported in p for p in problems), problems


def test_parser_understands_nesting_and_comments() -> None:
    schema = parse_proto(
        """
        syntax = "proto3"; // trailing comment
        /* block
           comment */
        package p;
        message Outer {
            message Inner { int64 v = 1; }
            enum Kind { A = 0; B = 1; }
            Inner inner = 1;
            Kind kind = 2;
            repeated Inner many = 3;
            map<string, Inner> byName = 4;
            oneof choice { string s = 5; Outer again = 6; }
        }
        """
    )
    assert schema.package == "p"
    assert schema.enums == {"p.Outer.Kind": {"A": 0, "B": 1}}
    outer = schema.messages["p.Outer"]
    assert outer["inner"] == Field(1, Type(FieldDescriptor.TYPE_MESSAGE, "p.Outer.Inner"))
    assert outer["kind"] == Field(2, Type(FieldDescriptor.TYPE_ENUM, "p.Outer.Kind"))
    assert outer["many"].repeated
    assert outer["byName"] == Field(
        4, Type(FieldDescriptor.TYPE_MESSAGE, "p.Outer.Inner"), True, None, Type(FieldDescriptor.TYPE_STRING)
    )
    assert outer["s"].oneof == "choice" and outer["again"].type.name == "p.Outer"
    assert schema.messages["p.Outer.Inner"] == {"v": Field(1, Type(FieldDescriptor.TYPE_INT64))}


@pytest.mark.parametrize(
    "text",
    [
        'syntax = "proto2"; package p;',
        'syntax = "proto3"; message M { Unknown u = 1; }',
        'syntax = "proto3"; message M { int64 a = 1 [deprecated = true]; }',
        'syntax = "proto3"; message M { optional int64 a = 1; }',
        'syntax = "proto3"; message M { int64 a = 1; int64 a = 2; }',
        'syntax = "proto3"; message M { int64 a = 1;',
    ],
)
def test_parser_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(SyntaxError):
        parse_proto(text)


# --- SPEC's numbers, checked directly against the descriptors ------------------------------------

SPEC_FIELDS: dict[str, dict[str, int]] = {
    "InfoRequest": {},
    "InfoResponse": {"wants": 1, "provides": 2, "options": 3},
    "OptionInfo": {"valueTypes": 1},
    "InitRequest": {"options": 1, "taskID": 2, "nodeID": 3},
    "Option": {"name": 1, "values": 2},
    "OptionValue": {"type": 1, "boolValue": 2, "intValue": 3, "doubleValue": 4, "stringValue": 5, "durationValue": 6},
    "InitResponse": {"success": 1, "error": 2},
    "SnapshotRequest": {},
    "SnapshotResponse": {"snapshot": 1},
    "RestoreRequest": {"snapshot": 1},
    "RestoreResponse": {"success": 1, "error": 2},
    "KeepaliveRequest": {"time": 1},
    "KeepaliveResponse": {"time": 1},
    "ErrorResponse": {"error": 1},
    "BeginBatch": {"name": 1, "group": 2, "tags": 3, "size": 4, "byName": 5},
    "Point": {
        "time": 1,
        "name": 2,
        "database": 3,
        "retentionPolicy": 4,
        "group": 5,
        "dimensions": 6,
        "tags": 7,
        "fieldsDouble": 8,
        "fieldsInt": 9,
        "fieldsString": 10,
        "byName": 11,
        "fieldsBool": 12,
    },
    "EndBatch": {"name": 1, "group": 2, "tmax": 3, "tags": 4, "byName": 5},
    "Request": {"info": 1, "init": 2, "keepalive": 3, "snapshot": 4, "restore": 5, "begin": 16, "point": 17, "end": 18},
    "Response": {
        "info": 1,
        "init": 2,
        "keepalive": 3,
        "snapshot": 4,
        "restore": 5,
        "error": 6,
        "begin": 16,
        "point": 17,
        "end": 18,
    },
}

SPEC_ONEOF_TYPES: dict[str, dict[str, str]] = {
    "Request": {
        "info": "InfoRequest",
        "init": "InitRequest",
        "keepalive": "KeepaliveRequest",
        "snapshot": "SnapshotRequest",
        "restore": "RestoreRequest",
        "begin": "BeginBatch",
        "point": "Point",
        "end": "EndBatch",
    },
    "Response": {
        "info": "InfoResponse",
        "init": "InitResponse",
        "keepalive": "KeepaliveResponse",
        "snapshot": "SnapshotResponse",
        "restore": "RestoreResponse",
        "error": "ErrorResponse",
        "begin": "BeginBatch",
        "point": "Point",
        "end": "EndBatch",
    },
}


@pytest.mark.parametrize("message", sorted(SPEC_FIELDS))
def test_spec_field_numbers(message: str) -> None:
    md = agent_pb2.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in md.fields} == SPEC_FIELDS[message]


def test_spec_key_numbers_spelled_out() -> None:
    fields = agent_pb2.DESCRIPTOR.message_types_by_name
    assert fields["Point"].fields_by_name["fieldsBool"].number == 12
    assert fields["InitRequest"].fields_by_name["taskID"].number == 2
    assert fields["InitRequest"].fields_by_name["nodeID"].number == 3
    assert [f.number for f in fields["Request"].oneofs_by_name["message"].fields] == [1, 2, 3, 4, 5, 16, 17, 18]
    assert [f.number for f in fields["Response"].oneofs_by_name["message"].fields] == [1, 2, 3, 4, 5, 6, 16, 17, 18]


@pytest.mark.parametrize("message", sorted(SPEC_ONEOF_TYPES))
def test_spec_envelopes(message: str) -> None:
    md = agent_pb2.DESCRIPTOR.message_types_by_name[message]
    assert list(md.oneofs_by_name) == ["message"]
    oneof = md.oneofs_by_name["message"]
    assert {f.name: f.message_type.name for f in oneof.fields} == SPEC_ONEOF_TYPES[message]
    assert all(f.containing_oneof is oneof for f in md.fields)


def test_spec_option_value_oneof() -> None:
    md = agent_pb2.DESCRIPTOR.message_types_by_name["OptionValue"]
    oneof = md.oneofs_by_name["value"]
    assert [f.name for f in oneof.fields] == ["boolValue", "intValue", "doubleValue", "stringValue", "durationValue"]
    assert md.fields_by_name["type"].containing_oneof is None
    assert md.fields_by_name["durationValue"].type == FieldDescriptor.TYPE_INT64


def test_spec_enums() -> None:
    assert {v.name: v.number for v in agent_pb2.DESCRIPTOR.enum_types_by_name["EdgeType"].values} == {
        "STREAM": 0,
        "BATCH": 1,
    }
    assert {v.name: v.number for v in agent_pb2.DESCRIPTOR.enum_types_by_name["ValueType"].values} == {
        "BOOL": 0,
        "INT": 1,
        "DOUBLE": 2,
        "STRING": 3,
        "DURATION": 4,
    }


POINT_MAPS: list[tuple[str, int]] = [
    ("tags", FieldDescriptor.TYPE_STRING),
    ("fieldsDouble", FieldDescriptor.TYPE_DOUBLE),
    ("fieldsInt", FieldDescriptor.TYPE_INT64),
    ("fieldsString", FieldDescriptor.TYPE_STRING),
    ("fieldsBool", FieldDescriptor.TYPE_BOOL),
]


@pytest.mark.parametrize("name, value_type", POINT_MAPS)
def test_spec_point_maps(name: str, value_type: int) -> None:
    field = describe(agent_pb2.DESCRIPTOR).messages["agent.Point"][name]
    assert field.map_key == Type(FieldDescriptor.TYPE_STRING)
    assert field.type == Type(value_type)
