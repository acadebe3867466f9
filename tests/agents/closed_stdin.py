"""Reads the info request, closes its stdin, answers, then exits with STATUS on SIGUSR1.

Usage: closed_stdin.py STATUS
The host's next write fails (nobody reads the pipe) while this agent is still alive.
"""

from __future__ import annotations

import os
import signal
import sys

from _common import requests, send, stderr, stdio

import agent_pb2


def main() -> None:
    status = int(sys.argv[1])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # before the host can send it
    inp, out = stdio()
    request = next(requests(inp))
    assert request.WhichOneof("message") == "info"
    os.close(0)
    send(out, [agent_pb2.Response(info=agent_pb2.InfoResponse())])
    stderr("E! closed my input")
    signal.sigwait({signal.SIGUSR1})
    sys.exit(status)


if __name__ == "__main__":
    main()
