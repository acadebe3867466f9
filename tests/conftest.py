"""Shared fixtures: a fake agent on real OS pipes, and a thread-leak check.

``FakeAgent`` is the Python twin of Go's ``udf/test`` IO helper: the server
under test writes requests into one pipe and reads responses from another; the
test reads ``agent.requests`` and answers through ``agent.respond``.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import pytest

import agent_pb2
import udf
from udf.channel import Channel
from udf.errors import ChannelClosed
from udf.wire import encode_frame, read_message

#: The one timeout of the suite: long enough to trip only on a real hang.
TIMEOUT = 10.0

#: Threads whose names start with these belong to us and must not outlive a test.
OUR_THREADS = ("udf-", "fake-agent-")


def pytest_report_header() -> str:
    from google.protobuf import __version__
    from google.protobuf.internal import api_implementation

    return f"protobuf {__version__}, {api_implementation.Type()} backend"


def _negative_zero_survives_a_map() -> bool:
    """Whether this protobuf keeps -0.0 in a map<string,double> through bytes.

    The pure-Python backend of older protobuf (4.22 at least) drops a -0.0 map
    value as if it were the default 0.0; tests of the sign depend on it.
    """
    msg = agent_pb2.Point()
    msg.fieldsDouble["z"] = -0.0
    value = agent_pb2.Point.FromString(msg.SerializeToString()).fieldsDouble.get("z", 0.0)
    return math.copysign(1.0, value) < 0


NEGATIVE_ZERO_SURVIVES = _negative_zero_survives_a_map()


def our_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(OUR_THREADS)]


def join_threads(timeout: float = TIMEOUT) -> List[str]:
    """Wait up to ``timeout`` for our threads to end; return the names still alive."""
    for thread in our_threads():
        thread.join(timeout)
    return sorted(t.name for t in our_threads())


def buffered_stdout_env() -> Dict[str, str]:
    """The environment without PYTHONUNBUFFERED: a child's stdout buffered, as on most machines."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def end_process(proc: Any) -> None:
    """Kill a ``subprocess.Popen`` if it still runs, reap it, and close its pipes (a test's ``finally``)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(TIMEOUT)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def run_in_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Run ``fn(*args)`` in a named thread; return a joiner that waits at most TIMEOUT
    and returns its result or re-raises its exception."""
    result: Dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=target, name="fake-agent-caller", daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} did not return"
        if "error" in result:
            raise result["error"]
        return result.get("value")

    return join


def exchange(put: Callable[[Any], Any], channel: Any, items: List[Any]) -> List[Any]:
    """Put ``items`` from a producer thread while taking as many from ``channel`` here.

    Tests that put data always consume concurrently: whether a run of puts
    fits before anyone reads depends on queue and pipe sizes, never to be relied on.
    """
    produced = run_in_thread(lambda: [put(item) for item in items])
    received = [channel.get(timeout=TIMEOUT) for _ in items]
    produced()
    return received


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread of ours running."""
    yield
    alive = join_threads()
    assert not alive, f"threads still alive after the test: {alive}"


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
        self._responses: Channel[Union[bytes, Any]] = Channel()
        self.errors: List[BaseException] = []
        self.servers: List[udf.Server] = []
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

    def next_request(self, kind: Optional[str] = None) -> Any:
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

    def drain_requests(self) -> List[Any]:
        """Read requests until the server closes its output (Go: ``for range u.Requests``)."""
        return list(self.requests)

    def finish(self) -> List[BaseException]:
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


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    fake = FakeAgent()
    yield fake
    # Tear down what a failed test left running, then release the pipes.
    for server in fake.servers:
        server.abort(udf.UDFError("test teardown"))
    fake.close_output()
    for server in fake.servers:
        server.wait_io(TIMEOUT)
    for thread in fake._threads:
        thread.join(TIMEOUT)
    fake.close()
