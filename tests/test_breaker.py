"""The circuit breaker's states on an injected clock: every transition at the exact time it
is due, with no waiting (the gateway tests drive the same breaker through real failures)."""

from __future__ import annotations

import pytest

from llmtriage.backends.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_it_opens_after_consecutive_failures_only(clock):
    breaker = CircuitBreaker(failures=3, reset_s=10.0, clock=clock)
    breaker.failure("m")
    breaker.failure("m")
    breaker.success("m")  # a success in between starts the count again
    breaker.failure("m")
    breaker.failure("m")
    assert breaker.state("m") == "closed" and breaker.allow("m")
    breaker.failure("m")
    assert breaker.state("m") == "open" and not breaker.allow("m")
    assert breaker.trips("m") == 1 and breaker.retry_in("m") == 10.0
    assert breaker.open_for() == {"m": 10.0}
    assert breaker.state("other") == "closed"  # circuits are per model


def test_half_open_lets_one_probe_through_at_reset_and_its_verdict_decides(clock):
    breaker = CircuitBreaker(failures=1, reset_s=10.0, clock=clock)
    breaker.failure("m")
    clock.now += 9.999
    assert breaker.state("m") == "open" and not breaker.allow("m")
    assert breaker.retry_in("m") == pytest.approx(0.001)
    clock.now += 0.001
    assert breaker.state("m") == "half-open" and breaker.retry_in("m") == 0.0
    assert breaker.allow("m")  # the probe
    assert not breaker.allow("m")  # and only one at a time
    breaker.failure("m")  # the probe failed: open for another reset_s, from now
    assert breaker.state("m") == "open" and breaker.trips("m") == 2
    assert breaker.retry_in("m") == 10.0
    clock.now += 10.0
    assert breaker.allow("m")
    breaker.success("m")  # the probe succeeded: closed, every call allowed
    assert breaker.state("m") == "closed" and breaker.allow("m") and breaker.allow("m")
    assert breaker.open_for() == {}


def test_an_abandoned_probe_frees_the_slot_without_a_verdict(clock):
    breaker = CircuitBreaker(failures=1, reset_s=5.0, clock=clock)
    breaker.failure("m")
    clock.now += 5.0
    assert breaker.allow("m") and not breaker.allow("m")
    breaker.abandon("m")  # the client went away mid-probe
    assert breaker.state("m") == "half-open" and breaker.allow("m")
    assert breaker.trips("m") == 1


def test_held_open_by_another_replica_for_at_most_reset_s(clock):
    breaker = CircuitBreaker(failures=5, reset_s=10.0, clock=clock)
    breaker.hold_open("m", 4.0)
    assert breaker.state("m") == "open" and breaker.retry_in("m") == pytest.approx(4.0)
    assert breaker.trips("m") == 0  # another replica's trip, not counted here
    breaker.hold_open("long", 60.0)  # never longer than this replica's own reset
    assert breaker.retry_in("long") == pytest.approx(10.0)
    clock.now += 4.0
    assert breaker.state("m") == "half-open"
    breaker.hold_open("m", 4.0)  # no effect on a circuit already open or probing
    assert breaker.state("m") == "half-open"
