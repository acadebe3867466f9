"""The UDF wire format: varint-length-prefixed protobuf frames, and nothing else.

A stream is a sequence of frames, each an unsigned protobuf varint holding the
byte length of a message followed by the serialized message (Go:
``udf/agent/io.go``). Everything here is pure: no threads, no logging. The
:class:`FrameDecoder` is sans-I/O, so it can be fed whatever a read returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, TypeVar

from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_FRAME_SIZE",
    "encode_uvarint",
    "decode_uvarint",
    "encode_frame",
    "FrameDecoder",
    "TEXT_HINT",
    "excerpt",
    "read_frame",
    "read_message",
    "write_message",
]

#: Largest frame accepted by default (64 MiB): an absurd length prefix becomes a
#: ProtocolError instead of an allocation.
DEFAULT_MAX_FRAME_SIZE = 64 * 2**20
#: Default bound on the bytes of one batch the host assembles (BeginBatch to EndBatch).
DEFAULT_MAX_BATCH_BYTES = 64 * 2**20

_MAX_VARINT_BYTES = 10
_UINT64_LIMIT = 1 << 64


M = TypeVar("M")

# Varints below 2**14 (one or two bytes: every frame prefix up to 16 KiB, most
# lengths and counts) are table lookups; _CONT2[n] is the 14 bits of n as two
# bytes with the continuation bit set, so a larger value takes one step per 14 bits.
_SMALL_UVARINTS = [bytes([n]) for n in range(0x80)] + [bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(0x80, 0x4000)]
_CONT2 = [bytes([(n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80]) for n in range(0x4000)]


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer below 2**64 as a protobuf varint (the codec's only varint encoder)."""
    if 0 <= value < 0x4000:
        return _SMALL_UVARINTS[value]
    if value < 0 or value >= _UINT64_LIMIT:
        raise ValueError(f"uvarint out of range: {value}")
    parts = []
    while value >= 0x4000:
        parts.append(_CONT2[value & 0x3FFF])
        value >>= 14
    parts.append(_SMALL_UVARINTS[value])
    return b"".join(parts)


def decode_uvarint(data: bytes, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``data[pos:]``; return ``(value, next_pos)``.

    Returns ``None`` when ``data`` ends inside the varint (more bytes needed);
    raises :class:`ProtocolError` for a varint longer than 10 bytes or above 2**64-1.
    """
    result = 0
    shift = 0
    end = len(data)
    start = pos
    while pos < end:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >= _UINT64_LIMIT:
                raise ProtocolError("length prefix overflows a 64-bit unsigned varint")
            return result, pos
        shift += 7
        if pos - start >= _MAX_VARINT_BYTES:
            raise ProtocolError("length prefix is longer than 10 bytes (not a varint)")
    return None


def encode_frame(payload: bytes) -> bytes:
    """Prefix a serialized message with its length."""
    return encode_uvarint(len(payload)) + payload


#: How much of a bad input an error message quotes.
EXCERPT_BYTES = 40


def excerpt(data: bytes, limit: int = EXCERPT_BYTES) -> str:
    """A short, escaped quotation of input for an error message.

    Text is shown as a Python string literal (``'hello'``), anything else as a
    bytes literal (``b'\\x00\\xff'``); at most ``limit`` bytes, then ``...``,
    so binary junk or a megabyte line never floods a log.
    """
    head = bytes(data[:limit])
    more = "..." if len(data) > limit else ""
    try:
        text = head.decode("utf-8") if not more else _decode_prefix(head)
    except UnicodeDecodeError:
        return repr(head) + more
    return repr(text) + more


def _decode_prefix(head: bytes) -> str:
    """Decode UTF-8 that may have been cut inside its last character."""
    import codecs

    return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)


#: The bytes a text line is made of: printable ASCII, tab, CR, LF.
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}

#: Bytes of the stream's start whose first line must read as text for the stream to be suspected of being text.
_SNIFF_BYTES = 3

#: Fields of a suspect first frame walked before it is taken for a frame (text breaks the rules within a few).
_SNIFF_FIELDS = 64

TEXT_HINT = "the agent wrote text to its stdout (a print?)"

# What the start of a stream is (_stream_start); a positive number instead is the stream length needed to tell.
_FRAMES = 0
_TEXT = -1


def _looks_like_text(start: bytes) -> bool:
    """Whether a stream's first bytes read as a line of text: at least two printable characters."""
    line = _first_line(start[:_SNIFF_BYTES])
    if len(line) < 2:
        return False
    if all(b in _TEXT_BYTES for b in line):
        return True
    try:  # non-ASCII text (UTF-8), perhaps cut inside its last character
        return _decode_prefix(line).replace("\t", " ").isprintable()
    except UnicodeDecodeError:
        return False


def _stream_start(start: bytes, limit: int) -> int:
    """Whether a stream that starts with ``start`` is frames or text: _FRAMES, _TEXT, or the length needed to tell.

    Text only if its first line reads as text *and* the bytes cannot begin a
    frame: a stream that starts with a frame protobuf parses is never text.
    """
    if len(start) < _SNIFF_BYTES:
        return _FRAMES if start[0] < 2 else _SNIFF_BYTES  # a frame of 0 or 1 bytes: no more bytes may come
    if not _looks_like_text(start):
        return _FRAMES
    return _first_frame(start, limit)


def _first_frame(data: bytes, limit: int) -> int:
    """Whether ``data`` can begin a frame protobuf parses: _FRAMES, _TEXT (it cannot), or the length needed to tell.

    The frame's payload is walked field by field (length-delimited values are
    skipped, not read). It cannot be a frame when it breaks a rule that every
    protobuf backend enforces on every message (upb and pure Python, 4.22 to
    7.x; ``tests/codec/test_protobuf_agreement.py`` checks each against protobuf): a length
    prefix that is not a varint or exceeds ``limit``; field number 0; wire
    type 6 or 7; an end-group tag outside a group, or a group still open at
    the frame's end; a field that runs past the frame's end; a varint longer
    than ten bytes. After :data:`_SNIFF_FIELDS` fields that break none of them
    it is taken for a frame.
    """
    try:
        prefix = decode_uvarint(data, 0)
    except ProtocolError:
        return _TEXT
    if prefix is None:
        return len(data) + 1
    size, pos = prefix
    if size > limit:
        return _TEXT
    end = pos + size
    have = len(data)
    groups = 0  # open groups; protobuf 4.22's pure-Python backend lets an end-group tag close any of them
    for _ in range(_SNIFF_FIELDS):
        if pos == end:
            return _TEXT if groups else _FRAMES
        tag, pos = _frame_varint(data, pos, end)
        if pos == _TEXT or pos > have:
            return pos
        wire = tag & 7
        if tag >> 3 == 0 or wire > 5:
            return _TEXT
        if wire == 0:
            _, pos = _frame_varint(data, pos, end)
            if pos == _TEXT or pos > have:
                return pos
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _frame_varint(data, pos, end)
            if pos == _TEXT or pos > have:
                return pos
            pos += length
        elif wire == 3:
            groups += 1
        elif groups:
            groups -= 1
        else:
            return _TEXT
        if pos > end:
            return _TEXT
    return _FRAMES


def _frame_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` of a frame that ends at ``end``: ``(value, where it ends)``.

    Where it ends is _TEXT if it runs past the frame's end or ten bytes, and
    a position past the end of ``data`` (the length needed) if ``data`` ends inside it.
    """
    value = shift = 0
    for i in range(pos, min(end, pos + _MAX_VARINT_BYTES)):
        if i >= len(data):
            return 0, i + 1
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    return 0, _TEXT


def _first_line(data: bytes) -> bytes:
    return data.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")


def _text_error(start: bytes, hint: str) -> ProtocolError:
    return ProtocolError(f"{hint}: {excerpt(_first_line(start))}")


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes exceeds the maximum frame size of {limit} bytes")


class FrameDecoder:
    """Split a byte stream into frame payloads (sans-I/O).

    ``feed(chunk)`` returns the payloads of every frame completed so far, however
    the stream was chunked: feeding one byte at a time yields the same frames as
    feeding it whole. ``eof()`` checks the stream ended at a frame boundary.

    A stream whose first line reads as text, and whose bytes cannot begin a
    frame that protobuf would parse, is refused with a ProtocolError quoting
    that line: a UDF that prints to its stdout fails as soon as its output
    shows it, saying so, instead of after a keepalive timeout with a corrupt
    frame. Until the first frame's bytes tell (a few bytes for text, at most
    the first frame), they are held; a stream that starts with a valid frame
    is never called text.
    """

    __slots__ = (
        "max_frame_size",
        "text_hint",
        "_buf",
        "_parts",
        "_have",
        "_need",
        "_error",
        "_sniffing",
        "_held",
        "_held_size",
        "_held_need",
    )

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *, text_hint: str | None = TEXT_HINT) -> None:
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        #: Said when the stream starts with printable text instead of a frame
        #: (a stray print in a UDF): ``f"{text_hint}: 'hello'"``. ``None`` turns
        #: the check off (for streams of frames that are not UDF messages).
        self.text_hint = text_hint
        # Until the stream's first bytes are known to be frames, they are held here
        # (chunks, their total, the total needed before they are looked at again).
        self._sniffing = text_hint is not None
        self._held: list[bytes] = []
        self._held_size = 0
        self._held_need = 1
        self._buf = b""  # unconsumed bytes: at most one partial frame
        # A large partial frame is collected as a list of chunks, joined once
        # it is complete, so that a big frame in many small reads is not quadratic.
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) + self._have + self._held_size

    @property
    def suspected_text(self) -> str | None:
        """The text error :meth:`eof` would raise now, while the stream's first bytes read as text but may be a frame.

        ``None`` once they are known to be frames (or are refused as text). A
        reader whose wait for the agent's first answer times out can say so
        (a UDF that printed a line and went quiet is held here, not refused,
        because a frame may start the same way).
        """
        if not self._sniffing or not self._held_size or self.text_hint is None:
            return None
        held = b"".join(self._held)
        return str(_text_error(held, self.text_hint)) if _looks_like_text(held) else None

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` to the stream and return the payloads it completed.

        A malformed length prefix raises :class:`ProtocolError`; if frames were
        completed before it in the same call they are returned first and the
        error is raised by :meth:`check` (and by every later call).
        """
        return self._feed(data, False)

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, but return each completed frame whole: length prefix and payload.

        A run of whole frames can be parsed in one call (``udf.convert.parse_responses``).
        """
        return self._feed(data, True)

    def _feed(self, data: bytes, whole: bool) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._sniffing:
            data = self._sniff(data)
            if not data:
                return []
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._parts)
            self._parts = []
            self._have = 0
        elif self._buf:
            buf = self._buf + data
        else:
            buf = data
        frames: list[bytes] = []
        append = frames.append
        limit = self.max_frame_size
        pos = 0
        end = len(buf)
        try:
            while pos < end:
                size = buf[pos]
                if size < 0x80:
                    start = pos + 1
                elif pos + 1 < end and buf[pos + 1] < 0x80:  # two bytes: frames of 128 B to 16 KiB
                    size = (size & 0x7F) | buf[pos + 1] << 7
                    start = pos + 2
                else:
                    decoded = decode_uvarint(buf, pos)
                    if decoded is None:
                        break
                    size, start = decoded
                if size > limit:
                    _check_size(size, limit)
                stop = start + size
                if stop > end:
                    if size > 65536:
                        self._parts = [buf[pos:]]
                        self._have = end - pos
                        self._need = stop - pos
                        self._buf = b""
                        return frames
                    break
                append(buf[pos if whole else start : stop])
                pos = stop
        except ProtocolError as exc:
            self._buf = b""
            if not frames:
                raise
            # The frames completed before the fault are still returned; check()
            # (or any later call) raises the error.
            self._error = exc
            return frames
        self._buf = buf[pos:] if pos else buf
        return frames

    def _sniff(self, data: bytes) -> bytes:
        """Hold the stream's first bytes until they tell frames from text; then return them all.

        Returns b"" while they are held; raises the text error if they are text.
        """
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size < self._held_need:
            return b""
        start = b"".join(self._held)
        verdict = _stream_start(start, self.max_frame_size)
        if verdict > 0:
            self._held = [start]
            self._held_need = verdict
            return b""
        self._sniffing = False
        self._held = []
        self._held_size = 0
        if verdict == _TEXT:
            assert self.text_hint is not None  # sniffing only with a hint
            self._error = _text_error(start, self.text_hint)
            raise self._error
        return start

    def check(self) -> None:
        """Raise the ProtocolError found after the frames the last ``feed`` returned, if any."""
        if self._error is not None:
            raise self._error

    def eof(self) -> None:
        """Declare the end of the stream: raise ProtocolError inside a frame."""
        self.check()
        if self._sniffing and self._held_size:  # the first frame never completed: text, or a cut frame
            held = b"".join(self._held)
            self._sniffing = False
            self._held = []
            self._held_size = 0
            if _looks_like_text(held):
                assert self.text_hint is not None
                self._error = _text_error(held, self.text_hint)
                raise self._error
            self._buf = held
        if self._parts:
            got = self._have
            missing = self._need - got
            self._parts = []
            self._have = 0
            raise ProtocolError(f"unexpected EOF inside a frame: {missing} bytes missing of {self._need}")
        buf = self._buf
        if not buf:
            return
        self._buf = b""
        decoded = decode_uvarint(buf, 0)
        if decoded is None:
            raise ProtocolError(f"unexpected EOF inside a length prefix after {len(buf)} bytes")
        size, start = decoded
        raise ProtocolError(f"unexpected EOF inside a frame: {start + size - len(buf)} bytes missing of {start + size}")


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes], max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes | None:
    """Read one frame's payload from a blocking stream; ``None`` at a clean EOF.

    Go: ``agent.ReadMessage`` (without the decode). Raises :class:`ProtocolError`
    on EOF inside a frame or an oversized length.
    """
    prefix = bytearray()
    while True:
        b = stream.read(1)
        if not b:
            if prefix:
                raise ProtocolError(f"unexpected EOF inside a length prefix after {len(prefix)} bytes")
            return None
        prefix += b
        if b[0] < 0x80:
            break
        if len(prefix) >= _MAX_VARINT_BYTES:
            raise ProtocolError("length prefix is longer than 10 bytes (not a varint)")
    decoded = decode_uvarint(bytes(prefix))
    assert decoded is not None
    size = decoded[0]
    _check_size(size, max_frame_size)
    payload = _read_exact(stream, size)
    if len(payload) < size:
        raise ProtocolError(f"unexpected EOF inside a frame: {size - len(payload)} bytes missing of {size}")
    return payload


def read_message(
    stream: IO[bytes],
    parse: Callable[[bytes], M],
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> M | None:
    """Read and decode one message, e.g. ``read_message(f, agent_pb2.Request.FromString)``.

    Returns ``None`` at a clean EOF. A payload that does not decode raises
    :class:`ProtocolError`.
    """
    payload = read_frame(stream, max_frame_size)
    if payload is None:
        return None
    return parse_payload(parse, payload)


def parse_payload(parse: Callable[[bytes], M], payload: bytes) -> M:
    """Decode one payload, turning the protobuf error into a ProtocolError."""
    try:
        return parse(payload)
    except Exception as exc:  # protobuf raises DecodeError (a plain Exception subclass)
        raise ProtocolError(f"undecodable message ({len(payload)} bytes): {exc}") from exc


def write_message(stream: IO[bytes], message: Any) -> None:
    """Write one message as a frame with a single ``write`` call (Go: ``agent.WriteMessage``)."""
    stream.write(encode_frame(message.SerializeToString()))
