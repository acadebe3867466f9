"""udf.supervision.restart_policy on a fake clock: Erlang/OTP intensity, backoff with jitter, the reset. No threads."""

from __future__ import annotations

import pytest

from udf.supervision.restart_policy import RestartLimit, RestartPolicy


def policy(max_restarts: int = 3, period: float = 60.0, rand: float = 0.5) -> RestartPolicy:
    """No jitter (rand 0.5 is the nominal delay): initial 1 s, doubling, at most 5 s."""
    return RestartPolicy(max_restarts, period, (1.0, 2.0, 5.0), jitter=0.25, rand=lambda: rand)


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    p = policy(max_restarts=10)
    assert [p.next_delay(now) for now in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert p.restarts == 6


@pytest.mark.parametrize("rand, first", [(0.0, 0.75), (0.999999, 1.25)])
def test_jitter_is_within_a_quarter_of_the_nominal_delay(rand: float, first: float) -> None:
    p = policy(max_restarts=10, rand=rand)
    assert p.next_delay(0.0) == pytest.approx(first, abs=1e-5)
    assert p.next_delay(1.0) == pytest.approx(2 * first, abs=1e-5)


def test_the_restart_that_would_exceed_the_intensity_gives_up() -> None:
    p = policy(max_restarts=3, period=60.0)
    delays: list[float] = [p.next_delay(t) for t in (0.0, 10.0, 20.0)]
    assert len(delays) == 3
    with pytest.raises(RestartLimit, match="3 restarts within 60s"):
        p.next_delay(30.0)
    assert p.restarts == 3, "the refused attempt is not counted"


def test_restarts_older_than_the_period_leave_the_window() -> None:
    p = policy(max_restarts=2, period=10.0)
    p.next_delay(0.0)
    p.next_delay(5.0)
    with pytest.raises(RestartLimit):
        p.next_delay(9.9)
    p.next_delay(10.0)  # the one at 0.0 is more than a period ago
    with pytest.raises(RestartLimit, match="2 restarts within 10s"):
        p.next_delay(14.0)


def test_zero_max_restarts_gives_up_on_the_first_failure() -> None:
    with pytest.raises(RestartLimit, match="0 restarts within"):
        policy(max_restarts=0).next_delay(0.0)


def test_the_backoff_starts_over_after_period_healthy_seconds() -> None:
    p = policy(max_restarts=10, period=60.0)
    p.agent_running(0.0)
    p.agent_failed(1.0)
    assert [p.next_delay(1.0), p.next_delay(2.0), p.next_delay(3.0)] == [1.0, 2.0, 4.0]
    p.agent_running(3.0)
    p.agent_failed(62.9)  # up 59.9 s: not yet healthy long enough
    assert p.next_delay(62.9) == 5.0
    p.agent_running(63.0)
    p.agent_failed(123.0)  # up 60 s
    assert p.next_delay(123.0) == 1.0


def test_agents_dying_while_replayed_into_give_up_whatever_the_period() -> None:
    p = policy(max_restarts=2, period=0.001)  # the intensity alone would never trip
    now = 0.0
    for _ in range(3):
        now += 1.0
        p.next_delay(now)
        p.replay_failed()
    with pytest.raises(RestartLimit, match="3 agents in a row failed while replaying"):
        p.next_delay(now + 1.0)
    p.agent_running(now + 1.0)  # one got through: the count starts over
    p.next_delay(now + 2.0)
