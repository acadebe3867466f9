"""Prometheus metrics for UDFs (the ``metrics`` extra): a collector over ``stats()``.

::

    import prometheus_client
    import udf.metrics

    udf.metrics.register(proc, name="moving_avg")  # a Process, Socket, Supervisor or Server
    prometheus_client.start_http_server(9100)

:class:`UDFCollector` reads each registered object's ``stats()`` (a
:class:`udf.Stats`; a Supervisor's adds restarts, replayed, lost, ...) and its
``state`` when Prometheus scrapes, and nothing in between: no thread, no work
on the data path. Every metric has the label ``udf``, the name an object was
registered under. ``import udf`` does not import this module (nor
prometheus_client).
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .extras import install_hint

try:
    from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric, StateSetMetricFamily
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:  # installed without the extra
    raise ImportError(f"udf.metrics needs prometheus_client: {install_hint('metrics')} ({exc})") from exc

from .errors import UDFError
from .interface import TransportState
from .server import Server, ServerState
from .supervisor import Supervisor

__all__ = ["UDFCollector", "register", "unregister", "metric_families"]

#: Counters of :class:`udf.Stats` (and a Supervisor's stats): attribute, metric name, help.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("points_in", "udf_points_in", "Stream points accepted by put()."),
    ("batches_in", "udf_batches_in", "Batches accepted by put()."),
    ("points_out", "udf_points_out", "Stream points delivered to point_out."),
    ("batches_out", "udf_batches_out", "Batches delivered to batch_out."),
    ("bytes_in", "udf_bytes_in", "Bytes read from the agent."),
    ("bytes_out", "udf_bytes_out", "Bytes written to the agent."),
    ("errors", "udf_errors", "Error events: aborts and unsolicited responses."),
    ("dropped", "udf_dropped", "Points and batches the agent sent after their channel was closed."),
    ("restarts", "udf_restarts", "Supervisor: restart attempts."),
    ("replayed", "udf_replayed", "Supervisor: items re-sent to a new agent."),
    ("lost", "udf_lost", "Supervisor: items accepted since the last snapshot and not re-sent (replay=False)."),
    ("accepted", "udf_accepted", "Supervisor: items accepted by put() over all agents."),
)

#: Gauges: attribute, metric name, help.
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("uptime", "udf_uptime_seconds", "Seconds since the server underneath started."),
    ("keepalive_rtt", "udf_keepalive_rtt_seconds", "The last keepalive round trip (absent before the first)."),
    ("generation", "udf_generation", "Supervisor: the current agent's generation (0 the first)."),
    ("log", "udf_replay_log_items", "Supervisor: items in the replay log (accepted since the last snapshot)."),
)

#: Queue depths of :class:`udf.Stats`: attribute, value of the ``queue`` label.
QUEUES: tuple[tuple[str, str], ...] = (
    ("in_queue", "in"),
    ("point_out_queue", "point_out"),
    ("batch_out_queue", "batch_out"),
)

SERVER_STATES: tuple[str, ...] = tuple(s.value for s in ServerState)
TRANSPORT_STATES: tuple[str, ...] = tuple(s.value for s in TransportState)
SUPERVISOR_STATES: tuple[str, ...] = ("new", "running", "restarting", "gave_up", "closed")


def state_name(state: Any) -> str:
    """A state as text: an enum's string value (``ServerState.RUNNING`` -> "running"), a str as it is."""
    if isinstance(state, enum.Enum):
        return state.value if isinstance(state.value, str) else state.name.lower()
    return str(state)


def state_set(state: Any, known: Sequence[str]) -> dict[str, bool]:
    """Every state the object can be in (its enum's members, else ``known``), True for ``state``."""
    current = state_name(state)
    names = [state_name(s) for s in type(state)] if isinstance(state, enum.Enum) else list(known)
    if current not in names:
        names.append(current)
    return {name: name == current for name in names}


def _known_states(obj: Any) -> Sequence[str]:
    """The states of a plain-str ``state``, by what the object is."""
    if isinstance(obj, Server):
        return SERVER_STATES
    if isinstance(obj, Supervisor):
        return SUPERVISOR_STATES
    return TRANSPORT_STATES


def metric_families(entries: Iterable[tuple[str, Any]]) -> list[Metric]:
    """The metric families for ``(name, object)`` pairs, read now (pure but for the objects' ``stats()``).

    An object whose ``stats()`` fails (not opened yet, or an Interface without
    stats) reports only its state.
    """
    counters = {attr: CounterMetricFamily(name, doc, labels=["udf"]) for attr, name, doc in COUNTERS}
    gauges = {attr: GaugeMetricFamily(name, doc, labels=["udf"]) for attr, name, doc in GAUGES}
    requests = CounterMetricFamily("udf_requests", "Requests sent to the agent, by kind.", labels=["udf", "kind"])
    queues = GaugeMetricFamily("udf_queue_depth", "Items waiting in a queue.", labels=["udf", "queue"])
    states = StateSetMetricFamily("udf_state", "The object's state (a Supervisor's, a transport's).", labels=["udf"])
    server_states = StateSetMetricFamily(
        "udf_server_state", "The state of the udf.Server underneath (a Supervisor's current agent's).", labels=["udf"]
    )
    for name, obj in entries:
        try:
            stats: Any = obj.stats()
        except (UDFError, NotImplementedError):
            stats = None
        state = getattr(obj, "state", None)
        if state is None and stats is not None:
            state = stats.state
        if state is not None:
            states.add_metric([name], state_set(state, _known_states(obj)))
        if stats is None:
            continue
        # A Supervisor's stats().state is its own; its agent_state the current agent's server's.
        server_state = getattr(stats, "agent_state", stats.state)
        if server_state:
            server_states.add_metric([name], state_set(server_state, SERVER_STATES))
        for attr, family in counters.items():
            value = getattr(stats, attr, None)
            if value is not None:
                family.add_metric([name], value)
        for attr, gauge in gauges.items():
            value = getattr(stats, attr, None)
            if value is not None:
                gauge.add_metric([name], value)
        for kind, count in sorted(stats.requests.items()):
            requests.add_metric([name, kind], count)
        for attr, queue in QUEUES:
            queues.add_metric([name, queue], getattr(stats, attr))
    return [*counters.values(), requests, *gauges.values(), queues, states, server_states]


class UDFCollector:
    """A prometheus_client collector over named UDF objects (anything with ``stats()``; ``state`` if it has one).

    ``udfs``: one object, a sequence of them (named by :meth:`add`'s rule) or
    a mapping ``{name: object}``. Objects are held (closed ones keep reporting
    their last counters) until :meth:`remove`.
    """

    def __init__(self, udfs: None | Any | Sequence[Any] | Mapping[str, Any] = None) -> None:
        self._lock = threading.Lock()
        self._udfs: dict[str, Any] = {}
        if isinstance(udfs, Mapping):
            for name, obj in udfs.items():
                self.add(obj, name)
        elif isinstance(udfs, (list, tuple)):
            for obj in udfs:
                self.add(obj)
        elif udfs is not None:
            self.add(udfs)

    def add(self, obj: Any, name: str | None = None) -> str:
        """Report ``obj`` under ``name`` (default: its class name in lower case, then ``-2``...); return the name."""
        if not callable(getattr(obj, "stats", None)):
            raise TypeError(f"udf.metrics reports objects with stats(), got {type(obj).__name__}")
        with self._lock:
            for taken, other in self._udfs.items():
                if other is obj:
                    raise ValueError(f"{type(obj).__name__} already registered as {taken!r}")
            if name is None:
                name = base = type(obj).__name__.lower()
                n = 1
                while name in self._udfs:
                    n += 1
                    name = f"{base}-{n}"
            elif not isinstance(name, str) or not name:
                raise ValueError(f"the name must be a non-empty str, got {name!r}")
            elif name in self._udfs:
                raise ValueError(f"a UDF named {name!r} is registered already")
            self._udfs[name] = obj
        return name

    def remove(self, obj: Any) -> bool:
        """Stop reporting ``obj`` (or the object of that name); whether it was reported."""
        with self._lock:
            for name, other in list(self._udfs.items()):
                if other is obj or (isinstance(obj, str) and name == obj):
                    del self._udfs[name]
                    return True
        return False

    def names(self) -> list[str]:
        with self._lock:
            return list(self._udfs)

    def describe(self) -> list[Metric]:
        """The families without samples: registering reads no ``stats()``."""
        return metric_families(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            entries = list(self._udfs.items())
        yield from metric_families(entries)  # stats() outside our lock: each takes its own


#: The collector register() added to each registry.
_collectors: weakref.WeakKeyDictionary[Any, UDFCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def register(obj: Any, registry: CollectorRegistry | None = None, *, name: str | None = None) -> UDFCollector:
    """Report ``obj`` (a Process, Socket, Supervisor or Server) to ``registry`` (default: prometheus_client's).

    One :class:`UDFCollector` per registry holds every object registered there;
    ``name`` is the ``udf`` label (see :meth:`UDFCollector.add`). Returns that collector.
    """
    registry = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = UDFCollector()
            registry.register(collector)
            _collectors[registry] = collector
    collector.add(obj, name)
    return collector


def unregister(obj: Any, registry: CollectorRegistry | None = None) -> bool:
    """Stop reporting ``obj`` (or the name it was registered under) to ``registry``; whether it was reported."""
    registry = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
    return collector is not None and collector.remove(obj)
