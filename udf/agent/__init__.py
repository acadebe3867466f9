"""Write Kapacitor UDF agents in Python: the agent side of the UDF protocol.

A UDF agent reads ``agent_pb2.Request`` frames from Kapacitor (or any
:class:`udf.Server`) and writes ``agent_pb2.Response`` frames back. This package
gives you the plumbing so that you only write a :class:`Handler`:

* :class:`Handler` (``handler.py``) -- subclass it; its methods mirror
  Kapacitor's Python agent (``info``, ``init``, ``snapshot``, ``restore``,
  ``begin_batch``, ``point``, ``end_batch``) plus ``stop``. They receive and
  return ``agent_pb2`` messages, so handlers written for Kapacitor's agent port
  with few changes.
* :func:`parse_options`, :func:`init_options`, :func:`option_value`,
  :func:`field_value` (``options.py``) -- request contents as Python values.
* :class:`Agent` (``conversation.py``) -- runs one conversation over a pair of
  binary streams: a reader thread (``reading.py``) that answers keepalives at
  once, a handler thread (``handling.py``) that calls the handler, one buffered
  output (``output.py``). :meth:`Agent.write_response` is thread safe.
* :class:`AgentServer` (``server.py``) -- serves one :class:`Agent` per
  connection on a unix socket path or ``tcp://host:port``.
* ``states.py`` -- the lifecycles as data: :class:`AgentState`,
  :class:`ServerState` and their transition tables (rendered in docs/agent.md).
* :func:`main` (``command.py``) -- a command line entry: stdin/stdout agent by
  default, ``--socket PATH`` for a socket server. ``python -m udf.agent
  MODULE:FACTORY`` runs it for a handler named by import path.

Conversions between ``agent_pb2`` messages and :mod:`udf.models` are
re-exported from :mod:`udf.convert` (:func:`point_from_message`, ...).
"""

from ..convert import (
    batch_point_from_message,
    batch_point_to_message,
    fields_from_message,
    fields_to_message,
    point_from_message,
    point_to_message,
)
from .command import main
from .conversation import FLUSH_THRESHOLD, READ_CHUNK, REQUEST_QUEUE_SIZE, Agent
from .handler import Handler, HandlerFactory
from .options import OptionPyValue, field_value, init_options, option_value, parse_options
from .server import AgentServer
from .states import AgentState, ServerState

__all__ = [
    "Handler",
    "Agent",
    "AgentServer",
    "AgentState",
    "ServerState",
    "HandlerFactory",
    "OptionPyValue",
    "main",
    "option_value",
    "init_options",
    "parse_options",
    "field_value",
    "point_from_message",
    "point_to_message",
    "batch_point_from_message",
    "batch_point_to_message",
    "fields_from_message",
    "fields_to_message",
    "READ_CHUNK",
    "REQUEST_QUEUE_SIZE",
    "FLUSH_THRESHOLD",
]
