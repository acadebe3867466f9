"""A fake agent on real OS pipes: the Python twin of Go's ``udf/test`` IO helper.

The server under test writes requests into one pipe and reads responses from
another; the test reads ``agent.requests`` and answers through ``agent.respond``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import agent_pb2
import udf
from udf.channel import Channel
from udf.errors import ChannelClosed
from udf.wire import encode_frame, read_message

from . import TIMEOUT


class FakeAgent:
    """An agent whose requests and responses are in the test's hands, over real pipes."""

    def __init__(self) -> None:
        request_r, request_w = os.pipe()  # server -> agent
        response_r, response_w = os.pipe()  # agent -> server
        #: What the server reads (the agent's output) and writes (the agent's input).
        self.host_reader = open(response_r, "rb", buffering=0)
        self.host_writer = open(request_w, "wb", buffering=0)
        self._agent_in = open(request_r, "rb")
        self._agent_out = open(response_w, "wb", buffering=0)
        #: Requests the server sent, in order; closed when the server closes its writer.
        self.requests: Channel[Any] = Channel()
        self._responses: Channel[bytes | Any] = Channel()
        self.errors: list[BaseException] = []
        self.servers: list[udf.Server] = []
        self._threads = [
            threading.Thread(target=self._read_requests, name="fake-agent-reader", daemon=True),
            threading.Thread(target=self._write_responses, name="fake-agent-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_requests(self) -> None:
        try:
            while True:
                request = read_message(self._agent_in, agent_pb2.Request.FromString)
                if request is None:
                    break
                self.requests.put(request)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.requests.close()
            self._agent_in.close()

    def _write_responses(self) -> None:
        try:
            for item in self._responses:
                data = item if isinstance(item, bytes) else encode_frame(item.SerializeToString())
                self._agent_out.write(data)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self._agent_out.close()

    def server(self, **kwargs: Any) -> udf.Server:
        """A Server on this agent's pipes."""
        server = udf.Server(self.host_reader, self.host_writer, **kwargs)
        self.servers.append(server)
        return server

    def next_request(self, kind: str | None = None) -> Any:
        """The next request (of ``kind``, asserted), waiting at most TIMEOUT."""
        try:
            request = self.requests.get(timeout=TIMEOUT)
        except ChannelClosed:
            raise AssertionError("the server closed its output; expected a request") from None
        if kind is not None:
            got = request.WhichOneof("message")
            assert got == kind, f"expected a {kind} request, got {got}"
        return request

    def respond(self, response: Any = None, **fields: Any) -> None:
        """Send a Response (or build one from keyword fields: ``respond(init=...)``)."""
        self._responses.put(response if response is not None else agent_pb2.Response(**fields))

    def write_raw(self, data: bytes) -> None:
        """Send raw bytes on the agent's output (for malformed streams)."""
        self._responses.put(bytes(data))

    def close_output(self) -> None:
        """Close the agent's output: the server's reader sees EOF (Go: close(u.Responses))."""
        self._responses.close()

    def drain_requests(self) -> list[Any]:
        """Read requests until the server closes its output (Go: ``for range u.Requests``)."""
        return list(self.requests)

    def finish(self) -> list[BaseException]:
        """Close the agent's output, wait for its threads, return its I/O errors (Go: ``<-u.ErrC``)."""
        self.close_output()
        for thread in self._threads:
            thread.join(TIMEOUT)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"fake agent threads did not end: {alive}"
        return self.errors

    def close(self) -> None:
        for f in (self.host_reader, self.host_writer):
            try:
                f.close()
            except OSError:
                pass


def answer_init(agent: FakeAgent, success: bool = True, error: str = "") -> agent_pb2.Request:
    """Read the init request, answer it (successfully unless told), and return it."""
    request = agent.next_request("init")
    agent.respond(init=agent_pb2.InitResponse(success=success, error=error))
    return request
