"""An echo agent that fails on cue, for the supervisor's tests.

Usage: flaky.py [--die-on NAME] [--once FILE] [--status N] [--die-after-init] [--fail-at-eof]
                [--reject-restore]

  --die-on NAME       exit with --status (default 3) when a point named NAME arrives,
                      before echoing it
  --once FILE         die (on --die-on or --die-after-init) only if FILE does not exist,
                      creating it first: the next agent lives
  --die-after-init    exit with --status right after answering init
  --fail-at-eof       exit with --status when the input ends (after answering everything)
  --reject-restore    answer every restore with success=false
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import Echo, requests, send, stderr, stdio

import agent_pb2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-on")
    parser.add_argument("--once")
    parser.add_argument("--status", type=int, default=3)
    parser.add_argument("--die-after-init", action="store_true")
    parser.add_argument("--fail-at-eof", action="store_true")
    parser.add_argument("--reject-restore", action="store_true")
    args = parser.parse_args()

    def die(why: str) -> None:
        if args.once is not None:
            if os.path.exists(args.once):
                return
            with open(args.once, "w"):
                pass
        stderr(f"E! dying: {why}")
        sys.exit(args.status)

    inp, out = stdio()
    echo = Echo()
    for request in requests(inp):
        kind = request.WhichOneof("message")
        if kind == "point" and args.die_on is not None and request.point.name == args.die_on:
            die(f"point {args.die_on}")
        if kind == "restore" and args.reject_restore:
            send(out, [agent_pb2.Response(restore=agent_pb2.RestoreResponse(success=False, error="no restores here"))])
            continue
        send(out, echo.handle(request))
        if kind == "init" and args.die_after_init:
            die("after init")
    if args.fail_at_eof:
        die("at the end of the input")


if __name__ == "__main__":
    main()
