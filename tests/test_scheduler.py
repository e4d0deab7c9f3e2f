"""The scheduler behind the solver seam: chains, confidence, the cache, verdicts, deadlines and slots.

Solvers here are small scripted implementations of the seam (real asyncio, no network); the real solvers have
their own tests against the fake service and real images.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from addon.capture.assemble import Captured, ImagePart
from addon.capture.images import ImageInfo, Role
from addon.capture.recognise import Kind
from addon.publish.bus import EventBus
from addon.solving import failures
from addon.solving.base import Job, RotateAnswer, Solution
from addon.solving.scheduler import Scheduler, SchedulerConfig

pytestmark = pytest.mark.usefixtures("eager_tasks")  # the task factory the proxy runs under


def captured(cid: str, client: str = "c1", picture: str = "p1") -> Captured:
    def part(role: Role, size: int) -> ImagePart:
        body = f"{picture}-{role}".encode()
        return ImagePart(role, f"https://cdn/{picture}/{role}", hashlib.sha256(body).hexdigest(),
                         ImageInfo("png", size, size, True), body)
    return Captured(cid, client, Kind.ROTATE, "get", {Role.OUTER: part(Role.OUTER, 347),
                                                      Role.INNER: part(Role.INNER, 211)}, None, None)


class Scripted:
    """A solver that answers what it is told to, after `delay`, and counts its jobs."""

    def __init__(self, name: str, *, paid: bool = True, angle: float = 90.0, confidence: float | None = None,
                 fail: type[failures.SolveFailure] | None = None, delay: float = 0.0):
        self.name, self.paid = name, paid
        self.kinds = frozenset(Kind)
        self.angle, self.confidence, self.fail, self.delay = angle, confidence, fail, delay
        self.jobs: list[str] = []
        self.gate: asyncio.Event | None = None

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        self.jobs.append(challenge.challenge_id)
        if self.paid:
            job.job_sent()
        job.started(f"{self.name}-{len(self.jobs)}" if self.paid else None)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail:
            failure = self.fail(f"{self.name} says {self.fail.reason}")
            if isinstance(failure, failures.Unavailable):
                job.service_fault(failure)
            raise failure
        if self.paid:
            job.service_ok()
        return Solution(str(self.angle), RotateAnswer.from_angle(self.angle), self.confidence)

    async def report(self, job_id: str, accepted: bool) -> bool:
        return False  # a paid service without a report call (PaidHttpSolver's default)

    async def check(self) -> str | None:
        return "1.00" if self.paid else None

    async def close(self) -> None:
        pass


async def eventually(condition: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


class Harness:
    def __init__(self, *solvers: Scripted, **config: Any):
        self.bus = EventBus()
        self.events: list[dict[str, Any]] = []
        self.bus.subscribe("test", lambda e: self.events.append(e.to_json()))
        self.scheduler = Scheduler(self.bus)
        self.scheduler.configure(SchedulerConfig(solvers=solvers, **({"poll_s": 0.01, "timeout_s": 5} | config)))
        self._changed = asyncio.Event()
        self.bus.subscribe("wake", lambda e: self._changed.set())

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in ("solved", "failed")]

    async def until(self, done: Callable[[], bool], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def settle(self, n: int = 1) -> list[dict[str, Any]]:
        await self.until(lambda: len(self.finals()) >= n)
        return self.finals()


async def test_a_confident_local_answer_never_reaches_the_paid_service() -> None:
    local, paid = Scripted("local", paid=False, angle=30, confidence=0.9), Scripted("omocaptcha-v1", angle=31)
    h = Harness(local, paid, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["confidence"], final["tried"]) == ("local", 0.9, ["local"])
    assert paid.jobs == [] and h.scheduler.jobs_sent == 0
    await h.scheduler.shutdown()


async def test_an_unsure_local_answer_goes_to_the_next_solver() -> None:
    local, paid = Scripted("local", paid=False, angle=30, confidence=0.2), Scripted("omocaptcha-v1", angle=31)
    h = Harness(local, paid, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["answer"]["angle"], final["tried"]) == ("omocaptcha-v1", 31.0,
                                                                           ["local", "omocaptcha-v1"])
    assert [e["service"] for e in h.events if e["event"] == "solving"] == ["local", "omocaptcha-v1"]
    await h.scheduler.shutdown()


async def test_with_no_solver_left_the_unsure_answer_is_published_with_its_confidence() -> None:
    local, paid = Scripted("local", paid=False, angle=30, confidence=0.2), Scripted("omocaptcha-v1", fail=failures.Unsolvable)
    h = Harness(local, paid, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["event"], final["service"], final["confidence"]) == ("solved", "local", 0.2)
    assert final["tried"] == ["local", "omocaptcha-v1"]
    await h.scheduler.shutdown()


async def test_unsolvable_passes_to_the_next_and_every_challenge_ends_once() -> None:
    v1, v2 = Scripted("omocaptcha-v1", fail=failures.Unsolvable), Scripted("omocaptcha-v2", angle=200)
    h = Harness(v1, v2)
    for n in range(5):
        h.scheduler.submit(captured(f"c{n}", picture=f"p{n}"))
    finals = await h.settle(5)
    assert sorted(f["challenge"] for f in finals) == [f"c{n}" for n in range(5)]
    assert {f["service"] for f in finals} == {"omocaptcha-v2"}
    assert len(v1.jobs) == len(v2.jobs) == 5
    await h.scheduler.shutdown()


async def test_the_last_failure_is_the_final_reason() -> None:
    h = Harness(Scripted("omocaptcha-v1", fail=failures.Unsolvable), Scripted("omocaptcha-v2", fail=failures.ServiceError))
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["service"], final["tried"]) == ("api_error", "omocaptcha-v2",
                                                                   ["omocaptcha-v1", "omocaptcha-v2"])
    await h.scheduler.shutdown()


async def test_bad_image_ends_the_chain_at_once() -> None:
    v1, v2 = Scripted("omocaptcha-v1", fail=failures.BadImage), Scripted("omocaptcha-v2")
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert final["reason"] == "bad_image" and v2.jobs == []
    await h.scheduler.shutdown()


async def test_the_same_images_are_paid_for_once() -> None:
    paid = Scripted("omocaptcha-v1", angle=120)
    h = Harness(paid)
    h.scheduler.submit(captured("a", client="c1", picture="same"))
    await h.settle(1)
    h.scheduler.submit(captured("b", client="c2", picture="same"))
    finals = await h.settle(2)
    assert paid.jobs == ["a"]
    assert finals[1]["cached"] is True and finals[1]["service"] == "omocaptcha-v1"
    assert finals[1]["answer"] == finals[0]["answer"] and finals[1]["tried"] == []
    await h.scheduler.shutdown()


async def test_a_rejected_answer_leaves_the_cache_and_the_repeat_goes_to_the_next_solver() -> None:
    v1, v2 = Scripted("omocaptcha-v1", angle=10), Scripted("omocaptcha-v2", angle=250)
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a", picture="same"))
    await h.settle(1)
    answered = h.scheduler.verdict("a", accepted=False)
    assert answered is not None and (answered.service, answered.cached) == ("omocaptcha-v1", False)
    h.scheduler.submit(captured("b", picture="same"))
    finals = await h.settle(2)
    assert (finals[1]["service"], finals[1]["tried"]) == ("omocaptcha-v2", ["omocaptcha-v2"])
    assert v1.jobs == ["a"] and v2.jobs == ["b"]
    # The right answer is cached now: a third time costs nothing, and v1 is still not asked.
    h.scheduler.submit(captured("c", picture="same"))
    finals = await h.settle(3)
    assert finals[2]["cached"] is True and finals[2]["service"] == "omocaptcha-v2"
    assert v1.jobs == ["a"] and v2.jobs == ["b"]
    await h.scheduler.shutdown()


async def test_timeout_counts_from_capture_including_the_wait_for_a_slot() -> None:
    slow = Scripted("omocaptcha-v1")
    slow.gate = asyncio.Event()
    h = Harness(slow, max_jobs=1, timeout_s=60)
    h.scheduler.submit(captured("holder", picture="p0"))
    await h.until(lambda: len(slow.jobs) == 1)
    # The holder keeps the only slot for a minute; the waiter's 0.3 s run out while it waits for it.
    h.scheduler.configure(SchedulerConfig(solvers=(slow,), poll_s=0.01, timeout_s=0.3, max_jobs=1))
    h.scheduler.submit(captured("waiter", picture="p1"))
    [final] = await h.settle(1)
    assert (final["challenge"], final["reason"], final["tried"]) == ("waiter", "timeout", [])
    assert slow.jobs == ["holder"] and h.scheduler.in_flight == 1
    await h.scheduler.shutdown()


async def test_overflow_fails_at_once_as_overloaded() -> None:
    slow = Scripted("omocaptcha-v1")
    slow.gate = asyncio.Event()
    h = Harness(slow, max_jobs=2, max_waiting=3)
    for n in range(7):
        h.scheduler.submit(captured(f"c{n}", picture=f"p{n}"))
    assert [f["reason"] for f in h.finals()] == ["overloaded", "overloaded"]
    assert h.scheduler.in_flight == 5 and h.scheduler.waiting == 3
    slow.gate.set()
    finals = await h.settle(7)
    assert [f["event"] for f in finals].count("solved") == 5
    await h.scheduler.shutdown()


async def test_a_down_service_is_skipped_for_the_next_without_waiting() -> None:
    v1, v2 = Scripted("omocaptcha-v1"), Scripted("omocaptcha-v2", angle=77)
    h = Harness(v1, v2)
    state = h.scheduler.services["omocaptcha-v1"]
    await eventually(lambda: state.key_state == "valid")  # the start-up check, a usable answer, is behind us
    health = state.health
    for _ in range(health.threshold):
        health.fault()
    health.last_ok = h.scheduler.clock() - health.window  # and no usable answer for a whole window
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["tried"]) == ("omocaptcha-v2", ["omocaptcha-v2"]) and v1.jobs == []
    await h.scheduler.shutdown()


async def test_adaptive_moves_a_service_the_site_keeps_refusing_behind_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    v1, v2 = Scripted("omocaptcha-v1", angle=5), Scripted("omocaptcha-v2", angle=6)
    h = Harness(v1, v2, adaptive=True, adaptive_share=0.5, cache_size=0)
    for n in range(10):
        h.scheduler.submit(captured(f"c{n}", picture=f"p{n}"))
        await h.settle(n + 1)
        h.scheduler.verdict(f"c{n}", accepted=n < 3)
    assert "moving it behind the next solver for rotate" in caplog.text
    h.scheduler.submit(captured("next", picture="new"))
    finals = await h.settle(11)
    assert finals[-1]["service"] == "omocaptcha-v2"
    await h.scheduler.shutdown()


async def test_shutdown_ends_everything_in_flight_once() -> None:
    slow = Scripted("omocaptcha-v1")
    slow.gate = asyncio.Event()
    h = Harness(slow, timeout_s=60)
    for n in range(3):
        h.scheduler.submit(captured(f"c{n}", picture=f"p{n}"))
    await h.until(lambda: len(slow.jobs) == 3)
    await h.scheduler.shutdown()
    assert sorted((f["challenge"], f["reason"]) for f in h.finals()) == [(f"c{n}", "shutdown") for n in range(3)]
    assert h.scheduler.in_flight == 0
