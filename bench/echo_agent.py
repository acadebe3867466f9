"""A fast echo agent for the benchmark: it answers at the wire level.

Run as ``python bench/echo_agent.py [--batch]``: it reads ``Request`` frames on
stdin and writes ``Response`` frames on stdout until stdin ends.

Data frames are echoed without being decoded: ``BeginBatch``, ``Point`` and
``EndBatch`` have the same field numbers (16, 17, 18) in ``Request`` and
``Response``, and so has ``KeepaliveRequest``/``KeepaliveResponse`` (3, same
body), so those frames come back byte for byte. Only info, init, snapshot and
restore requests are decoded and answered. Each read takes whatever the pipe
holds (up to 1 MiB) and each run of echoed frames goes back in one write.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

#: A frame whose first payload byte is one of these is echoed as is: 0x1a is
#: field 3 (keepalive), and a byte >= 0x80 starts the two-byte tag of fields
#: 16..18 (begin, point, end); Request has no other field above 15.
_ECHO_TAG_KEEPALIVE = 0x1A
READ_SIZE = 1 << 20


def make_answer(edge: int) -> Callable[[bytes], bytes]:
    """Return a function turning one control request payload into a response frame."""
    import agent_pb2  # only the control frames need protobuf (and udf)
    from udf.wire import encode_frame

    def answer(payload: bytes) -> bytes:
        request = agent_pb2.Request.FromString(payload)
        kind = request.WhichOneof("message")
        if kind == "info":
            response = agent_pb2.Response(info=agent_pb2.InfoResponse(wants=edge, provides=edge))
        elif kind == "init":
            response = agent_pb2.Response(init=agent_pb2.InitResponse(success=True))
        elif kind == "snapshot":
            response = agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=b"echo"))
        elif kind == "restore":
            response = agent_pb2.Response(restore=agent_pb2.RestoreResponse(success=True))
        else:
            response = agent_pb2.Response(error=agent_pb2.ErrorResponse(error=f"echo agent: unexpected request {kind}"))
        return encode_frame(response.SerializeToString())

    return answer


def echo(fd_in: int, fd_out: int, answer: Callable[[bytes], bytes]) -> None:
    """Echo frames from ``fd_in`` to ``fd_out`` until EOF; answer control requests."""
    read, write = os.read, os.write
    rest = b""
    while True:
        chunk = read(fd_in, READ_SIZE)
        if not chunk:
            break
        buf = rest + chunk if rest else chunk
        out: list[bytes] = []
        end = len(buf)
        pos = run = 0
        while pos < end:
            # The length prefix: one byte for small frames, two for ~174-byte points.
            size = buf[pos]
            start = pos + 1
            if size >= 0x80:
                size &= 0x7F
                shift = 7
                while True:
                    if start >= end:
                        size = -1
                        break
                    b = buf[start]
                    start += 1
                    size |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                if size < 0:
                    break
            stop = start + size
            if stop > end:
                break
            if size and (buf[start] >= 0x80 or buf[start] == _ECHO_TAG_KEEPALIVE):
                pos = stop
                continue
            if run < pos:
                out.append(buf[run:pos])
            out.append(answer(buf[start:stop]))
            pos = run = stop
        if run < pos:
            out.append(buf[run:pos])
        rest = buf[pos:]
        if out:
            data = memoryview(out[0] if len(out) == 1 else b"".join(out))
            while data:
                data = data[write(fd_out, data) :]
    os.close(fd_out)


def main(argv: list[str]) -> int:
    edge = 1 if "--batch" in argv else 0  # agent_pb2.BATCH / agent_pb2.STREAM
    try:
        echo(sys.stdin.fileno(), sys.stdout.fileno(), make_answer(edge))
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
