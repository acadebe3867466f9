"""Echoes COUNT points, then writes two stderr lines and exits with STATUS.

Usage: crash.py COUNT STATUS
"""

from __future__ import annotations

import sys

from _common import Echo, requests, send, stderr, stdio


def main() -> None:
    count, status = int(sys.argv[1]), int(sys.argv[2])
    inp, out = stdio()
    echo = Echo()
    for request in requests(inp):
        send(out, echo.handle(request))
        if echo.points == count:
            stderr("W! about to fail")
            stderr(f"E! crashed after {count} points")
            sys.exit(status)


if __name__ == "__main__":
    main()
