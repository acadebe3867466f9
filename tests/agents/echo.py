"""Echo agent: answers every request and echoes points and batches back.

Options (before serving, in this order):
  --report-env NAME    write "I! NAME=value" (or "I! NAME unset") to stderr
  --stderr LINE        write LINE to stderr
  --stderr-lines N     write "line 1" .. "line N" to stderr
  --stderr-bytes N     write N bytes of "x" to stderr, no newline
  --unix PATH          serve one connection on a unix socket at PATH instead of stdio
  --tcp                serve one connection on 127.0.0.1 (port printed on stdout)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from _common import Echo, stderr, stdio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report-env", action="append", default=[])
    parser.add_argument("--stderr", action="append", default=[])
    parser.add_argument("--stderr-lines", type=int, default=0)
    parser.add_argument("--stderr-bytes", type=int, default=0)
    parser.add_argument("--unix")
    parser.add_argument("--tcp", action="store_true")
    args = parser.parse_args()

    for name in args.report_env:
        value = os.environ.get(name)
        stderr(f"I! {name} unset" if value is None else f"I! {name}={value}")
    for line in args.stderr:
        stderr(line)
    for i in range(1, args.stderr_lines + 1):
        stderr(f"line {i}")
    if args.stderr_bytes:
        sys.stderr.write("x" * args.stderr_bytes)
        sys.stderr.flush()

    if args.unix or args.tcp:
        if args.unix:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(args.unix)
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        if args.tcp:
            print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        listener.close()
        with conn, conn.makefile("rb") as inp, conn.makefile("wb", buffering=0) as out:
            Echo().serve(inp, out)
    else:
        Echo().serve(*stdio())


if __name__ == "__main__":
    main()
