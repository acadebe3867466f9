"""Protobuf's path of the Response decoder: runs of frames parsed in one call, through a run-time view schema.

Private to :mod:`udf.convert`, which re-exports the public conversions of
parsed messages to models defined here (:func:`point_from_message`, ...): a
decoded point's tags and fields are in key order, whichever path decoded it
(protobuf's maps iterate in an order of their own on upb). Two private schemas, built at import in the
default descriptor pool under a package of their own (``udf_internal``):

``Responses { repeated agent.Response r = 1; }``: a run of frames ``varint(len)
payload varint(len) payload ...`` becomes a valid serialization of it once
each frame is preceded by the tag byte 0x0a (field 1, length-delimited), so one
C-level parse decodes every frame of a read.

``ResponseViews`` is the same over ``ResponseView``, a copy of ``agent.Response``
whose ``point`` is a ``PointView``: a copy of ``agent.Point`` that sees its
``tags`` map entries (field 7) as ``repeated bytes``, wire-compatible with the
map. The raw entries of a tag set are the key under which its decoded dict is
cached (a tag set repeats from point to point, so it is decoded once). On the
pure-Python backend the ``fieldsDouble`` values are read as ``fixed64`` (the same
wire type) and turned into floats bit for bit: that backend would turn every
NaN into ``math.nan`` (and, before 5.x, -0.0 into 0.0), where upb, Go and the
hand-written decoder keep the bits.

The views run on upb from protobuf 6 and on the pure-Python backend: protobuf
4.22's upb crashes (a segfault, not an exception) reading a message field whose
dynamic type was declared in the same or a related private file, and 5.x is not
tested, so there the :class:`Parser` uses ``Responses`` and the public
conversions (maps read key by key).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import agent_pb2

from ._cache import BoundedCache
from .errors import ProtocolError
from .models import BatchPoint, Dimensions, Fields, Point, Tags
from .wire import decode_uvarint, encode_uvarint

#: Tag sets a parser keeps (decoded once, copied for each point) before it empties its cache.
TAGS_CACHE_SIZE = 4096
#: Estimated bytes of tag sets a parser keeps before it empties its cache.
TAGS_CACHE_BYTES = 4 << 20

_PbPoint = agent_pb2.Point
_PbResponse = agent_pb2.Response
_RUN_TAG = b"\n"  # field 1 of udf_internal.Responses and ResponseViews, wire type 2
_TAG_FIELD = b"\x3a"  # field 7 of agent.Point, wire type 2
_BATCH_EDGES = ("begin", "end")
_bits_to_double = struct.Struct("<d").unpack
_pack_bits = struct.Struct("<Q").pack


# --- parsed messages to models ------------------------------------------------------------


def key_order(keys: Any) -> list[Any]:
    """The keys of a map or dict in key order (the order of every decoded point's tags and fields)."""
    try:
        return sorted(keys)
    except TypeError:  # protobuf 4.22's upb gives a key that is not UTF-8 as bytes: after the str keys
        return sorted(keys, key=lambda key: (type(key) is bytes, key))


def in_key_order(fields: Fields) -> Fields:
    """``fields`` (two or more) as a new dict in key order."""
    try:
        return dict(sorted(fields.items()))
    except TypeError:  # a key that is bytes (protobuf 4.22's upb): key_order puts it last
        return {key: fields[key] for key in key_order(fields)}


def fields_from_message(msg: Any) -> Fields:
    """Merge the typed field maps of an ``agent_pb2.Point`` into one dict, in key order.

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
    return fields if len(fields) < 2 else in_key_order(fields)


def _fields_by_bits(msg: Any) -> Fields:
    """:func:`fields_from_message` for a PointView whose doubles are bits (the pure-Python backend)."""
    fields = fields_from_message(msg)  # the doubles as the ints of their bits, in their place
    doubles, bools = msg.fieldsDouble, msg.fieldsBool
    for key in doubles:
        if key not in bools:  # a bool of the same name wins
            fields[key] = _bits_to_double(_pack_bits(doubles[key]))[0]
    return fields


def tags_from_map(tags: Any) -> Tags:
    """A ``map<string,string>`` as a dict in key order (keys and indexing: no slow items())."""
    return {key: tags[key] for key in key_order(tags)} if tags else {}


def point_from_message(msg: Any) -> Point:
    """Convert an ``agent_pb2.Point`` to a stream :class:`Point`."""
    # An inline loop, not a comprehension: Python 3.11 calls a function for those.
    tags: Tags = {}
    m = msg.tags
    if m:
        for key in key_order(m):
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


def batch_point_from_message(msg: Any) -> BatchPoint:
    """Convert an ``agent_pb2.Point`` received inside a batch to a :class:`BatchPoint`."""
    return BatchPoint(msg.time, fields_from_message(msg), tags_from_map(msg.tags))


# --- the private schemas ---------------------------------------------------------------


def _message_class(pool: Any, name: str) -> Any:
    from google.protobuf import message_factory

    descriptor = pool.FindMessageTypeByName(name)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # pragma: no cover


def _run_file(name: str, element: str, dependency: str) -> Any:
    """The file of ``message {name} { repeated {element} r = 1; }``."""
    from google.protobuf import descriptor_pb2

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name=f"udf_internal/{name.lower()}.proto", package="udf_internal", syntax="proto3", dependency=[dependency]
    )
    file.message_type.add(name=name).field.add(
        name="r", number=1, label=field.LABEL_REPEATED, type=field.TYPE_MESSAGE, type_name=element
    )
    return file


def _point_view_file(double_bits: bool) -> Any:
    """The file of ``PointView``: ``agent.Point`` with its tags as raw entries (and, if asked, its doubles as bits)."""
    from google.protobuf import descriptor_pb2

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="udf_internal/point_view.proto",
        package="udf_internal",
        syntax="proto3",
        dependency=[agent_pb2.DESCRIPTOR.name],
    )
    point = file.message_type.add()
    agent_pb2.Point.DESCRIPTOR.CopyToProto(point)
    point.name = "PointView"
    for f in point.field:
        if f.name == "tags":
            f.type = field.TYPE_BYTES
            f.ClearField("type_name")
        elif f.type_name.startswith(".agent.Point."):  # the other maps' entry types, nested
            f.type_name = ".udf_internal.PointView." + f.type_name[len(".agent.Point.") :]
    entries = [n for n in point.nested_type if n.name != "TagsEntry"]
    for entry in entries:
        if entry.name == "FieldsDoubleEntry" and double_bits:
            entry.field[1].type = field.TYPE_FIXED64  # "value": the same wire type as double
    del point.nested_type[:]
    point.nested_type.extend(entries)
    return file


def _private_classes(views: bool, double_bits: bool) -> tuple[Any, Any]:
    """The message classes of a run of frames and of a frame: (Responses, Response) or (ResponseViews, ResponseView)."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    if not views:
        try:
            pool.FindMessageTypeByName("udf_internal.Responses")
        except KeyError:
            pool.AddSerializedFile(
                _run_file("Responses", ".agent.Response", agent_pb2.DESCRIPTOR.name).SerializeToString()
            )
        return _message_class(pool, "udf_internal.Responses"), _PbResponse
    try:
        pool.FindMessageTypeByName("udf_internal.ResponseViews")
    except KeyError:
        # One file per message: protobuf 4.22's upb crashes (segfault) on a
        # message field whose type was declared in the same dynamic file.
        point_file = _point_view_file(double_bits)
        pool.AddSerializedFile(point_file.SerializeToString())
        from google.protobuf import descriptor_pb2

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
        run = _run_file("ResponseViews", ".udf_internal.ResponseView", response_file.name)
        pool.AddSerializedFile(run.SerializeToString())
    _message_class(pool, "udf_internal.PointView")  # before its users: see the crash note above
    return _message_class(pool, "udf_internal.ResponseViews"), _message_class(pool, "udf_internal.ResponseView")


def _backend() -> tuple[bool, bool]:
    """(whether this protobuf runs the view schema, whether it is the pure-Python backend).

    The views run on the pure-Python backend, and on upb from 6.0: protobuf
    4.22's upb crashes reading a PointView inside a ResponseView; 6.x (in the
    Beam test environment) and 7.x are tested; the releases between keep the
    plain path.
    """
    from google.protobuf import __version__ as version
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() == "python":
        return True, True
    try:
        return int(version.split(".")[0]) >= 6, False
    except ValueError:
        return False, False


VIEWS, PURE_PYTHON_BACKEND = _backend()
_VIEW_CLASSES = _private_classes(True, PURE_PYTHON_BACKEND) if VIEWS else None
_PLAIN_CLASSES = _private_classes(False, False)


def one_member(payload: bytes) -> bool:
    """Whether a Response payload is exactly one field (a tag, a length, that many bytes), as every agent writes it."""
    if not payload:
        return False
    pos = 2 if payload[0] >= 0x80 else 1  # the oneof members' tags are one or two bytes
    try:
        length = decode_uvarint(payload, pos)
    except ProtocolError:
        return False
    return length is not None and length[0] + length[1] == len(payload)


def payload_of(frame: bytes) -> bytes:
    """The payload of one whole frame (as ``FrameDecoder.feed_frames`` returns it)."""
    decoded = decode_uvarint(frame)
    assert decoded is not None  # FrameDecoder only returns complete frames
    return frame[decoded[1] :]


def parse_payloads(
    payloads: list[bytes], parse: Any = _PbResponse.FromString
) -> tuple[list[Any], ProtocolError | None]:
    """Parse frame payloads one by one; stop at the first that does not decode."""
    responses = []
    for payload in payloads:
        try:
            responses.append(parse(payload))
        except Exception as exc:  # protobuf's DecodeError
            return responses, ProtocolError(f"undecodable Response ({len(payload)} bytes): {exc}")
    return responses, None


def parse_run(run_class: Any, frame_class: Any, frames: list[bytes]) -> tuple[Sequence[Any], ProtocolError | None]:
    """Parse whole frames in one call; if that fails, frame by frame to find which one does not decode."""
    if not frames:
        return [], None
    try:
        return run_class.FromString(_RUN_TAG + _RUN_TAG.join(frames)).r, None
    except Exception:  # protobuf's DecodeError: some frame is bad; find which
        pass
    return parse_payloads([payload_of(frame) for frame in frames], frame_class.FromString)


class Parser:
    """One stream's protobuf path: parses frames, makes points of the parsed messages.

    With the views (:data:`VIEWS`), it keeps the stream's decoded tag sets (a
    :class:`udf._cache.BoundedCache`); otherwise it parses ``agent.Response``
    and uses the public conversions. ``views=False`` forces the latter.
    """

    __slots__ = ("views", "_run", "_frame", "_fields", "_tag_sets")

    def __init__(self, views: bool = VIEWS) -> None:
        self.views = views and VIEWS
        self._run, self._frame = _VIEW_CLASSES if self.views and _VIEW_CLASSES else _PLAIN_CLASSES
        self._fields = _fields_by_bits if PURE_PYTHON_BACKEND else fields_from_message
        self._tag_sets = BoundedCache("decode: tag sets", TAGS_CACHE_SIZE, TAGS_CACHE_BYTES, shared=False)

    def run(self, frames: list[bytes]) -> tuple[Sequence[Any], ProtocolError | None]:
        """Whole frames parsed in one call: the responses, and the error of the first frame that does not decode."""
        return parse_run(self._run, self._frame, frames)

    def payloads(self, payloads: list[bytes]) -> tuple[list[Any], ProtocolError | None]:
        """Payloads parsed one by one."""
        return parse_payloads(payloads, self._frame.FromString)

    def frame(self, frame: bytes) -> Any:
        """One whole frame parsed; ProtocolError if it does not decode."""
        responses, error = parse_payloads([payload_of(frame)], self._frame.FromString)
        if error is not None:
            raise error
        return responses[0]

    def answer(self, msg: Any, payload: bytes) -> Any:
        """The ``agent_pb2.Response`` of a parsed message that is not a point, from its payload.

        A view is parsed again as a real Response (answers are rare), except
        a batch's BeginBatch or EndBatch that is the payload's one member (those
        members of a view are already ``agent`` types). So a point member that
        a later member replaced, read as a view with its tags unchecked, is
        refused when protobuf refuses it (tags that are not UTF-8).
        """
        if not self.views or (msg.WhichOneof("message") in _BATCH_EDGES and one_member(payload)):
            return msg
        responses, error = parse_payloads([payload])
        if error is not None:
            raise error
        return responses[0]

    def point(self, msg: Any) -> Point:
        """The :class:`Point` of a parsed ``Point`` (or ``PointView``)."""
        if not self.views:
            return point_from_message(msg)
        dims = msg.dimensions
        return Point(
            msg.name,
            msg.database,
            msg.retentionPolicy,
            msg.group,
            Dimensions(msg.byName, dims[:] if dims else []),
            self._tags(msg.tags),
            self._fields(msg),
            msg.time,
        )

    def batch_point(self, msg: Any) -> BatchPoint:
        """The :class:`BatchPoint` of a parsed ``Point`` (or ``PointView``) inside a batch."""
        if not self.views:
            return batch_point_from_message(msg)
        return BatchPoint(msg.time, self._fields(msg), self._tags(msg.tags))

    def _tags(self, raw: Any) -> Tags:
        """The tags dict of a PointView's raw ``tags`` entries (a fresh dict: points are mutable)."""
        if not raw:
            return {}
        key = tuple(raw[:])  # a slice is a C-level copy, much faster than iterating the container
        tags = self._tag_sets.data.get(key)
        if tags is None:
            # The entries as a real map, parsed and checked (UTF-8, structure) by protobuf.
            data = b"".join([_TAG_FIELD + encode_uvarint(len(entry)) + entry for entry in key])
            try:
                m = _PbPoint.FromString(data).tags
                tags = {k: m[k] for k in key_order(m)}
            except Exception as exc:  # protobuf's DecodeError, or ValueError for invalid UTF-8
                raise ProtocolError(f"malformed Response: undecodable point tags: {exc}") from None
            self._tag_sets.keep(key, tags, 3 * len(data) + 800)  # the raw entries, the dict and its strings
        return tags.copy()
