"""Echo agent that answers keepalives late (but within the host's timeout).

Usage: slow_keepalive.py DELAY_SECONDS
Each keepalive is answered DELAY seconds after it arrived, then "I! keepalive N
answered" goes to stderr so the test can count them.
"""

from __future__ import annotations

import sys
import time

from _common import Echo, requests, send, stderr, stdio


def main() -> None:
    delay = float(sys.argv[1])
    inp, out = stdio()
    echo = Echo()
    answered = 0
    for request in requests(inp):
        if request.WhichOneof("message") == "keepalive":
            time.sleep(delay)  # the slowness under test, inside the agent
            answered += 1
            send(out, echo.handle(request))
            stderr(f"I! keepalive {answered} answered")
        else:
            send(out, echo.handle(request))


if __name__ == "__main__":
    main()
