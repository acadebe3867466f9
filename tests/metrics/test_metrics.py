"""udf.metrics: a Prometheus collector over stats(), scraped over HTTP from real agents."""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import udf
import udf.metrics
from udf import Point

from ..helpers import ROOT, TIMEOUT, run_in_thread

MOVING_AVG = str(ROOT / "examples" / "moving_avg.py")
SLOW_KEEPALIVE = str(ROOT / "tests" / "agents" / "slow_keepalive.py")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def scrape() -> Iterator[tuple[CollectorRegistry, Any]]:
    """A fresh registry served by prometheus_client's HTTP server on a free port, and a scraper."""
    registry = CollectorRegistry()
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{httpd.server_port}/metrics"

    def get() -> Samples:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            assert response.status == 200
            text = response.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        yield registry, get
    finally:
        httpd.shutdown()  # wakes serve_forever
        httpd.server_close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def sample(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not scraped; got {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def current_state(samples: Samples, metric: str, udf_name: str) -> list[str]:
    """The states a state set reports as current (exactly one, if it is right)."""
    return [
        dict(labels)[metric]
        for (name, labels), value in samples.items()
        if name == metric and dict(labels)["udf"] == udf_name and value == 1.0
    ]


def point(i: int) -> Point:
    return Point(name="cpu", tags={"host": "a"}, fields={"v": float(i)}, time=i * 10**9)


class Outputs:
    """Takes a channel's items in a thread (tests always consume while they put)."""

    def __init__(self, channel: udf.Channel[Any]) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(channel,), name="test-outputs", daemon=True)
        self._thread.start()

    def _run(self, channel: udf.Channel[Any]) -> None:
        for item in channel:
            with self._cond:
                self.items.append(item)
                self._cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, TIMEOUT), f"{len(self.items)} of {n} outputs"

    def join(self) -> None:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the output channel did not close"


class _LogEvent(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_process_and_a_supervisor_scraped_over_http(scrape: tuple[CollectorRegistry, Any]) -> None:
    registry, get = scrape
    proc = udf.Process(sys.executable, ["-u", MOVING_AVG], timeout=TIMEOUT)
    udf.metrics.register(proc, registry, name="avg")
    before = get()
    assert current_state(before, "udf_state", "avg") == ["new"]
    assert ("udf_points_in_total", (("udf", "avg"),)) not in before, "no stats before open()"

    made: list[udf.Process] = []
    restarted = threading.Event()
    events: list[udf.RestartEvent] = []

    def factory() -> udf.Process:
        made.append(udf.Process(sys.executable, ["-u", MOVING_AVG], timeout=TIMEOUT))
        return made[-1]

    def on_restart(event: udf.RestartEvent) -> None:
        events.append(event)
        restarted.set()

    sup = udf.Supervisor(factory, {"field": "v", "size": 2}, backoff=(0.01, 2.0, 0.1), on_restart=on_restart)
    udf.metrics.register(sup, registry, name="sup")
    try:
        with proc:
            assert proc.info().options.keys() == {"field", "size", "as"}
            proc.init({"field": "v", "size": 2})

            def put_five() -> None:
                for i in range(5):
                    proc.point_in.put(point(i))

            put = run_in_thread(put_five)
            got = [proc.point_out.get(timeout=TIMEOUT).fields["avg"] for _ in range(4)]
            put()
            assert got == [0.5, 1.5, 2.5, 3.5]
            running = get()
            assert sample(running, "udf_points_in_total", udf="avg") == 5
            assert sample(running, "udf_points_out_total", udf="avg") == 4
            assert sample(running, "udf_batches_in_total", udf="avg") == 0
            assert sample(running, "udf_requests_total", udf="avg", kind="info") == 1
            assert sample(running, "udf_requests_total", udf="avg", kind="init") == 1
            assert sample(running, "udf_bytes_in_total", udf="avg") > 0
            assert sample(running, "udf_queue_depth", udf="avg", queue="point_out") == 0
            assert current_state(running, "udf_state", "avg") == ["open"]
            assert current_state(running, "udf_server_state", "avg") == ["running"]

        sup.open()
        outputs = Outputs(sup.point_out)
        for i in range(3):
            sup.point_in.put(point(i))
        outputs.wait_for(2)
        pid = made[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert restarted.wait(TIMEOUT), "the supervisor did not restart its agent"
        sup.point_in.put(point(3))
        outputs.wait_for(2 + events[0].replayed - 1 + 1)  # the replay's outputs again, then the new one
        restarted_once = get()
        assert sample(restarted_once, "udf_restarts_total", udf="sup") == 1
        assert sample(restarted_once, "udf_replayed_total", udf="sup") == events[0].replayed == 3
        assert sample(restarted_once, "udf_lost_total", udf="sup") == 0
        assert sample(restarted_once, "udf_generation", udf="sup") == 1
        assert sample(restarted_once, "udf_accepted_total", udf="sup") == 4
        assert current_state(restarted_once, "udf_state", "sup") == ["running"]
        assert current_state(restarted_once, "udf_server_state", "sup") == ["running"]
        assert sample(restarted_once, "udf_points_out_total", udf="avg") == 4, "the closed process keeps its counts"
        assert current_state(restarted_once, "udf_state", "avg") == ["closed"]
    finally:
        sup.close()
    outputs.join()
    closed = get()
    assert current_state(closed, "udf_state", "sup") == ["closed"]
    assert udf.metrics.unregister(sup, registry)
    assert ("udf_restarts_total", (("udf", "sup"),)) not in get()


def test_keepalive_round_trip_is_scraped(scrape: tuple[CollectorRegistry, Any]) -> None:
    registry, get = scrape
    answered = _LogEvent("keepalive 1 answered")
    logger = logging.getLogger("udf.test.metrics")
    logger.addHandler(answered)
    logger.setLevel(logging.DEBUG)
    proc = udf.Process(sys.executable, [SLOW_KEEPALIVE, "0.0"], logger=logger, timeout=2.0)
    udf.metrics.register(proc, registry, name="ka")
    try:
        with proc:
            assert answered.event.wait(TIMEOUT)
            proc.info()  # answered after the keepalive: the round trip is measured by now
            samples = get()
            assert 0 <= sample(samples, "udf_keepalive_rtt_seconds", udf="ka") < TIMEOUT
            assert sample(samples, "udf_requests_total", udf="ka", kind="keepalive") >= 1
            assert sample(samples, "udf_uptime_seconds", udf="ka") > 0
    finally:
        logger.removeHandler(answered)


class SupervisorLikeState(str, enum.Enum):
    """A str-valued state enum, as udf.SupervisorState is."""

    NEW = "new"
    RUNNING = "running"
    GAVE_UP = "gave_up"


class _Reporting:
    """An object with stats() and state: what udf.metrics reads, fixed for a unit test of the mapping."""

    def __init__(self, state: Any, stats: Any) -> None:
        self.state = state
        self._stats = stats

    def stats(self) -> Any:
        if self._stats is None:
            raise udf.UDFError("not opened: call open() first")
        return self._stats


def families(entries: list[tuple[str, Any]]) -> dict[str, Any]:
    return {f.name: f for f in udf.metrics.metric_families(entries)}


def test_states_from_str_enums_and_plain_strings() -> None:
    stats = udf.Stats(
        state="running",
        uptime=1.5,
        points_in=1,
        batches_in=2,
        points_out=3,
        batches_out=4,
        bytes_in=5,
        bytes_out=6,
        requests={"init": 1},
        keepalive_rtt=None,
    )
    found = families(
        [
            ("enum", _Reporting(SupervisorLikeState.GAVE_UP, stats)),
            ("plain", _Reporting("restarting", None)),
            ("odd", _Reporting("someday", None)),
        ]
    )
    states: dict[str, dict[str, float]] = {s.labels["udf"]: {} for s in found["udf_state"].samples}
    for s in found["udf_state"].samples:
        states[s.labels["udf"]][s.labels["udf_state"]] = s.value
    assert states["enum"] == {"new": 0, "running": 0, "gave_up": 1}, "an enum's own members"
    assert states["plain"]["restarting"] == 1 and sum(states["plain"].values()) == 1
    assert states["odd"]["someday"] == 1 and sum(states["odd"].values()) == 1, "an unknown state is still shown"
    values = {
        (s.name, s.labels["udf"]): s.value for f in found.values() for s in f.samples if "udf_state" not in s.labels
    }
    assert values[("udf_batches_out_total", "enum")] == 4 and values[("udf_bytes_out_total", "enum")] == 6
    assert ("udf_keepalive_rtt_seconds", "enum") not in values, "no round trip before the first keepalive"
    assert ("udf_points_in_total", "plain") not in values, "not opened: only the state"
    assert ("udf_restarts_total", "enum") not in values, "a plain Stats has no restarts"


def test_names_and_registration_rules() -> None:
    registry = CollectorRegistry()
    a, b = _Reporting("new", None), _Reporting("new", None)
    collector = udf.metrics.register(a, registry)
    assert udf.metrics.register(b, registry) is collector, "one collector per registry"
    assert collector.names() == ["_reporting", "_reporting-2"]
    with pytest.raises(ValueError, match="already registered as '_reporting'"):
        udf.metrics.register(a, registry)
    assert collector.add(_Reporting("new", None), "x") == "x"
    with pytest.raises(ValueError, match="named 'x' is registered already"):
        collector.add(_Reporting("new", None), "x")
    with pytest.raises(TypeError, match="objects with stats"):
        collector.add(object())
    assert udf.metrics.unregister(a, registry) and not udf.metrics.unregister(a, registry)
    assert collector.names() == ["_reporting-2", "x"]


def test_import_udf_does_not_import_prometheus_client() -> None:
    code = "import sys, udf, udf.cli; assert 'prometheus_client' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=TIMEOUT)


def test_without_prometheus_client_the_import_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # import now fails\n"
        "try:\n"
        "    import udf.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.stdout.startswith(
        "udf.metrics needs prometheus_client: install the 'metrics' extra: pip install '.[metrics]' in a clone"
    ), done.stdout + done.stderr
