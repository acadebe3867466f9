"""What the test agents share: reading requests, writing responses, an echo handler."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, Any

import agent_pb2
from udf.wire import read_message, write_message


def requests(stream: IO[bytes]) -> Iterator[Any]:
    """Yield the host's requests until EOF."""
    while True:
        request = read_message(stream, agent_pb2.Request.FromString)
        if request is None:
            return
        yield request


def send(stream: IO[bytes], responses: list[Any]) -> None:
    """Write responses (one frame each) and flush."""
    for response in responses:
        write_message(stream, response)
    stream.flush()


def stdio() -> tuple[IO[bytes], IO[bytes]]:
    """The agent's input and (unbuffered) output when run as a child process."""
    return sys.stdin.buffer, open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)


def stderr(line: str) -> None:
    """Write one line to stderr, now."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Echo:
    """Answers every request; echoes points and batches back; counts points for snapshots."""

    def __init__(self) -> None:
        self.points = 0

    def handle(self, request: Any) -> list[Any]:
        kind = request.WhichOneof("message")
        R = agent_pb2.Response
        if kind == "info":
            info = agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)
            info.options["field"].valueTypes.append(agent_pb2.STRING)
            return [R(info=info)]
        if kind == "init":
            names = [option.name for option in request.init.options]
            if "fail" in names:
                return [R(init=agent_pb2.InitResponse(success=False, error="told to fail"))]
            return [R(init=agent_pb2.InitResponse(success=True))]
        if kind == "keepalive":
            return [R(keepalive=agent_pb2.KeepaliveResponse(time=request.keepalive.time))]
        if kind == "snapshot":
            return [R(snapshot=agent_pb2.SnapshotResponse(snapshot=b"points=%d" % self.points))]
        if kind == "restore":
            data = request.restore.snapshot
            if not data.startswith(b"points="):
                return [R(restore=agent_pb2.RestoreResponse(success=False, error="not an echo snapshot"))]
            self.points = int(data[len(b"points=") :])
            return [R(restore=agent_pb2.RestoreResponse(success=True))]
        if kind == "point":
            self.points += 1
        return [R(**{kind: getattr(request, kind)})]

    def serve(self, inp: IO[bytes], out: IO[bytes]) -> None:
        """Answer requests until EOF on ``inp``."""
        for request in requests(inp):
            send(out, self.handle(request))
