"""The scheduler's bookkeeping around the solvers: key checks and balance, probes of a down service, what each
event carries, settings taken at runtime, verdicts and reports, shutdown. Scripted solvers on real asyncio, with
the scheduler's clock in the test's hand where time matters."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from addon.capture.assemble import Captured, ImagePart
from addon.capture.images import BadImage, ImageInfo, Role
from addon.capture.recognise import Kind
from addon.fleet.shared import solve_shared
from addon.publish.bus import EventBus
from addon.solving import background as background_module
from addon.solving import failures, sharing
from addon.solving import monitor as monitor_module
from addon.solving import verdicts as verdicts_module
from addon.solving.base import Job, RotateAnswer, SlideAnswer, Solution
from addon.solving.scheduler import Scheduler, SchedulerConfig


def captured(cid: str, client: str = "c1", picture: str | None = None, kind: Kind = Kind.ROTATE) -> Captured:
    picture = picture or cid

    def part(role: Role) -> ImagePart:
        body = f"{picture}-{role}".encode()
        return ImagePart(role, f"https://cdn/{picture}/{role}", hashlib.sha256(body).hexdigest(),
                         ImageInfo("png", 10, 10, True), body)
    roles = (Role.OUTER, Role.INNER) if kind is Kind.ROTATE else (Role.BACKGROUND,)
    return Captured(cid, client, kind, "get", {r: part(r) for r in roles}, None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Solver:
    """A scripted solver: `steps` says what each solve does; `checks` what each key check answers."""

    def __init__(self, name: str = "omocaptcha-v1", *, paid: bool = True,
                 checks: list[str | BaseException | None] | None = None,
                 steps: list[Callable[[Captured, Job], Any]] | None = None):
        self.name, self.paid = name, paid
        self.kinds = frozenset(Kind)
        self.checks = list(checks or ["5.00"])
        self.steps = list(steps or [])
        self.check_calls = 0
        self.closed = 0
        self.jobs: list[str] = []
        self.checked = asyncio.Event()

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        self.jobs.append(challenge.challenge_id)
        step = self.steps.pop(0) if self.steps else answer(90)
        result = step(challenge, job)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, Solution)
        return result

    async def report(self, job_id: str, accepted: bool) -> bool:
        return False  # a paid service without a report call (PaidHttpSolver's default)

    async def check(self) -> str | None:
        self.check_calls += 1
        outcome = self.checks.pop(0) if len(self.checks) > 1 else self.checks[0]
        self.checked.set()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        self.closed += 1


def answer(angle: float, job_id: int | None = 7, confidence: float | None = None) -> Callable[[Captured, Job], Any]:
    def step(challenge: Captured, job: Job) -> Solution:
        job.job_sent()
        job.started(job_id)
        job.service_ok()
        return Solution(str(angle), RotateAnswer.from_angle(angle), confidence)
    return step


def fail(kind: type[failures.SolveFailure]) -> Callable[[Captured, Job], Any]:
    def step(challenge: Captured, job: Job) -> Solution:
        failure = kind(f"says {kind.reason}")
        if isinstance(failure, failures.Unavailable):
            job.service_fault(failure)
        raise failure
    return step


def raise_(error: BaseException) -> Callable[[Captured, Job], Any]:
    def step(challenge: Captured, job: Job) -> Solution:
        raise error
    return step


class Harness:
    def __init__(self, *solvers: Solver, clock: Clock | None = None, **config: Any):
        self.bus = EventBus(run="r")
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.bus.subscribe("test", self._keep)
        self.clock = clock or Clock()
        self.scheduler = Scheduler(self.bus, clock=self.clock)
        self.scheduler.configure(SchedulerConfig(solvers=solvers, **({"poll_s": 0.01, "timeout_s": 5} | config)))

    def _keep(self, event: Any) -> None:
        self.events.append(event.to_json())
        self.changed.set()

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in ("solved", "failed")]

    async def settle(self, n: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while len(self.finals()) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.finals()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.fixture
def fast_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor looks every millisecond; the scheduler's clock (the test's) says how much time passed."""
    monkeypatch.setattr(monitor_module, "MONITOR_TICK", 0.001)


# --------------------------------------------------------------------------------------------------- keys, balance


async def test_the_key_is_checked_at_start_and_the_balance_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    solver = Solver(checks=["12.50"])
    h = Harness(solver)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    assert (state.balance, state.checked_at, h.scheduler.key_state) == ("12.50", 100.0, "valid")
    assert h.scheduler.service_stats() == {"omocaptcha-v1": {"state": "valid", "balance": "12.50", "jobs_sent": 0,
                                                             "down": False}}
    assert "captcha: omocaptcha-v1 key accepted, balance 12.50 USD" in caplog.messages
    assert "captcha: solvers: omocaptcha-v1" in caplog.messages
    await h.scheduler.shutdown()
    assert solver.closed == 1 and state.monitor is not None and state.monitor.cancelled()


async def test_a_refused_key_fails_its_challenges_until_a_recheck_accepts_it(
        caplog: pytest.LogCaptureFixture, fast_monitor: None) -> None:
    caplog.set_level(logging.INFO)
    refused = failures.InvalidKey("getBalance: bad token")
    solver = Solver(checks=[refused, refused, "3.00"])
    h = Harness(solver)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "invalid")
    h.clock.now = 101.0
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["message"], final["tried"]) == ("invalid_key", "the omocaptcha-v1 key was refused",
                                                                   [])
    assert solver.jobs == [] and state.wanted_at == 101.0
    # Rechecked KEY_RECHECK seconds after the last check, and only because a challenge wanted the service since.
    h.clock.now = 100.0 + monitor_module.KEY_RECHECK - 0.5
    await asyncio.sleep(0.02)
    assert solver.check_calls == 1
    h.clock.now = 100.0 + monitor_module.KEY_RECHECK
    await until(lambda: solver.check_calls == 2)
    assert state.key_state == "invalid" and state.checked_at == 130.0
    h.clock.now = 165.0
    await asyncio.sleep(0.02)
    assert solver.check_calls == 2  # nobody asked for it since
    h.clock.now = 150.0
    h.scheduler.submit(captured("b"))
    assert (await h.settle(2))[1]["reason"] == "invalid_key"
    h.clock.now = 160.0
    await until(lambda: state.key_state == "valid")
    assert state.balance == "3.00"
    refusals = [m for m in caplog.messages if "key was refused" in m]
    assert refusals == ["captcha: the omocaptcha-v1 key was refused (getBalance: bad token); its challenges fail as "
                        "invalid_key (or go to the next solver)"]
    assert "captcha: the omocaptcha-v1 key is accepted again; solving resumes" in caplog.messages
    h.scheduler.submit(captured("c"))
    assert (await h.settle(3))[-1]["event"] == "solved"
    await h.scheduler.shutdown()


async def test_a_key_refused_while_solving_sends_the_next_challenges_elsewhere() -> None:
    v1 = Solver(steps=[fail(failures.InvalidKey)])
    v2 = Solver("omocaptcha-v2", checks=["1"])
    h = Harness(v1, v2)
    await until(lambda: h.scheduler.services["omocaptcha-v2"].key_state == "valid")
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["tried"]) == ("omocaptcha-v2", ["omocaptcha-v1", "omocaptcha-v2"])
    state = h.scheduler.services["omocaptcha-v1"]
    assert (state.key_state, state.checked_at) == ("invalid", 100.0)
    h.scheduler.submit(captured("b"))
    finals = await h.settle(2)
    assert finals[1]["tried"] == ["omocaptcha-v2"] and v1.jobs == ["a"]
    await h.scheduler.shutdown()


@pytest.mark.parametrize(("error", "line"), [
    (failures.Unavailable("getBalance: cannot connect"),
     "captcha: could not check the omocaptcha-v1 key (getBalance: cannot connect); solving anyway"),
    (RuntimeError("boom"), "captcha: checking omocaptcha-v1 failed: RuntimeError"),
])
async def test_a_check_that_fails_leaves_the_key_unchecked_and_solving_goes_on(
        caplog: pytest.LogCaptureFixture, error: BaseException, line: str) -> None:
    solver = Solver(checks=[error])
    h = Harness(solver)
    state = h.scheduler.services["omocaptcha-v1"]
    await solver.checked.wait()
    await asyncio.sleep(0)
    assert state.key_state == "unchecked" and state.balance is None and line in caplog.messages
    # The failed check was a probe that found the service down: it counts as no usable answer.
    assert state.health.last_ok is None
    h.scheduler.submit(captured("a"))
    assert (await h.settle())[0]["event"] == "solved"
    await h.scheduler.shutdown()


async def test_the_balance_is_read_again_every_few_minutes_and_a_low_one_warned_once(
        caplog: pytest.LogCaptureFixture, fast_monitor: None) -> None:
    solver = Solver(checks=["2.00", "1.50", "9.00", "0.10", "0.10", "unknown"])
    h = Harness(solver, low_balance=2.5)
    state = h.scheduler.services["omocaptcha-v1"]
    warnings = lambda: [m for m in caplog.messages if "balance is low" in m]  # noqa: E731
    await until(lambda: state.balance == "2.00")
    assert warnings() == ["captcha: omocaptcha-v1 balance is low: 2.00 USD (captcha_low_balance=2.5)"]
    for balance, count in (("1.50", 1), ("9.00", 1), ("0.10", 2), ("0.10", 2)):
        calls = solver.check_calls
        h.clock.now += monitor_module.BALANCE_EVERY - 1
        await asyncio.sleep(0.02)
        assert solver.check_calls == calls
        h.clock.now += 1
        await until(lambda b=balance: state.balance == b and state.checked_at == h.clock.now)  # type: ignore[misc]
        assert len(warnings()) == count, balance
    h.clock.now += monitor_module.BALANCE_EVERY
    await until(lambda: state.balance == "unknown")
    assert len(warnings()) == 2 and state.warned_low
    await h.scheduler.shutdown()


async def test_a_balance_exactly_at_the_limit_is_not_low(caplog: pytest.LogCaptureFixture) -> None:
    for balance, low in (("2.5", False), ("2.49", True), (None, False)):
        solver = Solver(checks=[balance])
        h = Harness(solver, low_balance=2.5)
        state = h.scheduler.services["omocaptcha-v1"]
        await until(lambda s=state: s.key_state == "valid")  # type: ignore[misc]
        assert state.warned_low is low, balance
        await h.scheduler.shutdown()


# --------------------------------------------------------------------------------------------------- a down service


def take_down(h: Harness, name: str = "omocaptcha-v1") -> None:
    health = h.scheduler.services[name].health
    for _ in range(health.threshold):
        health.fault()
    health.last_ok = None


async def test_a_down_service_alone_is_probed_every_probe_s_and_its_challenges_wait_for_the_verdict(
        fast_monitor: None) -> None:
    solver = Solver(checks=["1", failures.Unavailable("refused"), "2"])
    h = Harness(solver, timeout_s=60)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    take_down(h)
    h.scheduler.submit(captured("a"))
    await until(lambda: state.wanted_at == h.clock.now)
    # Not probed before probe_s has passed since the last check.
    h.clock.now += state.health.probe_s - 0.5
    await asyncio.sleep(0.02)
    assert solver.check_calls == 1 and h.finals() == []
    h.clock.now += 0.5
    [final] = await h.settle()
    assert (final["reason"], final["message"]) == (
        "api_error", "omocaptcha-v1 is unreachable; failing fast until it answers again")
    assert solver.check_calls == 2 and solver.jobs == []
    # The next probe finds it up: a waiting challenge goes ahead.
    h.scheduler.submit(captured("b"))
    await until(lambda: state.wanted_at == h.clock.now)
    h.clock.now += state.health.probe_s
    finals = await h.settle(2)
    assert finals[1]["event"] == "solved" and solver.jobs == ["b"]
    await h.scheduler.shutdown()


async def test_a_down_service_with_another_behind_it_is_skipped(fast_monitor: None) -> None:
    v1, v2 = Solver(), Solver("omocaptcha-v2", checks=["1", failures.Unavailable("refused")])
    h = Harness(v1, v2, timeout_s=60)
    await until(lambda: v1.check_calls == v2.check_calls == 1)
    take_down(h)
    take_down(h, "omocaptcha-v2")
    h.scheduler.submit(captured("a"))
    await until(lambda: h.scheduler.services["omocaptcha-v2"].wanted_at == 100.0)
    assert h.scheduler.services["omocaptcha-v1"].wanted_at == 100.0
    h.clock.now += 5.0
    [final] = await h.settle()
    # v1 skipped at once (another follows); v2, the last, waited for its probe's verdict.
    assert (final["reason"], final["message"], final["tried"]) == (
        "api_error", "omocaptcha-v2 is unreachable; failing fast until it answers again", [])
    await h.scheduler.shutdown()


async def test_service_health_follows_the_solvers_reports() -> None:
    solver = Solver(steps=[fail(failures.Unavailable), answer(10)])
    h = Harness(solver)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    state.health.last_ok = None
    h.scheduler.submit(captured("a"))
    await h.settle()
    assert state.health.faults == 1
    h.clock.now = 150.0
    h.scheduler.submit(captured("b"))
    await h.settle(2)
    assert (state.health.faults, state.health.last_ok) == (0, 150.0)
    await h.scheduler.shutdown()


# --------------------------------------------------------------------------------------------------- what events carry


async def test_solving_and_solved_carry_the_job_and_the_time_from_capture() -> None:
    async def slow(challenge: Captured, job: Job) -> Solution:
        job.job_sent()
        job.started(4321)
        h.clock.now += 1.234
        return Solution("93", RotateAnswer.from_value(93.0))

    solver = Solver(steps=[slow])
    h = Harness(solver, width_view=276, poll_s=0.25)
    h.scheduler.submit(captured("a", client="phone"))
    [final] = await h.settle()
    solving = h.events[0]
    assert {k: solving[k] for k in ("event", "client", "challenge", "kind", "service", "job_id")} == {
        "event": "solving", "client": "phone", "challenge": "a", "kind": "rotate", "service": "omocaptcha-v1",
        "job_id": 4321}
    assert {k: final[k] for k in ("client", "challenge", "kind", "service", "job_id", "result", "elapsed_ms",
                                  "tried")} == {
        "client": "phone", "challenge": "a", "kind": "rotate", "service": "omocaptcha-v1", "job_id": 4321,
        "result": "93", "elapsed_ms": 1234, "tried": ["omocaptcha-v1"]}
    assert final["answer"] == RotateAnswer.from_value(93.0).to_json() and "confidence" not in final
    assert h.scheduler.jobs_sent == 1 and h.scheduler.jobs_sent_by_kind() == {"omocaptcha-v1": {"rotate": 1}}
    await h.scheduler.shutdown()


async def test_the_job_a_solver_gets() -> None:
    seen: dict[str, Any] = {}

    def look(challenge: Captured, job: Job) -> Solution:
        seen.update(width_view=job.width_view, poll_s=job.poll_s)
        for _ in range(3):
            job.job_sent()
        job.job_not_sent()
        return Solution("1", SlideAnswer.from_view(1.0, 10, 276))

    h = Harness(Solver(steps=[look]), width_view=276, poll_s=0.25)
    h.scheduler.submit(captured("s", kind=Kind.SLIDE))
    await h.settle()
    assert seen == {"width_view": 276, "poll_s": 0.25}
    assert h.scheduler.jobs_sent_by_kind() == {"omocaptcha-v1": {"slide": 2}}
    await h.scheduler.shutdown()


async def test_a_failure_names_the_service_and_job_it_came_from() -> None:
    def started_then_unsolvable(challenge: Captured, job: Job) -> Solution:
        job.started(55)
        raise failures.Unsolvable("no answer")

    h = Harness(Solver(steps=[started_then_unsolvable]))
    h.scheduler.submit(captured("a", client="phone"))
    [final] = await h.settle()
    assert {k: final[k] for k in ("client", "challenge", "kind", "service", "job_id", "reason", "message",
                                  "tried")} == {
        "client": "phone", "challenge": "a", "kind": "rotate", "service": "omocaptcha-v1", "job_id": 55,
        "reason": "unsolvable", "message": "no answer", "tried": ["omocaptcha-v1"]}
    await h.scheduler.shutdown()


async def test_a_solver_that_breaks_ends_its_challenge_as_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(Solver(steps=[raise_(ZeroDivisionError("x"))]))
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["message"]) == ("internal_error", "internal error: ZeroDivisionError")
    assert "captcha: internal error while solving a (a bug of the addon, not of a service)" in caplog.messages
    await h.scheduler.shutdown()


async def test_an_image_no_solver_can_use_ends_the_chain_with_its_reason() -> None:
    v1, v2 = Solver(steps=[raise_(BadImage("png ends before its end marker" + "!" * 400))]), Solver("omocaptcha-v2")
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["message"]) == ("bad_image", ("png ends before its end marker" + "!" * 400)[:300])
    assert v2.jobs == [] and final["tried"] == ["omocaptcha-v1"]
    await h.scheduler.shutdown()


async def test_the_most_confident_unsure_answer_is_the_one_published() -> None:
    local = Solver("local", paid=False, steps=[answer(10, None, 0.2)])
    other = Solver("local-2", paid=False, steps=[answer(20, None, 0.3)])
    third = Solver("local-3", paid=False, steps=[answer(30, None, 0.3)])
    last = Solver("omocaptcha-v1", steps=[fail(failures.Unsolvable)])
    h = Harness(local, other, third, last, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["confidence"], final["job_id"]) == ("local-2", 0.3, None)
    assert final["tried"] == ["local", "local-2", "local-3", "omocaptcha-v1"]
    await h.scheduler.shutdown()


async def test_an_answer_exactly_at_the_confidence_bar_is_taken() -> None:
    local, paid = Solver("local", paid=False, steps=[answer(10, None, 0.5)]), Solver()
    h = Harness(local, paid, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert final["service"] == "local" and paid.jobs == []
    await h.scheduler.shutdown()


async def test_with_every_solver_refusing_the_last_refusal_is_the_reason() -> None:
    h = Harness(Solver(checks=[failures.InvalidKey("bad")]))
    await until(lambda: h.scheduler.key_state == "invalid")
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["message"], final["tried"]) == ("invalid_key", "the omocaptcha-v1 key was refused",
                                                                   [])
    assert "service" not in final
    await h.scheduler.shutdown()


# --------------------------------------------------------------------------------------------------- submit, settings


async def test_submit_ignores_repeats_and_capture_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    gate = asyncio.Event()

    async def held(challenge: Captured, job: Job) -> Solution:
        await gate.wait()
        return Solution("1", RotateAnswer.from_angle(1))

    h = Harness(Solver(steps=[held]))
    h.scheduler.submit(captured("a", client="phone"))
    h.scheduler.submit(captured("a", client="phone"))
    assert (h.scheduler.in_flight, h.scheduler.in_flight_of("phone"), h.scheduler.in_flight_of("other")) == (1, 1, 0)
    gate.set()
    await h.settle()
    await asyncio.sleep(0)
    assert len(h.finals()) == 1
    h.scheduler.configure(SchedulerConfig())
    assert not h.scheduler.enabled and h.scheduler.key_state == "none"
    h.scheduler.submit(captured("b"))
    assert h.scheduler.in_flight == 0
    assert caplog.messages[-1] == "captcha: solvers: none (capture only)"
    await h.scheduler.shutdown()


async def test_overload_says_how_many_wait() -> None:
    gate = asyncio.Event()

    async def held(challenge: Captured, job: Job) -> Solution:
        await gate.wait()
        return Solution("1", RotateAnswer.from_angle(1))

    h = Harness(Solver(steps=[held] * 3), max_jobs=1, max_waiting=1)
    for n in range(3):
        h.scheduler.submit(captured(f"c{n}"))
    [final] = h.finals()
    assert (final["challenge"], final["reason"], final["message"]) == (
        "c2", "overloaded", "more than 1 challenges already wait for a job slot")
    assert h.scheduler.waiting == 1
    gate.set()
    await h.settle(3)
    await h.scheduler.shutdown()


async def test_settings_taken_at_runtime(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    v1, v2 = Solver(), Solver("omocaptcha-v2")
    h = Harness(v1, cache_size=5, cache_ttl=60.0)
    assert (h.scheduler.cache.max_entries, h.scheduler.cache.ttl) == (5, 60.0)
    first = h.scheduler.services["omocaptcha-v1"]
    # The same solver object keeps its state; a new chain adds v2 and logs it.
    h.scheduler.configure(SchedulerConfig(solvers=(v1, v2), cache_size=5, cache_ttl=60.0, max_jobs=2))
    assert h.scheduler.services["omocaptcha-v1"] is first and set(h.scheduler.services) == {"omocaptcha-v1",
                                                                                           "omocaptcha-v2"}
    assert "captcha: solvers: omocaptcha-v1, omocaptcha-v2" in caplog.messages
    assert h.scheduler.waiting == 0
    # A new object under the same name replaces the old one: its monitor stops and it is closed.
    v1_again = Solver()
    h.scheduler.configure(SchedulerConfig(solvers=(v1_again, v2), max_jobs=2))
    await until(lambda: v1.closed == 1)
    assert h.scheduler.services["omocaptcha-v1"] is not first and first.monitor is not None
    assert first.monitor.cancelled() or first.monitor.done()
    assert (h.scheduler.cache.max_entries, h.scheduler.cache.ttl) == (10_000, 6 * 3600.0)
    # A local solver has no service state.
    h.scheduler.configure(SchedulerConfig(solvers=(Solver("local", paid=False),)))
    assert h.scheduler.services == {} and h.scheduler.key_state == "none"
    await until(lambda: v2.closed == 1 and v1_again.closed == 1)
    await h.scheduler.shutdown()


async def test_the_slots_follow_max_jobs() -> None:
    gate = asyncio.Event()
    started: list[str] = []

    async def held(challenge: Captured, job: Job) -> Solution:
        started.append(challenge.challenge_id)
        await gate.wait()
        return Solution("1", RotateAnswer.from_angle(1))

    h = Harness(Solver(steps=[held] * 4), max_jobs=1)
    h.scheduler.configure(SchedulerConfig(solvers=h.scheduler.config.solvers, max_jobs=3, poll_s=0.01, timeout_s=5))
    for n in range(4):
        h.scheduler.submit(captured(f"c{n}"))
    await until(lambda: len(started) == 3)
    await asyncio.sleep(0.01)
    assert len(started) == 3 and h.scheduler.waiting == 1
    gate.set()
    await h.settle(4)
    await h.scheduler.shutdown()


def test_services_configured_before_the_loop_runs_are_monitored_once_it_does() -> None:
    async def main() -> None:
        await until(lambda: solver.check_calls == 1)
        state = scheduler.services["omocaptcha-v1"]
        assert state.monitor is not None and state.key_state == "valid"
        scheduler.start()
        assert scheduler.services["omocaptcha-v1"].monitor is state.monitor
        await scheduler.shutdown()

    solver = Solver()
    scheduler = Scheduler(EventBus())
    scheduler.configure(SchedulerConfig(solvers=(solver,)))  # type: ignore[arg-type]
    assert scheduler.services["omocaptcha-v1"].monitor is None

    async def run() -> None:
        scheduler.start()
        await main()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------------- verdicts, reports


class Reporting(Solver):
    def __init__(self, name: str = "omocaptcha-v2", **kw: Any):
        super().__init__(name, **kw)
        self.reports: list[tuple[str, bool]] = []

    async def report(self, task_id: str, accepted: bool) -> bool:
        self.reports.append((task_id, accepted))
        return True


async def test_verdicts_are_reported_to_a_service_that_takes_them() -> None:
    v2 = Reporting(steps=[answer(10, job_id=11), answer(20, job_id=None), answer(30, job_id=13)])
    h = Harness(v2)
    for cid in ("a", "b"):
        h.scheduler.submit(captured(cid))
    await h.settle(2)
    answered = h.scheduler.verdict("a", accepted=False)
    assert answered is not None and (answered.client, answered.kind, answered.service, answered.cached,
                                     answered.job_id) == ("c1", "rotate", "omocaptcha-v2", False, 11)
    h.scheduler.verdict("b", accepted=True)  # no job id: nothing to report
    h.scheduler.submit(captured("b-again", picture="b"))  # cached: its verdict is not the service's
    await h.settle(3)
    h.scheduler.verdict("b-again", accepted=True)
    await until(lambda: len(v2.reports) >= 1)
    await asyncio.sleep(0.01)
    assert v2.reports == [("11", False)]
    assert h.scheduler.verdict("never-answered", accepted=True) is None
    await h.scheduler.shutdown()


async def test_a_verdict_on_a_cached_answer_does_not_count_for_adaptive() -> None:
    v1 = Solver(steps=[answer(10)])
    h = Harness(v1, adaptive=True)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle()
    h.scheduler.submit(captured("b", picture="p"))
    await h.settle(2)
    h.scheduler.verdict("a", accepted=True)
    h.scheduler.verdict("b", accepted=True)
    assert list(h.scheduler.verdicts.windows[("omocaptcha-v1", "rotate")]) == [True]
    await h.scheduler.shutdown()


async def test_adaptive_needs_ten_verdicts_and_brings_a_service_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = Harness(Solver(steps=[answer(n) for n in range(40)]), Solver("omocaptcha-v2"), adaptive=True,
                adaptive_share=0.5, cache_size=0)
    demoted = h.scheduler.verdicts.demoted
    for n in range(9):
        h.scheduler.submit(captured(f"c{n}"))
        await h.settle(n + 1)
        h.scheduler.verdict(f"c{n}", accepted=False)
    assert demoted == set()
    h.scheduler.submit(captured("c9"))
    await h.settle(10)
    h.scheduler.verdict("c9", accepted=False)
    assert demoted == {("omocaptcha-v1", "rotate")}
    assert caplog.messages[-1] == ("captcha: omocaptcha-v1 was accepted for 0% of its last 10 rotate answers; moving "
                                   "it behind the next solver for rotate")
    # Accepted answers (from wherever they came: here the verdicts of v1's older answers) bring it back at 50 %.
    for n in range(10, 20):
        h.scheduler.verdicts.answered[f"c{n}"] = h.scheduler.verdicts.answered["c0"]
        h.scheduler.verdict(f"c{n}", accepted=True)
        if n < 19:
            assert demoted == {("omocaptcha-v1", "rotate")}, n
    assert demoted == set()
    assert caplog.messages[-1] == "captcha: omocaptcha-v1 is accepted for 50% of rotate answers again; back in its place"
    await h.scheduler.shutdown()


async def test_answers_remembered_for_verdicts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdicts_module, "MAX_ANSWERED", 2)
    h = Harness(Solver(steps=[answer(n) for n in range(3)]), cache_size=0)
    for n in range(3):
        h.scheduler.submit(captured(f"c{n}"))
        await h.settle(n + 1)
    assert list(h.scheduler.verdicts.answered) == ["c1", "c2"]
    await h.scheduler.shutdown()


async def test_shutdown_closes_every_solver_even_when_one_fails_to() -> None:
    class Stubborn(Solver):
        async def close(self) -> None:
            self.closed += 1
            raise OSError("cannot close")

    gate = asyncio.Event()

    async def held(challenge: Captured, job: Job) -> Solution:
        job.started("j-1")
        await gate.wait()
        return Solution("1", RotateAnswer.from_angle(1))

    first, second = Stubborn("local", paid=False, steps=[held]), Solver()
    h = Harness(first, second)
    h.scheduler.submit(captured("a"))
    await until(lambda: len(h.events) == 1)
    await h.scheduler.shutdown()
    [final] = h.finals()
    assert (final["reason"], final["message"], final["service"], final["job_id"]) == (
        "shutdown", "the proxy stopped before an answer came", "local", "j-1")
    assert (first.closed, second.closed) == (1, 1) and h.scheduler.in_flight == 0


# --------------------------------------------------------------------------------------------------- more edges


async def test_a_refused_key_found_by_a_later_check_is_logged_and_the_probe_counts_as_an_answer(
        caplog: pytest.LogCaptureFixture, fast_monitor: None) -> None:
    solver = Solver(checks=["1", failures.InvalidKey("token revoked")])
    h = Harness(solver)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    assert state.health.last_ok == 100.0
    h.clock.now = 100.0 + monitor_module.BALANCE_EVERY
    await until(lambda: state.key_state == "invalid")
    # The service answered (it refused the key): it is up, whatever its key.
    assert state.health.last_ok == h.clock.now
    assert [m for m in caplog.messages if "key was refused" in m] == [
        "captcha: the omocaptcha-v1 key was refused (token revoked); its challenges fail as invalid_key (or go to the "
        "next solver)"]
    await h.scheduler.shutdown()


async def test_a_refused_key_wanted_at_the_very_moment_of_its_check_is_not_rechecked(fast_monitor: None) -> None:
    solver = Solver(checks=[failures.InvalidKey("bad")])
    h = Harness(solver)
    await until(lambda: h.scheduler.key_state == "invalid")
    h.scheduler.submit(captured("a"))  # at 100.0, the time of the check
    await h.settle()
    h.clock.now += monitor_module.KEY_RECHECK
    await asyncio.sleep(0.02)
    assert solver.check_calls == 1
    await h.scheduler.shutdown()


async def test_a_balance_that_cannot_be_read_ends_a_low_balance_warning() -> None:
    solver = Solver(checks=["0.1"])
    h = Harness(solver, low_balance=1.0)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.warned_low)
    state.balance = None
    h.scheduler.monitor.watch_balance(state)
    assert not state.warned_low
    await h.scheduler.shutdown()


async def test_a_service_down_for_a_while_is_down_in_the_stats_and_probed(fast_monitor: None) -> None:
    solver = Solver(checks=["1", failures.Unavailable("refused"), "2"])
    h = Harness(solver, timeout_s=60)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    take_down(h)
    state.health.last_ok = 100.0 - state.health.window  # its last usable answer is a window old
    assert h.scheduler.service_stats()["omocaptcha-v1"]["down"] is True
    h.scheduler.submit(captured("a"))
    await until(lambda: state.wanted_at == 100.0)
    h.clock.now += state.health.probe_s
    [final] = await h.settle()
    assert (final["reason"], final["message"]) == (
        "api_error", "omocaptcha-v1 is unreachable; failing fast until it answers again")
    assert solver.check_calls == 2
    await h.scheduler.shutdown()


async def test_a_timeout_says_so() -> None:
    async def never(challenge: Captured, job: Job) -> Solution:
        await asyncio.Event().wait()
        raise AssertionError

    h = Harness(Solver(steps=[never]), timeout_s=0.05)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["reason"], final["message"]) == ("timeout", "no final answer within captcha_timeout (0.05s)")
    await h.scheduler.shutdown()


async def test_when_the_site_refused_every_service_on_these_images_the_whole_chain_is_tried_again() -> None:
    v1, v2 = Solver(steps=[answer(10), answer(11)]), Solver("omocaptcha-v2", steps=[answer(20), answer(21)])
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle()
    h.scheduler.verdict("a", accepted=False)
    h.scheduler.submit(captured("b", picture="p"))
    await h.settle(2)
    h.scheduler.verdict("b", accepted=False)
    h.scheduler.submit(captured("c", picture="p"))
    finals = await h.settle(3)
    assert [f["tried"] for f in finals] == [["omocaptcha-v1"], ["omocaptcha-v2"], ["omocaptcha-v1"]]
    await h.scheduler.shutdown()


async def test_demoted_services_each_move_back_one_place() -> None:
    solvers = [Solver(n, paid=False, steps=[fail(failures.Unsolvable)] * 3) for n in ("s1", "s2", "s3", "s4")]
    h = Harness(*solvers)
    h.scheduler.verdicts.demoted.update({("s1", "rotate"), ("s3", "rotate")})
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert final["tried"] == ["s2", "s1", "s4", "s3"]
    h.scheduler.verdicts.demoted = {("s1", "rotate"), ("s2", "rotate")}
    h.scheduler.submit(captured("b"))
    finals = await h.settle(2)
    assert finals[1]["tried"] == ["s3", "s1", "s2", "s4"]
    h.scheduler.verdicts.demoted = {("s1", "slide")}
    h.scheduler.submit(captured("c"))
    assert (await h.settle(3))[2]["tried"] == ["s1", "s2", "s3", "s4"]
    await h.scheduler.shutdown()


async def test_an_answer_arriving_after_its_service_was_proved_wrong_is_not_served_from_the_cache() -> None:
    gate = asyncio.Event()

    async def late(challenge: Captured, job: Job) -> Solution:
        await gate.wait()
        return Solution("10", RotateAnswer.from_angle(10))

    v1 = Solver(steps=[answer(10), late])
    v2 = Solver("omocaptcha-v2", steps=[answer(20)])
    h = Harness(v1, v2)
    h.scheduler.submit(captured("a", picture="p"))
    await h.settle()
    h.scheduler.submit(captured("b", picture="p", client="c2"))  # not cached yet? it is: a's answer
    await h.settle(2)
    assert h.finals()[1]["cached"] is True
    h.scheduler.cache._answers.clear()
    h.scheduler.submit(captured("late", picture="p"))
    await until(lambda: v1.jobs == ["a", "late"])
    h.scheduler.verdict("a", accepted=False)  # v1 is wrong on these images
    gate.set()
    await h.settle(3)  # its late answer is published, and cached
    h.scheduler.submit(captured("d", picture="p"))
    finals = await h.settle(4)
    assert (finals[3]["service"], finals[3].get("cached")) == ("omocaptcha-v2", None)
    await h.scheduler.shutdown()


async def test_an_unsure_answer_of_zero_confidence_gives_way_to_a_surer_one() -> None:
    zero = Solver("local", paid=False, steps=[answer(10, None, 0.0)])
    some = Solver("local-2", paid=False, steps=[answer(20, None, 0.3)])
    last = Solver("omocaptcha-v1", steps=[fail(failures.Unsolvable)])
    h = Harness(zero, some, last, local_confidence=0.5)
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["confidence"]) == ("local-2", 0.3) and "cached" not in final
    await h.scheduler.shutdown()


async def test_a_verdict_on_a_local_answer() -> None:
    local = Solver("local", paid=False)
    h = Harness(local, adaptive=True)
    h.scheduler.submit(captured("a"))
    await h.settle()
    answered = h.scheduler.verdict("a", accepted=True)
    assert answered is not None and answered.service == "local"
    assert list(h.scheduler.verdicts.windows[("local", "rotate")]) == [True]
    await h.scheduler.shutdown()


async def test_reports_run_in_the_background_and_are_let_go_when_done() -> None:
    v2 = Reporting(steps=[answer(10, job_id=11)])
    h = Harness(v2)
    h.scheduler.submit(captured("a"))
    await h.settle()
    h.scheduler.verdict("a", accepted=True)
    assert len(h.scheduler.background) == 1
    await until(lambda: v2.reports == [("11", True)])
    await until(lambda: not h.scheduler.background)
    await h.scheduler.shutdown()


def test_a_report_outside_a_running_loop_is_dropped() -> None:
    scheduler = Scheduler(EventBus())
    closed: list[bool] = []

    async def work() -> None:
        closed.append(False)

    coroutine = work()
    scheduler.background.spawn(coroutine, "x")
    assert coroutine.cr_frame is None and closed == []  # closed, never run


async def test_shutdown_waits_for_the_reports_still_running_and_cancels_one_that_hangs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background_module, "DRAIN_SECONDS", 0.2)
    sent: list[str] = []
    ended: list[str] = []

    class Slow(Reporting):
        async def report(self, task_id: str, accepted: bool) -> bool:
            sent.append(task_id)
            try:
                await asyncio.sleep(0.05 if task_id == "11" else 3600)
            finally:
                ended.append(task_id)
            return True

    h = Harness(Slow(steps=[answer(10, job_id=11), answer(20, job_id=12)]), cache_size=0)
    for cid in ("a", "b"):
        h.scheduler.submit(captured(cid))
    await h.settle(2)
    h.scheduler.verdict("a", accepted=True)
    h.scheduler.verdict("b", accepted=False)
    await until(lambda: sent == ["11", "12"])
    await h.scheduler.shutdown()
    # The quick one ran to its end, the hanging one was cancelled, and both were awaited: nothing is left pending.
    assert ended == ["11", "12"] and not h.scheduler.background


async def test_a_replaced_service_is_closed_after_its_monitor_ended_and_shutdown_waits_for_the_close() -> None:
    gate = asyncio.Event()

    class SlowToClose(Solver):
        async def close(self) -> None:
            await gate.wait()
            self.closed += 1

    old = SlowToClose()
    h = Harness(old)
    state = h.scheduler.services["omocaptcha-v1"]
    await until(lambda: state.key_state == "valid")
    h.scheduler.configure(SchedulerConfig(solvers=(Solver(),)))
    assert len(h.scheduler.background) == 1  # the close, kept until it ends
    await until(lambda: state.monitor is not None and state.monitor.done())
    stopping = asyncio.create_task(h.scheduler.shutdown())
    await asyncio.sleep(0.05)
    assert not stopping.done() and old.closed == 0
    gate.set()
    await stopping
    assert old.closed == 1 and not h.scheduler.background


async def test_background_work_that_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise OSError("no route")

    tasks = background_module.Background()
    tasks.spawn(broken(), "captcha-report-x")
    await until(lambda: not tasks)
    assert "captcha: captcha-report-x failed: OSError('no route')" in caplog.messages


async def test_adaptive_keeps_a_window_of_fifty_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(Solver(), adaptive=True, adaptive_share=0.5)
    for n in range(60):
        h.scheduler.verdicts.track("omocaptcha-v1", "rotate", accepted=n < 5)
    assert len(h.scheduler.verdicts.windows[("omocaptcha-v1", "rotate")]) == 50
    assert len([m for m in caplog.messages if "moving it behind" in m]) == 1
    await h.scheduler.shutdown()


async def test_a_share_exactly_at_the_bar_is_not_demoted() -> None:
    h = Harness(Solver(), adaptive=True, adaptive_share=0.5)
    for n in range(10):
        h.scheduler.verdicts.track("omocaptcha-v1", "rotate", accepted=n % 2 == 0)
    assert h.scheduler.verdicts.demoted == set()
    await h.scheduler.shutdown()


async def test_shutdown_cancels_the_work_in_flight() -> None:
    cancelled = asyncio.Event()

    async def held(challenge: Captured, job: Job) -> Solution:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError

    h = Harness(Solver(steps=[held]))
    h.scheduler.submit(captured("a"))
    await until(lambda: h.scheduler.services["omocaptcha-v1"].key_state == "valid")
    await asyncio.sleep(0)
    await h.scheduler.shutdown()
    assert cancelled.is_set()


def test_changing_solvers_before_the_loop_runs() -> None:
    scheduler = Scheduler(EventBus())
    first, second = Solver(), Solver()
    scheduler.configure(SchedulerConfig(solvers=(first,)))  # type: ignore[arg-type]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the old solver's close() is never awaited: no loop
        scheduler.configure(SchedulerConfig(solvers=(second,)))  # type: ignore[arg-type]
    assert scheduler.services["omocaptcha-v1"].solver is second


# --------------------------------------------------------------------------------------------------- fleet mode


class FakeFleet:
    """The fleet coordinator's calls the scheduler makes (addon/fleet/shared.py), kept in memory."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.claims: dict[str, str] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.elsewhere: asyncio.Future[str | None] | None = None

    async def claim_or_answer(self, key: str, owner: str, ttl: float) -> tuple[bool, str | None]:
        self.calls.append(("claim", owner))
        if key in self.answers:
            return False, self.answers[key]
        if key in self.claims:
            return False, None
        self.claims[key] = owner
        return True, None

    async def wait_answer(self, key: str, timeout: float) -> str | None:
        self.calls.append(("wait", round(timeout, 1)))
        assert self.elsewhere is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self.elsewhere), timeout)
        except TimeoutError:
            return None

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        return True

    async def finish(self, key: str, owner: str, answer: str | None, ttl: float) -> None:
        self.calls.append(("finish", owner, answer))
        self.claims.pop(key, None)
        if answer is not None:
            self.answers[key] = answer

    async def solve_once(self, key: str, owner: str, timeout: float,
                         solve: Callable[[], Awaitable[str | None]]) -> tuple[str | None, bool]:
        return await solve_shared(self, key, owner, timeout, solve)  # type: ignore[arg-type]

    async def drop_answer(self, key: str) -> None:
        self.calls.append(("drop", key))
        self.answers.pop(key, None)

    async def wait_paid_slot(self, limit: int, owner: str, ttl: float, timeout: float) -> None:
        self.calls.append(("slot", limit, owner, ttl, round(timeout)))

    async def release_paid_slot(self, owner: str) -> None:
        self.calls.append(("release", owner))


def fleet_harness(*solvers: Solver, **config: Any) -> tuple[Harness, FakeFleet]:
    h = Harness(*solvers, **config)
    fleet = FakeFleet()
    h.scheduler.fleet = fleet  # type: ignore[assignment]
    return h, fleet


async def test_fleet_mode_solves_an_image_set_once_and_shares_the_answer() -> None:
    h, fleet = fleet_harness(Solver(steps=[answer(33, job_id=5)]))
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["job_id"], final.get("cached")) == ("omocaptcha-v1", 5, None)
    shared = fleet.answers[image_key_of("a")]
    assert sharing.from_shared_json(shared) == ("omocaptcha-v1", Solution("33", RotateAnswer.from_angle(33)))
    assert fleet.calls == [("claim", "r:a"), ("finish", "r:a", shared)]
    await h.scheduler.shutdown()


def image_key_of(cid: str) -> str:
    from addon.solving.cache import image_key

    return image_key(captured(cid))


async def test_fleet_mode_takes_another_proxys_answer() -> None:
    solver = Solver()
    h, fleet = fleet_harness(solver)
    slide = SlideAnswer.from_view(100.0, 552, 340)
    fleet.answers[image_key_of("a")] = sharing.shared_json("omocaptcha-v2", Solution("100", slide, 0.75))
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert (final["service"], final["job_id"], final["cached"], final["tried"], final["result"], final["answer"],
            final["confidence"]) == ("omocaptcha-v2", None, True, [], "100", slide.to_json(), 0.75)
    assert solver.jobs == []
    await h.scheduler.shutdown()


async def test_fleet_mode_waits_for_the_proxy_holding_the_claim() -> None:
    solver = Solver()
    h, fleet = fleet_harness(solver, timeout_s=30)
    fleet.claims[image_key_of("a")] = "other:x"
    fleet.elsewhere = asyncio.get_running_loop().create_future()
    h.scheduler.submit(captured("a"))
    await until(lambda: ("wait", 30.0) in fleet.calls)
    fleet.elsewhere.set_result(sharing.shared_json("omocaptcha-v1",
                                                            Solution("7", RotateAnswer.from_angle(7))))
    [final] = await h.settle()
    assert (final["service"], final["cached"], final["result"]) == ("omocaptcha-v1", True, "7") and solver.jobs == []
    await h.scheduler.shutdown()


async def test_fleet_mode_times_out_when_the_claim_holder_never_answers() -> None:
    h, fleet = fleet_harness(Solver(), timeout_s=0.1)
    fleet.claims[image_key_of("a")] = "other:x"
    fleet.elsewhere = asyncio.get_running_loop().create_future()
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert final["reason"] == "timeout"
    await h.scheduler.shutdown()


async def test_fleet_mode_shares_nothing_a_chain_without_a_paid_solver_finds() -> None:
    h, fleet = fleet_harness(Solver("local", paid=False))
    h.scheduler.submit(captured("a"))
    await h.settle()
    assert fleet.calls == []
    await h.scheduler.shutdown()


async def test_fleet_mode_shares_no_failure() -> None:
    h, fleet = fleet_harness(Solver(steps=[fail(failures.Unsolvable)]))
    h.scheduler.submit(captured("a"))
    [final] = await h.settle()
    assert final["reason"] == "unsolvable" and fleet.calls == [("claim", "r:a"), ("finish", "r:a", None)]
    await h.scheduler.shutdown()


async def test_fleet_mode_caps_paid_jobs_fleet_wide_when_told_to() -> None:
    h, fleet = fleet_harness(Solver("local", paid=False, steps=[answer(1, None, 0.1)]), Solver(), timeout_s=20,
                             local_confidence=0.5)
    h.scheduler.fleet_max_jobs = 4
    h.scheduler.submit(captured("a"))
    await h.settle()
    assert [c for c in fleet.calls if c[0] in ("slot", "release")] == [("slot", 4, "r:a", 20, 20), ("release", "r:a")]
    fleet.calls.clear()
    h.scheduler.fleet_max_jobs = 0
    h.scheduler.submit(captured("b"))
    await h.settle(2)
    assert [c for c in fleet.calls if c[0] in ("slot", "release")] == []
    await h.scheduler.shutdown()


async def test_fleet_mode_drops_an_answer_the_site_refused() -> None:
    h, fleet = fleet_harness(Solver(steps=[answer(1)]))
    h.scheduler.submit(captured("a"))
    await h.settle()
    h.scheduler.verdict("a", accepted=False)
    await until(lambda: ("drop", image_key_of("a")) in fleet.calls)
    assert image_key_of("a") not in fleet.answers
    await h.scheduler.shutdown()


def test_shared_answers_round_trip() -> None:
    for service, solution in (("local", Solution("1", RotateAnswer.from_angle(45), 0.9)),
                              ("omocaptcha-v1", Solution("170", SlideAnswer.from_view(170, 552, 340)))):
        text = sharing.shared_json(service, solution)
        assert sharing.from_shared_json(text) == (service, solution)
    import json

    assert json.loads(sharing.shared_json("s", Solution("5", RotateAnswer.from_angle(90)))) == {
        "service": "s", "result": "5", "confidence": None, "kind": "rotate",
        "answer": {"value": 67.75, "fraction": 0.25, "angle": 90.0}}
    slide = SlideAnswer.from_view(170, 552, 340)
    assert json.loads(sharing.shared_json("s", Solution("170", slide, 0.5))) == {
        "service": "s", "result": "170", "confidence": 0.5, "kind": "slide", "answer": slide.to_json()}
