"""The suite's fixtures: a fake agent on real OS pipes (``agent``), and a thread-leak check on every test.

Helpers the tests import are in tests/helpers/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import udf

from .helpers import TIMEOUT, join_threads
from .helpers.fake_agent import FakeAgent


def pytest_report_header() -> str:
    from google.protobuf import __version__
    from google.protobuf.internal import api_implementation

    return f"protobuf {__version__}, {api_implementation.Type()} backend"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread of ours running."""
    yield
    alive = join_threads()
    assert not alive, f"threads still alive after the test: {alive}"


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
