"""An agent that stops answering and ignores its input's end.

Usage: silent.py [--answer-info] [--ignore-term]
  --answer-info   answer the first request (an info request) first, proving it is ready
  --ignore-term   ignore SIGTERM (only SIGKILL ends it)
"""

from __future__ import annotations

import signal
import sys

from _common import requests, send, stdio

import agent_pb2


def main() -> None:
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--answer-info" in sys.argv:
        inp, out = stdio()
        request = next(requests(inp))
        assert request.WhichOneof("message") == "info"
        send(out, [agent_pb2.Response(info=agent_pb2.InfoResponse())])
    while True:
        signal.pause()  # only a signal ends this


if __name__ == "__main__":
    main()
