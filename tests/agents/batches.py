"""A batch agent that, once initialized, sends batches of POINTS points each, COUNT of them
(0: one batch that never ends: BeginBatch, then points until its output is closed).

    batches.py POINTS COUNT
"""

from __future__ import annotations

import sys

from _common import requests, send, stdio

import agent_pb2
from udf.wire import encode_frame


def _frame(response: object) -> bytes:
    return encode_frame(response.SerializeToString())  # type: ignore[attr-defined]


def main() -> None:
    per_batch, count = int(sys.argv[1]), int(sys.argv[2])
    stdin, stdout = stdio()
    R = agent_pb2.Response
    point = R(point=agent_pb2.Point(name="cpu", time=1, fieldsDouble={"v": 1.0}, tags={"host": "a" * 64}))
    frame = _frame(point)
    for request in requests(stdin):
        kind = request.WhichOneof("message")
        if kind == "info":
            send(stdout, [R(info=agent_pb2.InfoResponse(wants=agent_pb2.BATCH, provides=agent_pb2.BATCH))])
        elif kind == "init":
            send(stdout, [R(init=agent_pb2.InitResponse(success=True))])
            begin = _frame(R(begin=agent_pb2.BeginBatch(name="cpu")))
            end = _frame(R(end=agent_pb2.EndBatch(name="cpu", tmax=1)))
            try:
                for _ in range(count or 1):
                    stdout.write(begin + frame * per_batch)
                    if count:
                        stdout.write(end)
                while not count:  # the batch that never ends
                    stdout.write(frame * per_batch)
            except OSError:
                return  # the host closed our output: it had enough


if __name__ == "__main__":
    main()
