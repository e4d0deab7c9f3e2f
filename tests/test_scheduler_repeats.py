"""Repeats of one image set on one proxy: a challenge whose images are being solved already waits for that answer
(inside its own deadline) instead of paying for a second job, and takes over when the first one gets none; what
the site's verdicts do to the cache (a rejection marks the service wrong, an acceptance clears the mark)."""

from __future__ import annotations

import asyncio
from typing import Any

from addon.capture.assemble import Captured
from addon.solving import failures
from addon.solving.base import Job, RotateAnswer, Solution
from addon.solving.scheduler import SchedulerConfig
from tests.test_scheduler_rules import Harness, Solver, answer, captured, fail, fleet_harness, until


def held(gate: asyncio.Event, step: Any = None) -> Any:
    """A solve that waits for `gate`, then does `step` (an answer of 90 by default)."""
    async def solve(challenge: Captured, job: Job) -> Solution:
        await gate.wait()
        result = (step or answer(90))(challenge, job)
        assert isinstance(result, Solution)
        return result
    return solve


def by_challenge(h: Harness) -> dict[str, dict[str, Any]]:
    finals = h.finals()
    assert len(finals) == len({f["challenge"] for f in finals}), finals  # exactly one final event each
    return {f["challenge"]: f for f in finals}


async def test_a_repeat_waits_for_the_answer_in_flight_and_pays_nothing() -> None:
    gate = asyncio.Event()
    v1 = Solver(steps=[held(gate, answer(90, job_id="job-a"))])
    h = Harness(v1)
    h.scheduler.submit(captured("a", picture="p"))
    await until(lambda: v1.jobs == ["a"])
    h.scheduler.submit(captured("b", picture="p", client="c2"))
    h.scheduler.submit(captured("other", picture="q"))  # other images are no repeat: their own job
    await until(lambda: "other" in by_challenge(h))
    assert h.scheduler.in_flight == 2 and v1.jobs == ["a", "other"]
    gate.set()
    await h.settle(3)
    finals = by_challenge(h)
    assert (finals["a"]["service"], finals["a"]["job_id"], finals["a"].get("cached")) == ("omocaptcha-v1",
                                                                                         "job-a", None)
    b = finals["b"]
    assert (b["service"], b["job_id"], b["cached"], b["cached_from"], b["same_as"], b["tried"], b["answer"]) == (
        "omocaptcha-v1", None, True, "repeat", "a", [], finals["a"]["answer"])
    assert v1.jobs == ["a", "other"] and h.scheduler.jobs_sent == 2
    # Later repeats come from the cache, and say which challenge paid for the answer.
    h.scheduler.submit(captured("c", picture="p"))
    await h.settle(4)
    c = by_challenge(h)["c"]
    assert (c["cached_from"], c["same_as"], c["tried"]) == ("cache", "a", [])
    await h.scheduler.shutdown()


async def test_when_the_first_fails_one_repeat_takes_over_and_the_others_wait_for_it() -> None:
    gate, again = asyncio.Event(), asyncio.Event()
    v1 = Solver(steps=[held(gate, fail(failures.Unsolvable)), held(again, answer(45, job_id="job-b"))])
    h = Harness(v1)
    for cid in ("a", "b", "c"):
        h.scheduler.submit(captured(cid, picture="p"))
        await until(lambda: v1.jobs == ["a"])
    gate.set()
    await until(lambda: v1.jobs == ["a", "b"])
    assert set(by_challenge(h)) == {"a"} and by_challenge(h)["a"]["reason"] == "unsolvable"
    again.set()
    await h.settle(3)
    finals = by_challenge(h)
    assert (finals["b"]["tried"], finals["b"].get("cached"), finals["b"]["job_id"]) == (["omocaptcha-v1"], None,
                                                                                        "job-b")
    assert (finals["c"]["cached_from"], finals["c"]["same_as"], finals["c"]["result"]) == ("repeat", "b", "45")
    assert v1.jobs == ["a", "b"]
    await h.scheduler.shutdown()


async def test_when_the_first_times_out_the_repeat_takes_over_inside_its_own_deadline() -> None:
    never = asyncio.Event()
    v1 = Solver(steps=[held(never), answer(30, job_id=8)])
    h = Harness(v1, timeout_s=0.1)
    h.scheduler.submit(captured("a", picture="p"))
    await until(lambda: v1.jobs == ["a"])
    h.scheduler.configure(SchedulerConfig(solvers=h.scheduler.config.solvers, poll_s=0.01, timeout_s=5))
    h.scheduler.submit(captured("b", picture="p"))
    await h.settle(2)
    finals = by_challenge(h)
    assert finals["a"]["reason"] == "timeout"
    assert (finals["b"]["event"], finals["b"]["job_id"], finals["b"].get("cached")) == ("solved", 8, None)
    assert v1.jobs == ["a", "b"]
    await h.scheduler.shutdown()


async def test_when_the_first_is_cancelled_the_repeat_takes_over() -> None:
    never = asyncio.Event()
    v1 = Solver(steps=[held(never), answer(30, job_id=8)])
    h = Harness(v1)
    h.scheduler.submit(captured("a", picture="p"))
    await until(lambda: v1.jobs == ["a"])
    h.scheduler.submit(captured("b", picture="p"))
    await asyncio.sleep(0)
    task = h.scheduler._runs["a"].task
    assert task is not None
    task.cancel()
    await h.settle(1)
    assert by_challenge(h)["b"]["job_id"] == 8 and v1.jobs == ["a", "b"]
    await h.scheduler.shutdown()
    assert by_challenge(h)["a"]["reason"] == "shutdown"


async def test_a_repeat_that_waits_past_its_own_deadline_fails_as_timeout_and_the_first_goes_on() -> None:
    gate = asyncio.Event()
    v1 = Solver(steps=[held(gate)])
    h = Harness(v1, timeout_s=5)
    h.scheduler.submit(captured("a", picture="p"))
    await until(lambda: v1.jobs == ["a"])
    h.scheduler.configure(SchedulerConfig(solvers=h.scheduler.config.solvers, poll_s=0.01, timeout_s=0.05))
    h.scheduler.submit(captured("b", picture="p"))
    await h.settle(1)
    b = by_challenge(h)["b"]
    assert (b["reason"], b["message"], b["tried"]) == (
        "timeout", "no final answer within captcha_timeout (0.05s)", [])
    gate.set()
    await h.settle(2)
    assert by_challenge(h)["a"]["event"] == "solved" and v1.jobs == ["a"]
    await h.scheduler.shutdown()


async def test_shutdown_fails_the_first_and_its_waiting_repeats_once_each() -> None:
    never = asyncio.Event()
    v1 = Solver(steps=[held(never)])
    h = Harness(v1)
    for cid in ("a", "b", "c"):
        h.scheduler.submit(captured(cid, picture="p"))
    await until(lambda: v1.jobs == ["a"])
    await h.scheduler.shutdown()
    await asyncio.sleep(0.01)
    assert {cid: f["reason"] for cid, f in by_challenge(h).items()} == {"a": "shutdown", "b": "shutdown",
                                                                         "c": "shutdown"}
    assert v1.jobs == ["a"] and h.scheduler._leads == {}


async def test_in_fleet_mode_a_repeat_on_the_same_proxy_waits_locally_without_a_claim_of_its_own() -> None:
    gate = asyncio.Event()
    v1 = Solver(steps=[held(gate, answer(12, job_id=None))])
    h, fleet = fleet_harness(v1)
    h.scheduler.submit(captured("a", picture="p"))
    await until(lambda: v1.jobs == ["a"])
    h.scheduler.submit(captured("b", picture="p"))
    await asyncio.sleep(0.01)
    gate.set()
    await h.settle(2)
    assert [c[:2] for c in fleet.calls] == [("claim", "r:a"), ("finish", "r:a")]
    assert by_challenge(h)["b"]["cached_from"] == "repeat" and v1.jobs == ["a"]
    # An answer from the fleet's cache (as another proxy's would be) says so.
    assert h.scheduler.verdicts.answered["a"].key in fleet.answers
    h.scheduler.cache._answers.clear()
    h.scheduler.submit(captured("c", picture="p"))
    await h.settle(3)
    c = by_challenge(h)["c"]
    assert (c["cached_from"], c.get("same_as"), c["tried"], c["result"]) == ("fleet", None, [], "12")
    await h.scheduler.shutdown()


# --------------------------------------------------------------------------------------------------- verdicts


async def test_with_one_solver_a_rejection_asks_it_again_and_its_accepted_answer_is_reused() -> None:
    v1 = Solver(steps=[answer(10), answer(20)])
    h = Harness(v1)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle(1)
    h.scheduler.verdict("a", accepted=False)
    assert h.scheduler.cache.wrong_services(h.scheduler.verdicts.answered["a"].key) == {"omocaptcha-v1"}
    h.scheduler.submit(captured("b", picture="p"))  # the only solver: asked again
    await h.settle(2)
    h.scheduler.verdict("b", accepted=True)
    assert h.scheduler.cache.wrong_services(h.scheduler.verdicts.answered["b"].key) == frozenset()
    for cid in ("c", "d"):
        h.scheduler.submit(captured(cid, picture="p"))
    await h.settle(4)
    finals = by_challenge(h)
    assert [(finals[c]["result"], finals[c].get("cached_from"), finals[c].get("same_as")) for c in "abcd"] == [
        ("10", None, None), ("20", None, None), ("20", "cache", "b"), ("20", "cache", "b")]
    assert v1.jobs == ["a", "b"]
    await h.scheduler.shutdown()


async def test_with_one_solver_its_new_answer_is_served_to_repeats_before_the_sites_verdict() -> None:
    v1 = Solver(steps=[answer(10), answer(20)])
    h = Harness(v1)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle(1)
    h.scheduler.verdict("a", accepted=False)
    h.scheduler.submit(captured("b", picture="p"))
    await h.settle(2)
    h.scheduler.submit(captured("c", picture="p"))  # b's answer was asked for after the rejection: a new one
    await h.settle(3)
    assert by_challenge(h)["c"]["cached_from"] == "cache" and v1.jobs == ["a", "b"]
    await h.scheduler.shutdown()


async def test_an_accepted_answer_clears_its_services_mark_and_is_what_the_cache_serves() -> None:
    v1, v2 = Solver(steps=[answer(10), answer(11)]), Solver("omocaptcha-v2", steps=[answer(20)])
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle(1)
    h.scheduler.submit(captured("b", picture="p"))  # from the cache: a's answer
    await h.settle(2)
    h.scheduler.verdict("a", accepted=False)  # v1 wrong here: the next goes to v2
    h.scheduler.submit(captured("c", picture="p"))
    await h.settle(3)
    assert by_challenge(h)["c"]["tried"] == ["omocaptcha-v2"]
    # The site still took b's answer (v1's, from the cache): v1 is right after all, its answer is served again.
    h.scheduler.verdict("b", accepted=True)
    key = h.scheduler.verdicts.answered["a"].key
    assert h.scheduler.cache.wrong_services(key) == frozenset()
    h.scheduler.submit(captured("d", picture="p"))
    await h.settle(4)
    d = by_challenge(h)["d"]
    assert (d["service"], d["result"], d["cached_from"], d["same_as"]) == ("omocaptcha-v1", "10", "cache", "a")
    assert (v1.jobs, v2.jobs) == (["a"], ["c"])
    await h.scheduler.shutdown()


async def test_a_late_answer_from_a_service_proved_wrong_meanwhile_is_not_served_until_accepted() -> None:
    gate = asyncio.Event()
    v1 = Solver(steps=[answer(10), held(gate, answer(10, job_id=None))])
    h = Harness(v1, Solver("omocaptcha-v2", steps=[answer(20), answer(21)]))
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle(1)
    h.scheduler.cache._answers.clear()
    h.scheduler.submit(captured("late", picture="p"))
    await until(lambda: v1.jobs == ["a", "late"])
    h.scheduler.verdict("a", accepted=False)
    gate.set()
    await h.settle(2)
    h.scheduler.submit(captured("c", picture="p"))
    await h.settle(3)
    assert by_challenge(h)["c"]["service"] == "omocaptcha-v2" and by_challenge(h)["c"].get("cached") is None
    h.scheduler.verdict("late", accepted=True)
    h.scheduler.submit(captured("d", picture="p"))
    await h.settle(4)
    d = by_challenge(h)["d"]
    assert (d["service"], d["cached_from"], d["same_as"]) == ("omocaptcha-v1", "cache", "late")
    await h.scheduler.shutdown()


def test_the_cache_marks_and_clears() -> None:
    from addon.solving.cache import AnswerCache

    cache = AnswerCache()
    ten, twenty = Solution("10", RotateAnswer.from_angle(10)), Solution("20", RotateAnswer.from_angle(20))
    cache.put("k", "v1", ten, "a")
    cache.rejected("k", "v2")  # another service's verdict leaves v1's answer alone
    assert cache.get("k") is not None and cache.wrong_services("k") == {"v2"}
    cache.rejected("k", "v1")
    assert cache.get("k") is None and cache.wrong_services("k") == {"v1", "v2"}
    cache.put("k", "v1", ten, "early", asked=0)  # asked for before the rejections: not served
    assert cache.get("k") is None
    cache.put("k", "v1", twenty, "new")  # asked for after them: a new answer, served
    entry = cache.get("k")
    assert entry is not None and (entry.solution, entry.challenge) == (twenty, "new")
    cache.put("k", "v2", twenty, "other")
    cache.accepted("k", "v1", ten, "a")
    entry = cache.get("k")
    assert entry is not None and (entry.service, entry.solution, entry.challenge) == ("v1", ten, "a")
    assert cache.wrong_services("k") == {"v2"}
    cache.accepted("k", "v2", twenty)
    assert cache.wrong_services("k") == frozenset() and cache._wrong == {}
