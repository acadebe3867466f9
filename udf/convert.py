"""Conversions between :mod:`udf.models` and ``agent_pb2`` messages, and batch assembly.

Pure functions (no threads, no I/O). The per-point functions are the hot path:
they build protobuf messages with scalar keyword arguments, fill maps one key
at a time, write the ``Request`` envelope by hand and skip empty maps on decode.
Validation errors name the offending field and are raised before anything is
written.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import agent_pb2

from . import _fastcodec, _fastdecode
from .errors import AgentError, ProtocolError, UDFError
from .models import INT64_MAX, INT64_MIN, Batch, BatchPoint, Dimensions, Fields, Point, Tags
from .wire import decode_uvarint, encode_frame, encode_uvarint

__all__ = [
    "Info",
    "info_from_message",
    "fields_to_message",
    "fields_from_message",
    "point_to_message",
    "point_from_message",
    "batch_point_to_message",
    "batch_point_from_message",
    "encode_request",
    "encode_point",
    "encode_batch",
    "BatchAssembler",
    "ResponseDecoder",
    "parse_responses",
    "POINTS",
    "BATCH",
]


# Request oneof tags, wire type 2 (length-delimited): field_number << 3 | 2.
_TAG_BEGIN = encode_uvarint(16 << 3 | 2)
_TAG_POINT = encode_uvarint(17 << 3 | 2)
_TAG_END = encode_uvarint(18 << 3 | 2)

_PbPoint = agent_pb2.Point
_PbBegin = agent_pb2.BeginBatch
_PbEnd = agent_pb2.EndBatch
_PbResponse = agent_pb2.Response


class Info:
    """What an agent wants, provides and accepts (Go: ``udf.Info``).

    ``wants`` and ``provides`` are ``agent_pb2.EdgeType`` values, ``options`` maps
    option names to ``agent_pb2.OptionInfo``.
    """

    __slots__ = ("wants", "provides", "options")

    def __init__(self, wants: int, provides: int, options: Optional[Dict[str, Any]] = None) -> None:
        self.wants = wants
        self.provides = provides
        self.options: Dict[str, Any] = options if options is not None else {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Info):
            return NotImplemented
        return (self.wants, self.provides, self.options) == (other.wants, other.provides, other.options)

    def __repr__(self) -> str:
        edge = agent_pb2.EdgeType.Name
        opts = {k: [agent_pb2.ValueType.Name(t) for t in v.valueTypes] for k, v in self.options.items()}
        return f"Info(wants={edge(self.wants)}, provides={edge(self.provides)}, options={opts})"


def info_from_message(msg: Any) -> Info:
    """Build an :class:`Info` from an ``InfoResponse``."""
    options = {}
    for name, option in msg.options.items():
        copy = agent_pb2.OptionInfo()
        copy.CopyFrom(option)
        options[name] = copy
    return Info(msg.wants, msg.provides, options)


# --- fields -----------------------------------------------------------------


def _bad_field(key: object, value: object, why: str) -> TypeError:
    return TypeError(f"field {key!r}: {why} (got {type(value).__name__} {value!r:.60})")


def fields_to_message(msg: Any, fields: Fields) -> None:
    """Fill the typed field maps of an ``agent_pb2.Point`` from ``fields``.

    ``bool`` goes to fieldsBool, never to fieldsInt. Raises ``TypeError`` (wrong
    type or key) or ``ValueError`` (int outside int64) naming the field.
    """
    doubles = ints = strs = bools = None
    for key, value in fields.items():
        kind = type(value)
        if kind is float:
            if doubles is None:
                doubles = msg.fieldsDouble
            target = doubles
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]  # kind is int
                raise ValueError(f"field {key!r}: integer {value} does not fit in int64")
            if ints is None:
                ints = msg.fieldsInt
            target = ints
        elif kind is str:
            if strs is None:
                strs = msg.fieldsString
            target = strs
        elif kind is bool:
            if bools is None:
                bools = msg.fieldsBool
            target = bools
        else:
            value, target = _coerce_field(msg, key, value)
        if type(key) is not str:
            raise TypeError(f"field names must be str, got {type(key).__name__} {key!r}")
        target[key] = value


def _coerce_field(msg: Any, key: object, value: Any) -> tuple[Any, Any]:
    """The slow path of :func:`fields_to_message`: subclasses and numeric types."""
    if isinstance(value, bool):
        return bool(value), msg.fieldsBool
    if isinstance(value, str):
        return str(value), msg.fieldsString
    if isinstance(value, float):
        return float(value), msg.fieldsDouble
    if isinstance(value, numbers.Integral):
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"field {key!r}: integer {value} does not fit in int64")
        return value, msg.fieldsInt
    if isinstance(value, numbers.Real):
        return float(value), msg.fieldsDouble
    raise _bad_field(key, value, "unsupported field value type, expected float, int, str or bool")


def fields_from_message(msg: Any) -> Fields:
    """Merge the typed field maps of an ``agent_pb2.Point`` into one dict.

    A key present in several maps resolves as Go does: string, then int, then
    double, then bool; the later one wins.
    """
    # upb maps have no C-level items(): iterating the keys and indexing is
    # about twice as fast as update(m.items()), and empty maps are skipped.
    fields: Fields = {}
    m = msg.fieldsString
    if m:
        for key in m:
            fields[key] = m[key]
    m = msg.fieldsInt
    if m:
        for key in m:
            fields[key] = m[key]
    m = msg.fieldsDouble
    if m:
        for key in m:
            fields[key] = m[key]
    m = msg.fieldsBool
    if m:
        for key in m:
            fields[key] = m[key]
    return fields


def _tags_from_map(tags: Any) -> Tags:
    """A ``map<string,string>`` as a dict (keys and indexing: no slow items())."""
    return {key: tags[key] for key in tags} if tags else {}


def _tags_to_message(target: Any, tags: Tags) -> None:
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(
                f"tag {key!r}: tag names and values must be str, got {type(key).__name__}: {type(value).__name__}"
            )
        target[key] = value


# --- points -----------------------------------------------------------------


def _check_scalars(where: str, **values: Any) -> None:
    """Explain which scalar attribute protobuf refused (only run on failure)."""
    for name, value in values.items():
        if name == "time" or name == "tmax":
            if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
                raise TypeError(f"{where}.{name} must be an int of nanoseconds in int64 range, got {value!r}")
        elif name == "by_name":
            if not isinstance(value, bool):
                raise TypeError(f"{where}.by_name must be bool, got {type(value).__name__}")
        elif not isinstance(value, str):
            raise TypeError(f"{where}.{name} must be str, got {type(value).__name__} {value!r:.60}")


def point_to_message(p: Point) -> Any:
    """Convert a stream :class:`Point` to an ``agent_pb2.Point``."""
    dims = p.dimensions
    msg = _PbPoint()
    # Attribute assignment is faster than keyword construction, and unlike a
    # keyword argument (where None means "unset") it refuses None.
    try:
        msg.time = p.time
        msg.name = p.name
        msg.database = p.database
        msg.retentionPolicy = p.retention_policy
        msg.group = p.group
        msg.byName = dims.by_name
    except (TypeError, ValueError):
        _check_scalars(
            "point",
            time=p.time,
            name=p.name,
            database=p.database,
            retention_policy=p.retention_policy,
            group=p.group,
            by_name=dims.by_name,
        )
        raise
    if type(p.time) is bool:
        raise TypeError("point.time must be an int of nanoseconds, got bool")
    if dims.tag_names:
        if isinstance(dims.tag_names, (str, bytes)):  # extend() would split it into characters
            raise TypeError(f"point.dimensions.tag_names must be a list of str, got {dims.tag_names!r:.80}")
        try:
            msg.dimensions.extend(dims.tag_names)
        except TypeError:
            raise TypeError(f"point.dimensions.tag_names must be a list of str, got {dims.tag_names!r:.80}") from None
    if p.tags:
        _tags_to_message(msg.tags, p.tags)
    if p.fields:
        fields_to_message(msg, p.fields)
    return msg


def point_from_message(msg: Any) -> Point:
    """Convert an ``agent_pb2.Point`` to a stream :class:`Point`."""
    # An inline loop, not a comprehension: Python 3.11 calls a function for those.
    tags: Tags = {}
    m = msg.tags
    if m:
        for key in m:
            tags[key] = m[key]
    dims = msg.dimensions
    return Point(
        msg.name,
        msg.database,
        msg.retentionPolicy,
        msg.group,
        Dimensions(msg.byName, list(dims) if dims else []),
        tags,
        fields_from_message(msg),
        msg.time,
    )


def batch_point_to_message(bp: BatchPoint, group: str) -> Any:
    """Convert a :class:`BatchPoint` of a batch with ``group`` to an ``agent_pb2.Point``."""
    msg = _PbPoint()
    try:
        msg.time = bp.time  # assignment (unlike a keyword argument) refuses None
    except (TypeError, ValueError):
        _check_scalars("batch point", time=bp.time)
        raise
    if type(bp.time) is bool:
        raise TypeError(f"batch point.time must be an int of nanoseconds, got {bp.time!r}")
    msg.group = group
    if bp.tags:
        _tags_to_message(msg.tags, bp.tags)
    if bp.fields:
        fields_to_message(msg, bp.fields)
    return msg


def batch_point_from_message(msg: Any) -> BatchPoint:
    """Convert an ``agent_pb2.Point`` received inside a batch to a :class:`BatchPoint`."""
    tags: Tags = {}
    m = msg.tags
    if m:
        for key in m:
            tags[key] = m[key]
    return BatchPoint(msg.time, fields_from_message(msg), tags)


# --- request frames ----------------------------------------------------------


def encode_request(request: Any) -> bytes:
    """Serialize an ``agent_pb2.Request`` as one frame."""
    return encode_frame(request.SerializeToString())


def _envelope_head(tag: bytes, size: int) -> bytes:
    """The bytes before a ``size``-byte body framed as the oneof member ``tag`` of a ``Request``."""
    inner = tag + encode_uvarint(size)
    return encode_uvarint(len(inner) + size) + inner


def _envelope(tag: bytes, body: bytes) -> bytes:
    """Frame ``body`` as the oneof member ``tag`` of a ``Request`` without building one."""
    return _envelope_head(tag, len(body)) + body


#: ``_envelope_head(_TAG_POINT, n)`` by ``n``, computed once per size (points up to 16 KiB).
_POINT_HEADS: List[Optional[bytes]] = [None] * 0x4000


def _point_frame(body: bytes) -> bytes:
    """Frame a serialized ``agent_pb2.Point`` as a ``Request{point}`` (the hot path of every put)."""
    n = len(body)
    if n >= 0x4000:
        return _envelope(_TAG_POINT, body)
    head = _POINT_HEADS[n]
    if head is None:
        head = _POINT_HEADS[n] = _envelope_head(_TAG_POINT, n)
    return head + body


def encode_point(p: Point) -> bytes:
    """A stream point as one ``Request{point}`` frame; validates first."""
    if type(p) is not Point and not isinstance(p, Point):
        raise TypeError(f"expected udf.Point, got {type(p).__name__}")
    body = _fastcodec.point_frame_body(p)  # the common case: cached series bytes, hand-written fields
    if body is None:
        body = point_body_general(p)
    return _point_frame(body)


def point_body_general(p: Point) -> bytes:
    """Serialize ``p`` through protobuf's general path (what :func:`encode_point` falls back to)."""
    try:
        body: bytes = point_to_message(p).SerializeToString()
    except AttributeError as exc:  # dimensions, tags or fields of the wrong type
        raise _wrong_container("point", p, exc) from None
    return body


def _wrong_container(where: str, obj: Any, exc: AttributeError) -> TypeError:
    """Name the attribute whose wrong type caused ``exc`` (only run on failure)."""
    if hasattr(obj, "dimensions"):
        dims = obj.dimensions
        if not (hasattr(dims, "by_name") and hasattr(dims, "tag_names")):
            return TypeError(f"{where}.dimensions must be udf.Dimensions, got {type(dims).__name__}")
    for name in ("tags", "fields"):
        value = getattr(obj, name, None)
        if value and not hasattr(value, "items"):
            return TypeError(f"{where}.{name} must be a dict, got {type(value).__name__}")
    return TypeError(f"{where}: {exc}")


def encode_batch(b: Batch) -> bytes:
    """A batch as BeginBatch, one Point per batch point, EndBatch frames; validates first.

    BeginBatch carries name, group, tags, size (the number of points) and byName;
    each Point time, group, tags and fields; EndBatch name, group, tmax and tags.
    """
    if not isinstance(b, Batch):
        raise TypeError(f"expected udf.Batch, got {type(b).__name__}")
    try:
        begin = _PbBegin(name=b.name, group=b.group, size=len(b.points), byName=b.by_name)
        end = _PbEnd(name=b.name, group=b.group, tmax=b.tmax)
    except (TypeError, ValueError):
        _check_scalars("batch", name=b.name, group=b.group, by_name=b.by_name, tmax=b.tmax)
        raise
    if type(b.tmax) is bool:
        raise TypeError("batch.tmax must be an int of nanoseconds, got bool")
    if b.tmax is None or b.name is None or b.group is None or b.by_name is None:
        # protobuf takes None as "unset": refuse it rather than send a default.
        _check_scalars("batch", name=b.name, group=b.group, by_name=b.by_name, tmax=b.tmax)
    if b.tags:
        try:
            _tags_to_message(begin.tags, b.tags)
        except AttributeError as exc:
            raise _wrong_container("batch", b, exc) from None
        _tags_to_message(end.tags, b.tags)
    parts = [_envelope(_TAG_BEGIN, begin.SerializeToString())]
    append = parts.append
    group = b.group
    fast_body = _fastcodec.batch_point_body
    for i, bp in enumerate(b.points):
        if not isinstance(bp, BatchPoint):
            raise TypeError(f"batch.points[{i}]: expected udf.BatchPoint, got {type(bp).__name__}")
        body = fast_body(bp, group)
        if body is not None:
            append(_point_frame(body))
            continue
        try:
            append(_point_frame(batch_point_to_message(bp, group).SerializeToString()))
        except (TypeError, ValueError) as exc:
            # UnicodeEncodeError (a string protobuf cannot encode) cannot be built from a message.
            kind = ValueError if isinstance(exc, UnicodeError) else type(exc)
            raise kind(f"batch.points[{i}]: {exc}") from None
        except AttributeError as exc:  # tags or fields of the wrong type
            raise _wrong_container(f"batch.points[{i}]", bp, exc) from None
    append(_envelope(_TAG_END, end.SerializeToString()))
    return b"".join(parts)


# --- responses -----------------------------------------------------------------


class BatchAssembler:
    """Collect BeginBatch, Point..., EndBatch responses into one :class:`Batch`.

    As in Go, ``by_name`` comes from BeginBatch and name, group, tmax and tags from
    EndBatch. Protocol violations (Begin inside a batch, End without Begin) raise
    :class:`ProtocolError` instead of Go's panic.
    """

    __slots__ = ("_by_name", "_points")

    def __init__(self) -> None:
        self._by_name = False
        self._points: Optional[List[BatchPoint]] = None

    @property
    def in_batch(self) -> bool:
        """True between a BeginBatch and its EndBatch."""
        return self._points is not None

    @property
    def pending(self) -> Optional[List[BatchPoint]]:
        """The open batch's points so far (a hot loop may append to it), or ``None`` outside a batch."""
        return self._points

    def begin(self, msg: Any) -> None:
        if self._points is not None:
            raise ProtocolError("BeginBatch received inside a batch (no EndBatch for the previous one)")
        self._by_name = msg.byName
        self._points = []

    def point(self, msg: Any) -> None:
        points = self._points
        if points is None:
            raise ProtocolError("batch point received outside a batch")
        points.append(batch_point_from_message(msg))

    def end(self, msg: Any) -> Batch:
        points = self._points
        if points is None:
            raise ProtocolError("EndBatch received without a BeginBatch")
        self._points = None
        return Batch(msg.name, msg.tmax, msg.group, self._by_name, _tags_from_map(msg.tags), points)

    def eof(self) -> None:
        """The stream ended: raise ProtocolError if a batch was left open (its points would be lost)."""
        if self._points is not None:
            count = len(self._points)
            self._points = None
            raise ProtocolError(f"the agent's output ended inside a batch ({count} points after BeginBatch, no EndBatch)")


# --- many responses in one parse ------------------------------------------------------


def _message_class(pool: Any, name: str) -> Any:
    from google.protobuf import message_factory

    descriptor = pool.FindMessageTypeByName(name)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # pragma: no cover


def _private_classes(views: bool = True) -> Tuple[Any, Any, Any]:
    """The private wrappers ``Responses``, ``ResponseViews`` and ``PointView`` (package ``udf_internal``).

    ``Responses { repeated agent.Response r = 1; }``: a run of frames
    ``varint(len) payload varint(len) payload ...`` becomes a valid
    serialization of it once each frame is preceded by the tag byte 0x0a
    (field 1, length-delimited), so one C-level parse decodes every frame of a
    read into ordinary ``agent_pb2.Response``s.

    ``ResponseViews`` is the same over ``ResponseView``, a copy of
    ``agent.Response`` whose ``point`` is a ``PointView``: a copy of
    ``agent.Point`` that sees its ``tags`` map entries (field 7) as
    ``repeated bytes``, wire-compatible with the map. The raw entries of a tag
    set are a key under which the decoded dict is cached (:func:`_tags_of`):
    a tag set repeats from point to point, so it is decoded once. Everything
    else is protobuf's own parse. They live in the default pool under a file and
    package name of their own.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.Default()
    if not views:
        try:
            pool.FindMessageTypeByName("udf_internal.Responses")
        except KeyError:
            field = descriptor_pb2.FieldDescriptorProto
            file = descriptor_pb2.FileDescriptorProto(
                name="udf_internal/responses.proto", package="udf_internal", syntax="proto3",
                dependency=[agent_pb2.DESCRIPTOR.name],
            )
            file.message_type.add(name="Responses").field.add(
                name="r", number=1, label=field.LABEL_REPEATED, type=field.TYPE_MESSAGE, type_name=".agent.Response"
            )
            pool.AddSerializedFile(file.SerializeToString())
        responses = _message_class(pool, "udf_internal.Responses")
        return responses, responses, _PbResponse
    try:
        pool.FindMessageTypeByName("udf_internal.ResponseViews")
    except KeyError:
        field = descriptor_pb2.FieldDescriptorProto
        # One file per message: protobuf 4.22's upb crashes (segfault) on a
        # message field whose type was declared in the same dynamic file.
        point_file = descriptor_pb2.FileDescriptorProto(
            name="udf_internal/point_view.proto",
            package="udf_internal",
            syntax="proto3",
            dependency=[agent_pb2.DESCRIPTOR.name],
        )
        point = point_file.message_type.add()
        agent_pb2.Point.DESCRIPTOR.CopyToProto(point)
        point.name = "PointView"
        for f in point.field:
            if f.name == "tags":
                f.type = field.TYPE_BYTES
                f.ClearField("type_name")
            elif f.type_name.startswith(".agent.Point."):  # the other maps' entry types, nested
                f.type_name = ".udf_internal.PointView." + f.type_name[len(".agent.Point.") :]
        entries = [n for n in point.nested_type if n.name != "TagsEntry"]
        del point.nested_type[:]
        point.nested_type.extend(entries)
        pool.AddSerializedFile(point_file.SerializeToString())
        response_file = descriptor_pb2.FileDescriptorProto(
            name="udf_internal/response_view.proto",
            package="udf_internal",
            syntax="proto3",
            dependency=[agent_pb2.DESCRIPTOR.name, point_file.name],
        )
        response = response_file.message_type.add()
        agent_pb2.Response.DESCRIPTOR.CopyToProto(response)
        response.name = "ResponseView"
        for f in response.field:
            if f.name == "point":
                f.type_name = ".udf_internal.PointView"
        pool.AddSerializedFile(response_file.SerializeToString())
        for name, element, dependency in (
            ("Responses", ".agent.Response", agent_pb2.DESCRIPTOR.name),
            ("ResponseViews", ".udf_internal.ResponseView", response_file.name),
        ):
            file = descriptor_pb2.FileDescriptorProto(
                name=f"udf_internal/{name.lower()}.proto", package="udf_internal", syntax="proto3", dependency=[dependency]
            )
            file.message_type.add(name=name).field.add(
                name="r", number=1, label=field.LABEL_REPEATED, type=field.TYPE_MESSAGE, type_name=element
            )
            pool.AddSerializedFile(file.SerializeToString())
    _message_class(pool, "udf_internal.PointView")  # before its users: see the crash note above
    return (
        _message_class(pool, "udf_internal.Responses"),
        _message_class(pool, "udf_internal.ResponseViews"),
        _message_class(pool, "udf_internal.ResponseView"),
    )


def _views_are_safe() -> bool:
    """Whether this protobuf runs the view schema: the pure-Python backend, or upb from 6.0.

    protobuf 4.22's upb crashes (a segfault, not an exception) reading a
    PointView inside a ResponseView; 6.x (in the Beam test environment) and
    7.x are tested; the releases between keep the plain path (maps decoded key
    by key), which every version runs.
    """
    from google.protobuf import __version__ as version
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() == "python":
        return True
    try:
        return int(version.split(".")[0]) >= 6
    except ValueError:
        return False


VIEWS = _views_are_safe()
if VIEWS:
    _Responses, _ResponseViews, _ResponseView = _private_classes()
else:
    _Responses, _ResponseViews, _ResponseView = _private_classes(views=False)
_RESPONSES_TAG = b"\n"  # field 1 of udf_internal.Responses and ResponseViews, wire type 2

#: Tag sets decoded so far: the tuple of a PointView's raw ``tags`` entries ->
#: the dict (copied for each point). Emptied when it holds TAGS_CACHE_SIZE sets.
_TAG_SETS: Dict[Tuple[bytes, ...], Tags] = {}
TAGS_CACHE_SIZE = 4096
_TAG_FIELD = b"\x3a"  # field 7 of agent.Point, wire type 2


def _tags_of(raw: Any) -> Tags:
    """The tags dict of a PointView's raw ``tags`` entries (a fresh dict: points are mutable)."""
    if not raw:
        return {}
    key = tuple(raw[:])  # a slice is a C-level copy, much faster than iterating the container
    tags = _TAG_SETS.get(key)
    if tags is None:
        # The entries as a real map, parsed and checked (UTF-8, structure) by protobuf.
        data = b"".join([_TAG_FIELD + encode_uvarint(len(entry)) + entry for entry in key])
        try:
            msg = _PbPoint.FromString(data)
            tags = _tags_from_map(msg.tags)
        except Exception as exc:  # protobuf's DecodeError, or ValueError for invalid UTF-8
            raise ProtocolError(f"malformed Response: undecodable point tags: {exc}") from None
        if len(_TAG_SETS) >= TAGS_CACHE_SIZE:
            _TAG_SETS.clear()
        _TAG_SETS[key] = tags
    return tags.copy()


def _point_from_view(msg: Any) -> Point:
    """:func:`point_from_message` for a ``PointView``."""
    if not VIEWS:
        return point_from_message(msg)
    dims = msg.dimensions
    return Point(
        msg.name,
        msg.database,
        msg.retentionPolicy,
        msg.group,
        Dimensions(msg.byName, dims[:] if dims else []),
        _tags_of(msg.tags),
        fields_from_message(msg),
        msg.time,
    )


def _batch_point_from_view(msg: Any) -> BatchPoint:
    """:func:`batch_point_from_message` for a ``PointView``."""
    if not VIEWS:
        return batch_point_from_message(msg)
    return BatchPoint(msg.time, fields_from_message(msg), _tags_of(msg.tags))


def _response_of(view: Any) -> Any:
    """A ``ResponseView`` that is not a point as the ``agent_pb2.Response`` it is (answers are rare)."""
    if not VIEWS:
        return view
    return _PbResponse.FromString(view.SerializeToString())


def parse_responses(frames: List[bytes]) -> Tuple[Sequence[Any], Optional[ProtocolError]]:
    """Parse whole frames (length prefix included) as ``agent_pb2.Response`` messages.

    Returns ``(responses, None)``, or, when a frame does not decode, the
    responses before it and the :class:`ProtocolError` naming it. The run is
    parsed in one call; only if that fails is it parsed frame by frame to find
    the culprit.
    """
    if not frames:
        return [], None
    try:
        return _Responses.FromString(_RESPONSES_TAG + _RESPONSES_TAG.join(frames)).r, None
    except Exception:  # protobuf's DecodeError: some frame is bad; find which
        pass
    return _parse_payloads([_payload(frame) for frame in frames])


def _parse_payloads(payloads: List[bytes], parse: Any = _PbResponse.FromString) -> Tuple[List[Any], Optional[ProtocolError]]:
    """Parse frame payloads one by one; stop at the first that does not decode."""
    responses = []
    for payload in payloads:
        try:
            responses.append(parse(payload))
        except Exception as exc:  # protobuf's DecodeError
            return responses, ProtocolError(f"undecodable Response ({len(payload)} bytes): {exc}")
    return responses, None


def _parse_views(frames: List[bytes]) -> Tuple[Sequence[Any], Optional[ProtocolError]]:
    """:func:`parse_responses` into ``ResponseView`` messages (the reader's path)."""
    if not frames:
        return [], None
    try:
        return _ResponseViews.FromString(_RESPONSES_TAG + _RESPONSES_TAG.join(frames)).r, None
    except Exception:  # protobuf's DecodeError: some frame is bad; find which
        pass
    return _parse_payloads([_payload(frame) for frame in frames], _ResponseView.FromString)


def _parse_frame(frame: bytes) -> Any:
    """One whole frame as a ``ResponseView``; ProtocolError if it does not decode."""
    responses, error = _parse_payloads([_payload(frame)], _ResponseView.FromString)
    if error is not None:
        raise error
    return responses[0]


def _payload(frame: bytes) -> bytes:
    decoded = decode_uvarint(frame)
    assert decoded is not None  # FrameDecoder only returns complete frames
    return frame[decoded[1] :]


#: Event kinds produced by :class:`ResponseDecoder`, besides the request kinds
#: ("info", "init", "snapshot", "restore") whose item is the whole Response.
POINTS = "points"
BATCH = "batch"


class ResponseDecoder:
    """Turn Response payloads into deliveries, assembling batches (pure, sans-I/O).

    :meth:`decode` returns ``(events, error)``: ``events`` in stream order, each
    ``(POINTS, [Point, ...])`` (consecutive points grouped), ``(BATCH, Batch)``
    or ``(kind, Response)`` for an answer to an info/init/snapshot/restore/keepalive
    request; ``error`` is the :class:`ProtocolError` or :class:`AgentError` that
    ended the run, or ``None``. Events before an error are still returned, so what
    the agent sent before a fault is delivered.
    """

    __slots__ = ("_assembler",)

    def __init__(self) -> None:
        self._assembler = BatchAssembler()

    def decode(self, payloads: List[bytes]) -> Tuple[List[Tuple[str, Any]], Optional[UDFError]]:
        """Decode frame payloads (as :meth:`udf.wire.FrameDecoder.feed` returns them)."""
        return self._events(*_parse_payloads(payloads, _ResponseView.FromString))

    def decode_frames(self, frames: List[bytes]) -> Tuple[List[Tuple[str, Any]], Optional[UDFError]]:
        """Decode whole frames (:meth:`udf.wire.FrameDecoder.feed_frames`), the reader's path.

        A point whose series and layout were seen before is decoded by hand
        (:mod:`udf._fastdecode`), every other frame by protobuf, which the
        hand path learns from. Where most points miss the hand path, the read
        is parsed by protobuf in one call instead.
        """
        if not _fastdecode.fast_read(len(frames)):
            return self._events(*_parse_views(frames))
        fast = _fastdecode.decode_point_frame
        batch = self._assembler.pending
        events: List[Tuple[str, Any]] = []
        points: Optional[List[Any]] = None
        misses = 0
        try:
            for frame in frames:
                item = fast(frame, batch is not None)
                if item is None:
                    misses += 1
                    response = _parse_frame(frame)
                    if not response.HasField("point"):
                        if not response.HasField("keepalive"):  # for the round-trip time: does not split a run
                            points = None
                        batch = self._answer(response, events)
                        continue
                    item = _point_from_view(response.point) if batch is None else _batch_point_from_view(response.point)
                    _fastdecode.learn(frame, item)
                if batch is not None:
                    batch.append(item)
                    continue
                if points is None:
                    points = []
                    events.append((POINTS, points))
                points.append(item)
        except UDFError as exc:
            return events, exc
        except ValueError as exc:  # e.g. invalid UTF-8 in a string, found only on access by some protobuf versions
            return events, ProtocolError(f"malformed Response: {exc}")
        finally:
            _fastdecode.missed(misses)
        return events, None

    def _events(self, responses: Sequence[Any], error: Optional[UDFError]) -> Tuple[List[Tuple[str, Any]], Optional[UDFError]]:
        batch = self._assembler.pending
        events: List[Tuple[str, Any]] = []
        points: Optional[List[Point]] = None
        try:
            for response in responses:
                if not response.HasField("point"):
                    if not response.HasField("keepalive"):
                        points = None
                    batch = self._answer(response, events)
                    continue
                if batch is not None:
                    batch.append(_batch_point_from_view(response.point))
                    continue
                point = _point_from_view(response.point)  # before the event: it may raise
                if points is None:
                    points = []
                    events.append((POINTS, points))
                points.append(point)
        except UDFError as exc:
            return events, exc
        except ValueError as exc:  # e.g. invalid UTF-8 in a string, found only on access by some protobuf versions
            return events, ProtocolError(f"malformed Response: {exc}")
        return events, error

    def _answer(self, response: Any, events: List[Tuple[str, Any]]) -> Optional[List[BatchPoint]]:
        """Handle a Response that is not a point: append its event; return the open batch's list, if any."""
        kind = response.WhichOneof("message")
        assembler = self._assembler
        if kind == "begin":
            assembler.begin(response.begin)
        elif kind == "end":
            events.append((BATCH, assembler.end(response.end)))
        elif kind == "error":
            raise AgentError(response.error.error)
        elif kind is None:
            raise ProtocolError(
                f"Response with no known message set ({response.ByteSize()} bytes): empty or from a newer protocol"
            )
        else:
            events.append((kind, _response_of(response)))
        return assembler.pending

    def eof(self) -> None:
        """The stream ended: raise ProtocolError if a batch was left open."""
        self._assembler.eof()
