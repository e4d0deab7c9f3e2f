"""The breaker's rule, pinned exactly: which faults count, what resets them, across concurrent jobs."""

from __future__ import annotations

from addon.solving.health import ServiceHealth


def test_faults_with_no_answer_ever_open_it_at_the_threshold() -> None:
    h = ServiceHealth(threshold=5, window=10.0)
    for _ in range(4):
        h.fault()
    assert not h.is_down(0.0)
    h.fault()
    assert h.is_down(0.0)


def test_a_recent_usable_answer_keeps_it_closed_however_many_faults_follow() -> None:
    h = ServiceHealth(threshold=5, window=10.0)
    h.ok(100.0)
    for _ in range(50):
        h.fault()
    assert not h.is_down(109.9)
    assert h.is_down(110.0)


def test_one_usable_answer_resets_the_count_of_all_jobs() -> None:
    h = ServiceHealth(threshold=5, window=10.0)
    for _ in range(4):
        h.fault()
    h.ok(0.0)
    for _ in range(4):
        h.fault()
    assert h.faults == 4
    assert not h.is_down(1000.0)
    h.fault()
    assert h.is_down(1000.0)


def test_interleaved_faults_and_answers_of_concurrent_jobs_never_open_it() -> None:
    """A busy gateway: 60 % of requests fail, spread over many jobs; the successes in between keep it up."""
    h = ServiceHealth(threshold=5, window=10.0)
    now = 0.0
    for i in range(1000):
        now += 0.01
        if i % 5 in (0, 1, 2):
            h.fault()
        else:
            h.ok(now)
        assert not h.is_down(now)


def test_a_probe_that_gets_through_closes_it_and_a_failed_one_does_not() -> None:
    h = ServiceHealth(threshold=2, window=10.0)
    h.fault()
    h.fault()
    assert h.is_down(50.0)
    h.probed(50.0, up=False)
    assert h.is_down(55.0)
    h.probed(60.0, up=True)
    assert not h.is_down(60.0)
    assert h.faults == 0
