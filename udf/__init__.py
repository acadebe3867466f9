"""Host side of Kapacitor's user-defined-function (UDF) protocol.

A Python port of ``github.com/influxdata/kapacitor/udf`` (v1.3.0-rc4): run a UDF
agent and exchange points, batches, snapshots and keepalives with it over
varint-length-prefixed protobuf frames.
"""

from .channel import Channel
from .convert import Info
from .errors import (
    AgentClosedError,
    AgentError,
    ChannelClosed,
    CloseTimeoutError,
    ErrServerStopped,
    InitError,
    KeepaliveTimeoutError,
    ProcessExitedError,
    ProtocolError,
    ReadError,
    RestoreError,
    ServerStoppedError,
    SupervisorGaveUp,
    UDFError,
    WriteError,
)
from .interface import Interface, TransportState
from .models import Batch, BatchPoint, Dimensions, Point
from .process import Process
from .server import Server, ServerState
from .socket import Socket
from .stats import Stats
from .supervisor import RestartEvent, Supervisor, SupervisorState

__all__ = [
    "AgentClosedError",
    "AgentError",
    "Batch",
    "BatchPoint",
    "Channel",
    "ChannelClosed",
    "CloseTimeoutError",
    "Dimensions",
    "ErrServerStopped",
    "Info",
    "InitError",
    "Interface",
    "KeepaliveTimeoutError",
    "Point",
    "Process",
    "RestartEvent",
    "ProcessExitedError",
    "ProtocolError",
    "ReadError",
    "RestoreError",
    "Server",
    "ServerState",
    "ServerStoppedError",
    "Socket",
    "Stats",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorState",
    "TransportState",
    "UDFError",
    "WriteError",
]

__version__ = "0.1.0"
