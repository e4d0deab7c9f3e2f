"""The scheduler's answer cache (by image set, bounded by count and age, forgetting what the site refused), and
the parts of a service's health the breaker's own tests leave aside (settings, probes)."""

from __future__ import annotations

import hashlib

import pytest

from addon.capture.assemble import Captured, ImagePart
from addon.capture.images import ImageInfo, Role
from addon.capture.recognise import Kind
from addon.solving.base import RotateAnswer, Solution
from addon.solving.cache import AnswerCache, image_key
from addon.solving.health import ServiceHealth


def captured(outer: bytes, inner: bytes, cid: str = "c", client: str = "k", kind: Kind = Kind.ROTATE) -> Captured:
    def part(role: Role, body: bytes) -> ImagePart:
        return ImagePart(role, f"https://cdn/{cid}/{role}", hashlib.sha256(body).hexdigest(),
                         ImageInfo("png", 10, 10, True), body)
    return Captured(cid, client, kind, "get", {Role.OUTER: part(Role.OUTER, outer), Role.INNER: part(Role.INNER, inner)},
                    None, None)


def solution(angle: float) -> Solution:
    return Solution(str(angle), RotateAnswer.from_angle(angle))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_image_key_is_the_pictures_whatever_the_challenge_client_or_url() -> None:
    key = image_key(captured(b"o", b"i"))
    assert key == image_key(captured(b"o", b"i", cid="other", client="else"))
    assert len({key, image_key(captured(b"o", b"j")), image_key(captured(b"p", b"i")),
                image_key(captured(b"i", b"o")), image_key(captured(b"o", b"i", kind=Kind.SLIDE))}) == 5


def test_answers_are_kept_until_their_age_passes_the_ttl() -> None:
    clock = Clock()
    cache = AnswerCache(max_entries=1, ttl=60, clock=clock)
    assert cache.get("a") is None and cache.hits == 0
    cache.put("a", "omocaptcha-v1", solution(10))
    clock.now += 60
    entry = cache.get("a")
    assert entry is not None and (entry.service, entry.solution, entry.stored_at) == ("omocaptcha-v1", solution(10),
                                                                                      1000.0)
    assert cache.get("a") is not None and cache.hits == 2
    clock.now += 0.001
    assert cache.get("a") is None and len(cache) == 0 and cache.hits == 2
    assert AnswerCache().ttl == 6 * 3600 and AnswerCache().max_entries == 10_000


def test_the_oldest_answer_goes_first_and_a_new_answer_counts_as_new() -> None:
    cache = AnswerCache(max_entries=2, clock=Clock())
    cache.put("a", "s", solution(1))
    cache.put("b", "s", solution(2))
    cache.put("a", "s", solution(3))
    cache.put("c", "s", solution(4))
    assert len(cache) == 2 and cache.get("b") is None
    assert [cache.get(k).solution.result for k in ("a", "c")] == ["3", "4"]  # type: ignore[union-attr]


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = AnswerCache(max_entries=0, clock=Clock())
    cache.put("a", "s", solution(1))
    assert len(cache) == 0 and cache.get("a") is None
    cache.max_entries = 1  # resized later: answers kept before the resize are served again
    cache.put("a", "s", solution(1))
    assert cache.get("a") is not None


def test_a_refused_answer_is_dropped_and_its_service_avoided_for_those_images() -> None:
    cache = AnswerCache(max_entries=2, clock=Clock())
    cache.put("a", "v1", solution(1))
    cache.put("b", "v1", solution(2))
    cache.rejected("a", "v1")
    cache.rejected("a", "v2")
    assert cache.get("a") is None and cache.get("b") is not None
    assert cache.wrong_services("a") == {"v1", "v2"} and cache.wrong_services("b") == frozenset()
    # The record of wrong services is bounded like the answers, oldest out first.
    cache.rejected("b", "v1")
    cache.rejected("a", "v3")
    cache.rejected("c", "v1")
    assert cache.wrong_services("b") == frozenset()
    assert cache.wrong_services("a") == {"v1", "v2", "v3"} and cache.wrong_services("c") == {"v1"}


def test_health_settings_and_probes() -> None:
    health = ServiceHealth(threshold=2, window=3.0, probe_s=4.0)
    assert (health.threshold, health.window, health.probe_s, health.faults, health.last_ok) == (2, 3.0, 4.0, 0, None)
    assert (ServiceHealth().threshold, ServiceHealth().window, ServiceHealth().probe_s) == (5, 10.0, 5.0)
    health.fault()
    health.fault()
    assert health.is_down(100.0)
    health.probed(100.0, up=False)
    assert health.is_down(100.0) and health.last_ok is None
    health.probed(101.0, up=True)
    assert (health.faults, health.last_ok) == (0, 101.0) and not health.is_down(101.0)


@pytest.mark.parametrize("up", [True, False])
async def test_a_probe_outcome_wakes_those_waiting_for_a_verdict(up: bool) -> None:
    import asyncio

    health = ServiceHealth()
    waiter = asyncio.create_task(health.next_verdict())
    await asyncio.sleep(0)
    assert not waiter.done()
    health.probed(1.0, up=up)
    await asyncio.wait_for(waiter, 5)
    # A later waiter waits for the next outcome, not the one already seen.
    again = asyncio.create_task(health.next_verdict())
    await asyncio.sleep(0)
    assert not again.done()
    health.ok(2.0)
    await asyncio.wait_for(again, 5)
