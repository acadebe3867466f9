"""Export a UDF's health to Prometheus: moving_avg under ``udf.Process``, served at /metrics.

    .venv/bin/python examples/metrics_export.py [--port PORT] [--serve]

Registers the agent with ``udf.metrics`` (the ``metrics`` extra), starts
prometheus_client's HTTP server on 127.0.0.1:PORT (default: a free port),
sends 300 points (three hosts, 100 each) and reads back the 273 moving
averages, then prints the page Prometheus would scrape. With ``--serve`` it
keeps the agent and the page up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import urllib.request

import prometheus_client

import udf
import udf.metrics

MOVING_AVG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moving_avg.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="the port of /metrics (default: a free one)")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    args = parser.parse_args()

    proc = udf.Process(sys.executable, ["-u", MOVING_AVG], timeout=10.0)
    udf.metrics.register(proc, name="moving_avg")  # on prometheus_client's default registry
    httpd, server_thread = prometheus_client.start_http_server(args.port, addr="127.0.0.1")
    url = f"http://127.0.0.1:{httpd.server_port}/metrics"
    try:
        with proc:
            proc.info()
            proc.init({"field": "usage_user", "size": 10})
            points = [
                udf.Point(
                    name="cpu",
                    group=f"cpu\nhost=server{i % 3}",
                    tags={"host": f"server{i % 3}"},
                    fields={"usage_user": float(i % 7)},
                    time=i,
                )
                for i in range(300)
            ]
            # Put from a thread while reading the averages here: never rely on queue sizes.
            sender = threading.Thread(target=lambda: [proc.point_in.put(p) for p in points], name="sender")
            sender.start()
            averages = [proc.point_out.get(timeout=10.0) for _ in range(273)]
            sender.join()
            print(f"# {len(averages)} averages; the metrics at {url}:", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=10.0) as page:
                sys.stdout.write(page.read().decode())
            if args.serve:
                print("# serving; Ctrl-C to stop", file=sys.stderr)
                threading.Event().wait()  # until Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        server_thread.join()


if __name__ == "__main__":
    main()
