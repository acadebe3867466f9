"""Conversions between :mod:`udf.models` and ``agent_pb2`` messages, and batch assembly.

Pure functions (no threads, no I/O). The per-point functions are the hot path:
a point is encoded by the hand-written writers of :mod:`udf._fastcodec` when
its values are plain ``str``, ``int``, ``float`` and ``bool``, and by protobuf
otherwise; a Response is decoded by :mod:`udf._fastdecode` where it matches
what that stream sent before, and by protobuf (:mod:`udf._views`) otherwise.
Either way a value gives the same bytes, and a frame the same values, every
time. Validation errors name the offending field and are raised before
anything is written.

``UDF_PUREPROTOBUF=1`` in the environment when :mod:`udf` is imported turns
the hand-written paths off: every point is then encoded and decoded by
protobuf's generated classes alone (:data:`PURE_PROTOBUF`).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

import agent_pb2

from . import _fastcodec, _fastdecode, _views
from ._views import batch_point_from_message, fields_from_message, point_from_message, tags_from_map
from .errors import AgentError, ProtocolError, UDFError
from .models import INT64_MAX, INT64_MIN, Batch, BatchPoint, Dimensions, Fields, Point, Tags
from .wire import encode_frame, encode_uvarint

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
    "PURE_PROTOBUF",
]

#: Whether the codec's hand-written paths are off (``UDF_PUREPROTOBUF`` set to
#: anything but ``0`` when :mod:`udf` was imported): protobuf alone encodes and decodes.
PURE_PROTOBUF = os.environ.get("UDF_PUREPROTOBUF", "") not in ("", "0")


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

    def __init__(self, wants: int, provides: int, options: dict[str, Any] | None = None) -> None:
        self.wants = wants
        self.provides = provides
        self.options: dict[str, Any] = options if options is not None else {}

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
            if not isinstance(key, str):
                raise TypeError(f"field names must be str, got {type(key).__name__} {key!r}")
            key = str.__str__(key)
        target[key] = value


def _plain_value(value: Any) -> Any:
    """The plain ``str``, ``int``, ``float`` or ``bool`` protobuf encodes of ``value``, else ``value`` itself.

    A str subclass (``numpy.str_``, a ``(str, Enum)`` member) is its string
    (what protobuf writes; not its ``str()``, which for an Enum is its name);
    an int or float subclass (``IntEnum``, ``numpy.float64``) is its number; a
    numpy scalar (``numpy.bool_``, ``numpy.int64``) is what ``.item()`` gives,
    whichever protobuf release is installed.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # not bool: bool cannot be subclassed
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if kind.__module__ == "numpy" and hasattr(value, "item"):
        item = value.item()
        if type(item) in (str, int, float, bool):
            return item
    return value


def _coerce_field(msg: Any, key: object, value: Any) -> tuple[Any, Any]:
    """The slow path of :func:`fields_to_message`: subclasses and numeric types."""
    value = _plain_value(value)
    kind = type(value)
    if kind is bool:
        return value, msg.fieldsBool
    if kind is str:
        return value, msg.fieldsString
    if kind is float:
        return value, msg.fieldsDouble
    if kind is int or isinstance(value, numbers.Integral):
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"field {key!r}: integer {value} does not fit in int64")
        return value, msg.fieldsInt
    if isinstance(value, numbers.Real):
        return float(value), msg.fieldsDouble
    raise _bad_field(key, value, "unsupported field value type, expected float, int, str or bool")


def _tags_to_message(target: Any, tags: Tags) -> None:
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str:
            if not (isinstance(key, str) and isinstance(value, str)):
                raise TypeError(
                    f"tag {key!r}: tag names and values must be str, got {type(key).__name__}: {type(value).__name__}"
                )
            key, value = str.__str__(key), str.__str__(value)
        target[key] = value


def _plain_point(p: Point) -> Point | None:
    """``p`` with its values made plain (:func:`_plain_value`), or None if its containers are not the usual ones."""
    dims = p.dimensions
    if type(dims) is not Dimensions or not isinstance(dims.tag_names, list):
        return None
    tags, fields = p.tags, p.fields
    if not (isinstance(tags, dict) and isinstance(fields, dict)):
        return None
    return Point(
        _plain_value(p.name),
        _plain_value(p.database),
        _plain_value(p.retention_policy),
        _plain_value(p.group),
        Dimensions(_plain_value(dims.by_name), [_plain_value(name) for name in dims.tag_names]),
        {_plain_value(k): _plain_value(v) for k, v in tags.items()},
        {_plain_value(k): _plain_value(v) for k, v in fields.items()},
        _plain_value(p.time),
    )


def _plain_batch_point(bp: BatchPoint) -> BatchPoint | None:
    """:func:`_plain_point` for a batch point."""
    tags, fields = bp.tags, bp.fields
    if not (isinstance(tags, dict) and isinstance(fields, dict)):
        return None
    return BatchPoint(
        _plain_value(bp.time),
        {_plain_value(k): _plain_value(v) for k, v in fields.items()},
        {_plain_value(k): _plain_value(v) for k, v in tags.items()},
    )


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
_POINT_HEADS: list[bytes | None] = [None] * 0x4000


def _point_frame(body: bytes) -> bytes:
    """Frame a serialized ``agent_pb2.Point`` as a ``Request{point}`` (the hot path of every put)."""
    n = len(body)
    if n >= 0x4000:
        return _envelope(_TAG_POINT, body)
    head = _POINT_HEADS[n]
    if head is None:
        head = _POINT_HEADS[n] = _envelope_head(_TAG_POINT, n)
    return head + body


def _never(*args: Any) -> None:
    """The hand-written encoder when PURE_PROTOBUF turns it off."""
    return None


_point_body = _never if PURE_PROTOBUF else _fastcodec.point_frame_body
_batch_point_body = _never if PURE_PROTOBUF else _fastcodec.batch_point_body


def encode_point(p: Point) -> bytes:
    """A stream point as one ``Request{point}`` frame; validates first.

    Plain values take the hand-written writers; a point holding str, int or
    float subclasses or numpy scalars is made plain first (:func:`_plain_value`),
    so that it gives the bytes its plain twin gives, whatever is cached; what
    they cannot write takes protobuf's general path, which names any error.
    """
    if type(p) is not Point and not isinstance(p, Point):
        raise TypeError(f"expected udf.Point, got {type(p).__name__}")
    body = _point_body(p)  # the common case: cached series bytes, hand-written fields
    if body is None:
        plain = _plain_point(p)
        body = point_body_general(p) if plain is None else _point_body(plain) or point_body_general(plain)
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
    fast_body = _batch_point_body
    for i, bp in enumerate(b.points):
        if not isinstance(bp, BatchPoint):
            raise TypeError(f"batch.points[{i}]: expected udf.BatchPoint, got {type(bp).__name__}")
        body = fast_body(bp, group)
        if body is None:
            plain = _plain_batch_point(bp)
            if plain is not None:
                bp = plain
                body = fast_body(bp, _plain_value(group))
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
        self._points: list[BatchPoint] | None = None

    @property
    def in_batch(self) -> bool:
        """True between a BeginBatch and its EndBatch."""
        return self._points is not None

    @property
    def pending(self) -> list[BatchPoint] | None:
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
        return Batch(msg.name, msg.tmax, msg.group, self._by_name, tags_from_map(msg.tags), points)

    def eof(self) -> None:
        """The stream ended: raise ProtocolError if a batch was left open (its points would be lost)."""
        if self._points is not None:
            count = len(self._points)
            self._points = None
            raise ProtocolError(
                f"the agent's output ended inside a batch ({count} points after BeginBatch, no EndBatch)"
            )


# --- many responses in one parse ------------------------------------------------------


def parse_responses(frames: list[bytes]) -> tuple[Sequence[Any], ProtocolError | None]:
    """Parse whole frames (length prefix included) as ``agent_pb2.Response`` messages.

    Returns ``(responses, None)``, or, when a frame does not decode, the
    responses before it and the :class:`ProtocolError` naming it. The run is
    parsed in one call (``udf_internal.Responses``, see :mod:`udf._views`);
    only if that fails is it parsed frame by frame to find the culprit.
    """
    return _views.parse_run(_PLAIN_RUN, _PbResponse, frames)


_PLAIN_RUN = _views._PLAIN_CLASSES[0]


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

    One decoder reads one stream: it owns that stream's hand-written decoder
    (:class:`udf._fastdecode.HandDecoder`: what it learned and its hit rate) and
    its protobuf path (:class:`udf._views.Parser`: decoded tag sets), so one
    stream's traffic never slows another's. A frame decodes to the same values
    (NaN payloads and the sign of zero kept) with its tags and fields in key
    order, whichever path took it.
    """

    __slots__ = ("_assembler", "_parser", "_hand")

    def __init__(self) -> None:
        self._assembler = BatchAssembler()
        self._parser = _views.Parser(views=not PURE_PROTOBUF)
        self._hand = None if PURE_PROTOBUF else _fastdecode.HandDecoder()

    def decode(self, payloads: list[bytes]) -> tuple[list[tuple[str, Any]], UDFError | None]:
        """Decode frame payloads (as :meth:`udf.wire.FrameDecoder.feed` returns them)."""
        responses, error = self._parser.payloads(payloads)
        return self._events(responses, error, payloads, False)

    def decode_frames(self, frames: list[bytes]) -> tuple[list[tuple[str, Any]], UDFError | None]:
        """Decode whole frames (:meth:`udf.wire.FrameDecoder.feed_frames`), the reader's path.

        A point whose series and layout were seen before is decoded by hand
        (:mod:`udf._fastdecode`), every other frame by protobuf, which the
        hand path learns from. Where most points miss the hand path, the read
        is parsed by protobuf in one call instead.
        """
        hand = self._hand
        if hand is None or not hand.use(len(frames)):
            responses, error = self._parser.run(frames)
            return self._events(responses, error, frames, True)
        fast = hand.decode
        parser = self._parser
        batch = self._assembler.pending
        events: list[tuple[str, Any]] = []
        points: list[Any] | None = None
        misses = 0
        try:
            for frame in frames:
                item = fast(frame, batch is not None)
                if item is None:
                    misses += 1
                    response = parser.frame(frame)
                    if not response.HasField("point"):
                        if not response.HasField("keepalive"):  # for the round-trip time: does not split a run
                            points = None
                        batch = self._answer(response, _views.payload_of(frame), events)
                        continue
                    item = parser.point(response.point) if batch is None else parser.batch_point(response.point)
                    hand.learn(frame, item)
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
            hand.missed(misses)
        return events, None

    def _events(
        self, responses: Sequence[Any], error: UDFError | None, raw: list[bytes], whole: bool
    ) -> tuple[list[tuple[str, Any]], UDFError | None]:
        """Events of parsed ``responses``; ``raw`` are their frames (``whole``) or payloads, in the same order."""
        parser = self._parser
        batch = self._assembler.pending
        events: list[tuple[str, Any]] = []
        points: list[Point] | None = None
        try:
            for i, response in enumerate(responses):
                if not response.HasField("point"):
                    if not response.HasField("keepalive"):
                        points = None
                    batch = self._answer(response, _views.payload_of(raw[i]) if whole else raw[i], events)
                    continue
                if batch is not None:
                    batch.append(parser.batch_point(response.point))
                    continue
                point = parser.point(response.point)  # before the event: it may raise
                if points is None:
                    points = []
                    events.append((POINTS, points))
                points.append(point)
        except UDFError as exc:
            return events, exc
        except ValueError as exc:  # e.g. invalid UTF-8 in a string, found only on access by some protobuf versions
            return events, ProtocolError(f"malformed Response: {exc}")
        return events, error

    def _answer(self, response: Any, payload: bytes, events: list[tuple[str, Any]]) -> list[BatchPoint] | None:
        """Handle a Response that is not a point: append its event; return the open batch's list, if any."""
        response = self._parser.answer(response, payload)
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
            events.append((kind, response))
        return assembler.pending

    @property
    def in_batch(self) -> bool:
        """True between a BeginBatch and its EndBatch (a batch is being assembled)."""
        return self._assembler.in_batch

    def eof(self) -> None:
        """The stream ended: raise ProtocolError if a batch was left open."""
        self._assembler.eof()
