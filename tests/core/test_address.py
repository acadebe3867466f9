"""One address grammar for both sides: udf.Socket connects to what AgentServer listens on."""

from __future__ import annotations

import pytest

import udf
from udf.address import Address, parse_address
from udf.agent import AgentServer, Handler


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/tmp/a.sock", Address("unix", "/tmp/a.sock", "unix socket /tmp/a.sock")),
        ("relative.sock", Address("unix", "relative.sock", "unix socket relative.sock")),
        ("tcp://127.0.0.1:0", Address("tcp", ("127.0.0.1", 0), "tcp://127.0.0.1:0")),
        ("tcp://localhost:9100", Address("tcp", ("localhost", 9100), "tcp://localhost:9100")),
        ("tcp://[::1]:65535", Address("tcp", ("::1", 65535), "tcp://[::1]:65535")),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


BAD = ["", "tcp://127.0.0.1", "tcp://:9000", "tcp://host:port", "tcp://::1:9000", "tcp://h:65536", "tcp://h:1/x"]


@pytest.mark.parametrize("text", BAD)
def test_both_sides_refuse_the_same_addresses_with_the_same_message(text: str) -> None:
    with pytest.raises(ValueError) as parsed:
        parse_address(text)
    message = str(parsed.value)
    assert ("tcp://host:port" in message) if text else (message == "socket path must not be empty")
    with pytest.raises(ValueError) as host_side:
        udf.Socket(text)
    with pytest.raises(ValueError) as agent_side:
        AgentServer(text, Handler)
    assert str(host_side.value) == str(agent_side.value) == message
