"""An echo agent that misbehaves on cue, for the lifecycle regression tests.

Usage: lifecycle.py MODE [ARG]
  error-at-eof          echo; at the end of its input write an ErrorResponse, exit 0
  exit-after-info N     answer the info request, then exit with status N
  grandchild            answer info, start `sleep 1000` holding our stdout (its pid on
                        stderr as "I! helper PID"), echo until EOF, exit 0
  die-mid-frame         answer info, write half a frame, then SIGKILL itself
  slow-echo SECONDS     echo, taking SECONDS per point (a slow but healthy agent)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from _common import Echo, requests, send, stderr, stdio

import agent_pb2


def main() -> None:
    mode = sys.argv[1]
    inp, out = stdio()
    echo = Echo()
    if mode == "exit-after-info":
        request = next(requests(inp))
        send(out, echo.handle(request))
        sys.exit(int(sys.argv[2]))
    if mode == "die-mid-frame":
        request = next(requests(inp))
        send(out, echo.handle(request))
        out.write(b"\x40\x8a\x01")  # a 64-byte frame announced, 2 bytes of it sent
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "grandchild":
        helper = subprocess.Popen(["sleep", "1000"])  # inherits stdout: it holds our output open
        stderr(f"I! helper {helper.pid}")
    delay = float(sys.argv[2]) if mode == "slow-echo" else 0.0
    for request in requests(inp):
        if delay and request.WhichOneof("message") == "point":
            time.sleep(delay)
        send(out, echo.handle(request))
    if mode == "error-at-eof":
        send(out, [agent_pb2.Response(error=agent_pb2.ErrorResponse(error="input ended: giving up"))])


if __name__ == "__main__":
    main()
