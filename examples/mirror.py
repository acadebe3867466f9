"""mirror: a stream UDF that sends every point back unchanged.

Run it over stdin/stdout (how Kapacitor starts a ``prog`` UDF)::

    python3 examples/mirror.py

or serve it on a unix socket (Kapacitor's ``socket`` UDFs) or TCP::

    python3 examples/mirror.py --socket /tmp/mirror.sock
"""

from __future__ import annotations

import os
import sys
from typing import Any

try:
    import agent_pb2
    from udf.agent import Handler, main
except ImportError:  # running from a checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import agent_pb2
    from udf.agent import Handler, main


class MirrorHandler(Handler):
    """Wants a stream, provides a stream, takes no options, echoes each point."""

    def info(self) -> Any:
        return agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)

    def init(self, init_req: Any) -> Any:
        names = sorted({opt.name for opt in init_req.options})
        if names:
            return agent_pb2.InitResponse(success=False, error=f"mirror takes no options, got: {', '.join(names)}")
        return agent_pb2.InitResponse(success=True)

    def point(self, point: Any) -> None:
        # No flush: the agent flushes as soon as no more requests are queued.
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(point=point), flush=False)


if __name__ == "__main__":
    sys.exit(main(MirrorHandler, description="Kapacitor UDF that mirrors every point back."))
