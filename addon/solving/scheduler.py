"""Runs every captured challenge through the chain of solvers: slots, one deadline, a breaker per paid service,
an answer cache, and exactly one final event (`solved` or `failed`) per challenge, whatever the solvers do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from addon.capture.assemble import Captured
from addon.kinds import SPECS
from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.ratelimit import RateLimitedLog
from addon.solving import failures
from addon.solving.base import PaidSolver, Solution, Solver, answer_from_json, answer_type, is_paid
from addon.solving.cache import AnswerCache, image_key
from addon.solving.failures import SolveFailure
from addon.solving.health import ServiceHealth
from addon.solving.sharing import SharedSolving

logger = logging.getLogger(__name__)

KEY_RECHECK = 30.0
"""Seconds between checks of a refused key, while challenges keep coming."""
BALANCE_EVERY = 300.0
MONITOR_TICK = 1.0
MAX_ANSWERED = 20_000
ADAPTIVE_WINDOW = 50
ADAPTIVE_MIN_VERDICTS = 10


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    solvers: tuple[Solver, ...] = ()
    width_view: int = 340
    poll_s: float = 2.0
    timeout_s: float = 120.0
    max_jobs: int = 32
    max_waiting: int = 512
    local_confidence: float = 0.5
    """0..1: a solver's answer below it goes to the next solver of the chain (when there is one)."""
    cache_size: int = 10_000
    cache_ttl: float = 6 * 3600.0
    low_balance: float = 0.0
    adaptive: bool = False
    adaptive_share: float = 0.5

    @property
    def chain(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.solvers)


@dataclass(slots=True)
class ServiceState:
    """What the scheduler knows of one paid service: its key, its health, its balance, its jobs."""

    solver: PaidSolver
    health: ServiceHealth = field(default_factory=ServiceHealth)
    key_state: str = "unchecked"
    balance: str | None = None
    checked_at: float = float("-inf")
    wanted_at: float = float("-inf")
    jobs_sent: Counter[str] = field(default_factory=Counter)
    """Paid jobs created (or that may have been), by kind."""
    monitor: asyncio.Task[None] | None = None
    warned_low: bool = False


@dataclass(slots=True)
class _Run:
    captured: Captured
    started: float
    deadline: float
    key: str
    task: asyncio.Task[None] | None = None
    tried: list[str] = field(default_factory=list)
    service: str | None = None
    job_id: str | int | None = None
    asked: int = 0
    """The cache's rejection count when the chain was started (`CachedAnswer.asked`)."""


@dataclass(slots=True)
class _Lead:
    """The challenge solving an image set on this proxy right now: repeats of the set wait for its outcome instead
    of paying for their own job."""

    challenge: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    """Set when its chain ends; None when it ended without one (timed out, cancelled, broke)."""


@dataclass(frozen=True, slots=True)
class Answered:
    client: str
    kind: str
    service: str
    cached: bool
    key: str
    job_id: str | int | None = None
    solution: Solution | None = None
    origin: str = ""
    """The challenge this answer was first given to (the one whose job paid for it, when known)."""


Outcome = tuple[str, str | int | None, Solution, bool] | SolveFailure
"""(service, job_id, solution, cached) or why the chain gave no answer."""

FROM_CACHE, FROM_REPEAT, FROM_FLEET = "cache", "repeat", "fleet"
"""Where a `cached` answer came from (`solved`'s `cached_from`)."""


def shared_json(service: str, solution: Solution) -> str:
    """`kind` here is the answer's type (rotate, slide, points): what it takes to read the answer back."""
    return json.dumps({"service": service, "result": solution.result, "confidence": solution.confidence,
                       "kind": answer_type(solution.answer), "answer": solution.answer.to_json()})


def from_shared_json(text: str) -> tuple[str, Solution]:
    doc = json.loads(text)
    answer = answer_from_json(doc["kind"], doc["answer"])
    return str(doc["service"]), Solution(str(doc["result"]), answer, doc.get("confidence"))


def refusal_before_solving(captured: Captured, solvers: tuple[Solver, ...]) -> SolveFailure | None:
    """Why a challenge fails at once, before any solver or cache: it is malformed, no solver of the chain takes
    its kind, or it lacks the prompt its kind needs."""
    kind = captured.kind
    if captured.malformed:
        return failures.BadImage(captured.malformed)
    if not any(kind in s.kinds for s in solvers):
        names = ", ".join(s.name for s in solvers)
        return failures.NoSolver(f"no solver of the chain ({names}) takes {kind} challenges")
    if SPECS[kind].needs_question and not captured.question:
        return failures.NoQuestion(f"{kind} challenge without its prompt (the traffic did not carry a usable one), so "
                                   "nothing was sent to a solver")
    return None


class _Attempt:
    """The `Job` one solver gets for one challenge."""

    def __init__(self, scheduler: Scheduler, run: _Run, solver: Solver, config: SchedulerConfig):
        self._scheduler = scheduler
        self._run = run
        self._solver = solver
        self._state = scheduler.services.get(solver.name)
        self.width_view = config.width_view
        self.poll_s = config.poll_s

    def started(self, job_id: str | int | None) -> None:
        self._run.service, self._run.job_id = self._solver.name, job_id
        c = self._run.captured
        self._scheduler.bus.emit(ev.Solving(client=c.client, challenge=c.challenge_id, kind=str(c.kind),
                                            service=self._solver.name, job_id=job_id))

    def service_ok(self) -> None:
        if self._state is not None:
            self._state.health.ok(self._scheduler.clock())

    def service_fault(self, failure: failures.Unavailable) -> None:
        if self._state is not None:
            self._state.health.fault()

    def job_sent(self) -> None:
        if self._state is not None:
            self._state.jobs_sent[str(self._run.captured.kind)] += 1

    def job_not_sent(self) -> None:
        if self._state is not None:
            self._state.jobs_sent[str(self._run.captured.kind)] -= 1


class Scheduler:
    def __init__(self, bus: EventBus, clock: Callable[[], float] = time.monotonic):
        self.bus = bus
        self.clock = clock
        self.config = SchedulerConfig()
        self.services: dict[str, ServiceState] = {}
        self.cache = AnswerCache(clock=clock)
        self.answered: OrderedDict[str, Answered] = OrderedDict()
        self.verdicts: dict[tuple[str, str], deque[bool]] = {}
        self._demoted: set[tuple[str, str]] = set()
        self._runs: dict[str, _Run] = {}
        self._leads: dict[str, _Lead] = {}
        """Image set -> the challenge solving it on this proxy now (fleet claims, across proxies, are apart)."""
        self._reports: set[asyncio.Task[Any]] = set()
        self.fleet: SharedSolving | None = None
        """Set in fleet mode (`captcha_redis`): image sets are solved once across the fleet."""
        self.fleet_max_jobs = 0
        self._slots = asyncio.Semaphore(self.config.max_jobs)
        self._errors = RateLimitedLog(logger)

    @property
    def enabled(self) -> bool:
        return bool(self.config.solvers)

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    @property
    def waiting(self) -> int:
        """Challenges beyond the job slots: what captcha_max_waiting bounds."""
        return max(0, len(self._runs) - self.config.max_jobs)

    @property
    def jobs_sent(self) -> int:
        return sum(s.jobs_sent.total() for s in self.services.values())

    @property
    def key_state(self) -> str:
        """`none` without a paid service, else the key state of the first paid service of the chain."""
        for solver in self.config.solvers:
            if solver.paid:
                return self.services[solver.name].key_state
        return "none"

    def in_flight_of(self, client: str) -> int:
        return sum(1 for run in self._runs.values() if run.captured.client == client)

    def configure(self, config: SchedulerConfig) -> None:
        """Takes a new chain and settings; solvers whose object changed are closed and their state renewed."""
        old = self.config
        self.config = config
        if old.max_jobs != config.max_jobs:
            self._slots = asyncio.Semaphore(config.max_jobs)
        if (old.cache_size, old.cache_ttl) != (config.cache_size, config.cache_ttl):
            self.cache.max_entries, self.cache.ttl = config.cache_size, config.cache_ttl
        keep = {s.name: s for s in config.solvers}
        for name, state in list(self.services.items()):
            if keep.get(name) is not state.solver:
                self._drop_service(name)
        for solver in config.solvers:
            if is_paid(solver) and solver.name not in self.services:
                self.services[solver.name] = ServiceState(solver)
                self._start_monitor(self.services[solver.name])
        if old.chain != config.chain:
            names = ", ".join(config.chain) or "none (capture only)"
            logger.info(f"captcha: solvers: {names}")

    def _drop_service(self, name: str) -> None:
        state = self.services.pop(name)
        if state.monitor is not None:
            state.monitor.cancel()
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(state.solver.close(), name=f"captcha-close-{name}")

    # --- paid services: key, balance, breaker probes -------------------------------------------------------

    def _start_monitor(self, state: ServiceState) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # configured before the loop runs: `running()` starts it
        state.monitor = loop.create_task(self._monitor(state), name=f"captcha-monitor-{state.solver.name}")

    def start(self) -> None:
        """Starts the monitors of services configured before the event loop was running."""
        for state in self.services.values():
            if state.monitor is None:
                self._start_monitor(state)

    async def _monitor(self, state: ServiceState) -> None:
        """Checks the key at start, reads the balance every few minutes, and probes a service that is down."""
        await self._check(state, announce=True)
        while True:
            await asyncio.sleep(MONITOR_TICK)
            now = self.clock()
            since = now - state.checked_at
            if (state.health.is_down(now) and since >= state.health.probe_s) or since >= BALANCE_EVERY or (
                    state.key_state == "invalid" and since >= KEY_RECHECK and state.wanted_at > state.checked_at):
                await self._check(state, announce=False)

    async def _check(self, state: ServiceState, announce: bool) -> None:
        name = state.solver.name
        state.checked_at = self.clock()
        try:
            balance = await state.solver.check()
        except failures.InvalidKey as f:
            state.health.probed(self.clock(), up=True)
            if state.key_state != "invalid" or announce:
                logger.error(f"captcha: the {name} key was refused ({f.message}); its challenges fail as "
                             "invalid_key (or go to the next solver)")
            state.key_state = "invalid"
            return
        except SolveFailure as f:
            state.health.probed(self.clock(), up=False)
            if announce:
                logger.warning(f"captcha: could not check the {name} key ({f.message}); solving anyway")
            return
        except Exception as e:  # a check must never take the proxy down
            state.health.probed(self.clock(), up=False)
            logger.warning(f"captcha: checking {name} failed: {type(e).__name__}")
            return
        state.health.probed(self.clock(), up=True)
        if state.key_state == "invalid":
            logger.info(f"captcha: the {name} key is accepted again; solving resumes")
        state.key_state = "valid"
        state.balance = balance
        if announce:
            logger.info(f"captcha: {name} key accepted, balance {balance} USD")
        self._watch_balance(state)

    def _watch_balance(self, state: ServiceState) -> None:
        try:
            low = float(state.balance or "nan") < self.config.low_balance
        except ValueError:
            return
        if low and not state.warned_low:
            logger.warning(f"captcha: {state.solver.name} balance is low: {state.balance} USD "
                           f"(captcha_low_balance={self.config.low_balance:g})")
        state.warned_low = low

    # --- challenges ----------------------------------------------------------------------------------------

    def submit(self, captured: Captured) -> None:
        """Starts solving a challenge that has just been captured; returns at once."""
        config = self.config
        if not config.solvers or captured.challenge_id in self._runs:
            return
        now = self.clock()
        run = _Run(captured, now, now + config.timeout_s, image_key(captured))
        self._runs[captured.challenge_id] = run
        if len(self._runs) > config.max_jobs + config.max_waiting:
            self._finish_failed(run, failures.Overloaded(
                f"more than {config.max_waiting} challenges already wait for a job slot"))
            return
        run.task = asyncio.get_running_loop().create_task(
            self._work(run, config), name=f"captcha-solve-{captured.challenge_id[:16]}")

    async def _work(self, run: _Run, config: SchedulerConfig) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (run.deadline - self.clock())
        try:
            async with asyncio.timeout_at(deadline):
                await self._chain(run, config)
        except TimeoutError:
            self._finish_failed(run, failures.TimedOut(
                f"no final answer within captcha_timeout ({config.timeout_s:g}s)"))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("captcha: internal error while solving %s (a bug of the addon, not of a service)",
                             run.captured.challenge_id)
            self._finish_failed(run, failures.InternalError(f"internal error: {type(e).__name__}"))

    def chain_for(self, run: _Run) -> list[Solver]:
        """The configured chain, less services the site proved wrong on these images, with demoted ones moved back
        one place for this kind."""
        wrong = self.cache.wrong_services(run.key)
        takers = [s for s in self.config.solvers if run.captured.kind in s.kinds]
        chain = [s for s in takers if s.name not in wrong] or takers
        kind = str(run.captured.kind)
        for i in range(len(chain) - 2, -1, -1):
            if (chain[i].name, kind) in self._demoted:
                chain[i], chain[i + 1] = chain[i + 1], chain[i]
        return chain

    async def _chain(self, run: _Run, config: SchedulerConfig) -> None:
        refusal = refusal_before_solving(run.captured, config.solvers)
        if refusal is not None:
            self._finish_failed(run, refusal)
            return
        while True:
            cached = self.cache.get(run.key)
            if cached is not None:
                self._finish_solved(run, cached.service, None, cached.solution, cached=FROM_CACHE,
                                    same_as=cached.challenge or None)
                return
            lead = self._leads.get(run.key)
            if lead is None:
                break
            # The same images are being solved here now: wait for that answer (inside this challenge's own
            # deadline, which `_work` holds) rather than pay for a second job.
            await lead.done.wait()
            if lead.outcome is not None and not isinstance(lead.outcome, SolveFailure):
                service, _, solution, _ = lead.outcome
                self._finish_solved(run, service, None, solution, cached=FROM_REPEAT, same_as=lead.challenge)
                return
            # It failed, timed out or was cancelled: look again (the cache, another repeat that took over first),
            # else this challenge solves the set itself.
        lead = _Lead(run.captured.challenge_id)
        self._leads[run.key] = lead
        try:
            # Only paid answers are worth a fleet-wide claim: the local solver is quicker than a round trip to Redis.
            shared = self.fleet is not None and any(s.paid for s in config.solvers)
            outcome = await (self._shared_chain(run, config) if shared else self._run_chain(run, config))
            lead.outcome = outcome
        finally:
            if self._leads.get(run.key) is lead:
                del self._leads[run.key]
            lead.done.set()
        if isinstance(outcome, SolveFailure):
            self._finish_failed(run, outcome)
        else:
            service, job_id, solution, from_fleet = outcome
            self._finish_solved(run, service, job_id, solution, cached=FROM_FLEET if from_fleet else None)

    async def _shared_chain(self, run: _Run, config: SchedulerConfig) -> Outcome:
        """Fleet mode: one proxy of the fleet solves an image set (a claim in Redis), the others wait for its answer
        and take over if the claim's owner dies; answers are cached fleet-wide."""
        assert self.fleet is not None
        outcome: Outcome | None = None

        async def solve_here() -> str | None:
            nonlocal outcome
            outcome = await self._run_chain(run, config)
            return None if isinstance(outcome, SolveFailure) else shared_json(outcome[0], outcome[2])

        answer, here = await self.fleet.solve_once(run.key, f"{self.bus.run}:{run.captured.challenge_id}",
                                                   max(0.0, run.deadline - self.clock()), solve_here)
        if here and outcome is not None:
            return outcome
        if answer is None:
            raise TimeoutError  # the deadline passed while another proxy held the claim
        service, solution = from_shared_json(answer)
        return service, None, solution, True

    async def _run_chain(self, run: _Run, config: SchedulerConfig) -> Outcome:
        chain = self.chain_for(run)
        run.asked = self.cache.marks
        unsure: tuple[Solver, Solution, str | int | None] | None = None
        failure: SolveFailure = failures.ServiceError("no solver could take the challenge")
        for i, solver in enumerate(chain):
            last = i == len(chain) - 1
            state = self.services.get(solver.name)
            if state is not None:
                refusal = await self._refusal(state, last)
                if refusal is not None:
                    failure = refusal
                    continue
            try:
                async with self._slots, self._fleet_slot(run, solver, config):
                    run.tried.append(solver.name)
                    run.service, run.job_id = solver.name, None
                    with failures.image_checks():  # for a solver that lets the image checks' own error out
                        solution = await solver.solve(run.captured, _Attempt(self, run, solver, config))
            except failures.BadImage as f:
                return f  # nothing further down the chain would do better
            except SolveFailure as f:
                if isinstance(f, failures.InvalidKey) and state is not None:
                    state.key_state, state.checked_at = "invalid", self.clock()
                failure = f
                continue
            if solution.confidence is not None and solution.confidence < config.local_confidence and not last:
                if unsure is None or solution.confidence > (unsure[1].confidence or 0.0):
                    unsure = (solver, solution, run.job_id)
                continue
            return solver.name, run.job_id, solution, False
        if unsure is not None:
            return unsure[0].name, unsure[2], unsure[1], False
        return failure

    @contextlib.asynccontextmanager
    async def _fleet_slot(self, run: _Run, solver: Solver, config: SchedulerConfig) -> AsyncIterator[None]:
        """The fleet-wide cap on paid jobs in flight (`captcha_fleet_max_jobs`), when fleet mode sets one."""
        if self.fleet is None or not self.fleet_max_jobs or not solver.paid:
            yield
            return
        owner = f"{self.bus.run}:{run.captured.challenge_id}"
        left = max(0.0, run.deadline - self.clock())
        await self.fleet.wait_paid_slot(self.fleet_max_jobs, owner, ttl=config.timeout_s, timeout=left)
        try:
            yield
        finally:
            await self.fleet.release_paid_slot(owner)

    async def _refusal(self, state: ServiceState, last: bool) -> SolveFailure | None:
        """Why a paid service cannot take a challenge now, or None when it can. When it is down and no solver
        follows, the challenge waits for the next probe's verdict (inside its deadline) instead of failing at once."""
        name = state.solver.name
        now = self.clock()
        state.wanted_at = now
        if state.key_state == "invalid":
            return failures.InvalidKey(f"the {name} key was refused")
        if not state.health.is_down(now):
            return None
        if not last:
            return failures.Unavailable(f"{name} is unreachable", reached=False)
        await state.health.next_verdict()
        if state.health.is_down(self.clock()):
            return failures.Unavailable(f"{name} is unreachable; failing fast until it answers again", reached=False)
        return None

    def _finish_solved(self, run: _Run, service: str, job_id: str | int | None, solution: Solution,
                       cached: str | None = None, same_as: str | None = None) -> None:
        """`cached`: where the answer came from when no job ran for this challenge (`FROM_CACHE`, ...)."""
        if self._runs.pop(run.captured.challenge_id, None) is None:
            return
        c = run.captured
        if cached is None:
            self.cache.put(run.key, service, solution, c.challenge_id, run.asked)
        else:
            run.tried.clear()
        self.answered[c.challenge_id] = Answered(c.client, str(c.kind), service, cached is not None, run.key, job_id,
                                                 solution, same_as or c.challenge_id)
        if len(self.answered) > MAX_ANSWERED:
            self.answered.popitem(last=False)
        self.bus.emit(ev.Solved(
            client=c.client, challenge=c.challenge_id, kind=str(c.kind), service=service, job_id=job_id,
            result=solution.result, answer=solution.answer, elapsed_ms=round((self.clock() - run.started) * 1000),
            confidence=solution.confidence, tried=tuple(run.tried), cached=cached is not None, cached_from=cached,
            same_as=same_as,
        ))

    def _finish_failed(self, run: _Run, failure: SolveFailure) -> None:
        if self._runs.pop(run.captured.challenge_id, None) is None:
            return
        c = run.captured
        self.bus.emit(ev.Failed(
            client=c.client, challenge=c.challenge_id, kind=str(c.kind), reason=failure.reason, message=failure.message,
            service=run.service, job_id=run.job_id if run.service else None, tried=tuple(run.tried),
        ))

    # --- the site's verdicts -------------------------------------------------------------------------------

    def verdict(self, challenge_id: str, accepted: bool) -> Answered | None:
        """The site judged the answer of `challenge_id`: a rejected answer leaves the cache and its service is
        marked wrong on those images (left out of their chain while another service is not, `chain_for`); an
        accepted one clears that mark and is the answer the cache serves; with `adaptive`, a service whose recent
        acceptance falls under the share moves behind the next one for that kind."""
        answered = self.answered.get(challenge_id)
        if answered is None:
            return None
        if accepted and answered.solution is not None:
            self.cache.accepted(answered.key, answered.service, answered.solution, answered.origin)
        elif not accepted:
            self.cache.rejected(answered.key, answered.service)
            if self.fleet is not None:
                self._background(self.fleet.drop_answer(answered.key), "captcha-fleet-drop")
        if self.config.adaptive and not answered.cached:
            self._track(answered.service, answered.kind, accepted)
        self._report(answered, accepted)
        return answered

    def _report(self, answered: Answered, accepted: bool) -> None:
        """Tells a service that takes reports (omocaptcha v2's `report`) how its answer fared; best effort."""
        state = self.services.get(answered.service)
        if state is None or answered.cached or answered.job_id is None:
            return
        self._background(state.solver.report(str(answered.job_id), accepted), f"captcha-report-{answered.service}")

    def _background(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work, name=name)
        except RuntimeError:
            work.close()
            return
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def _track(self, service: str, kind: str, accepted: bool) -> None:
        window = self.verdicts.setdefault((service, kind), deque(maxlen=ADAPTIVE_WINDOW))
        window.append(accepted)
        if len(window) < ADAPTIVE_MIN_VERDICTS:
            return
        share = sum(window) / len(window)
        key = (service, kind)
        if share < self.config.adaptive_share and key not in self._demoted:
            self._demoted.add(key)
            logger.warning(f"captcha: {service} was accepted for {share:.0%} of its last {len(window)} {kind} "
                           f"answers; moving it behind the next solver for {kind}")
        elif share >= self.config.adaptive_share and key in self._demoted:
            self._demoted.discard(key)
            logger.info(f"captcha: {service} is accepted for {share:.0%} of {kind} answers again; back in its place")

    # --- stats and shutdown --------------------------------------------------------------------------------

    def service_stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"state": s.key_state, "balance": s.balance, "jobs_sent": s.jobs_sent.total(),
                   "down": s.health.is_down(self.clock())}
            for name, s in self.services.items()
        }

    def jobs_sent_by_kind(self) -> dict[str, dict[str, int]]:
        return {name: dict(s.jobs_sent) for name, s in self.services.items()}

    async def shutdown(self) -> None:
        """Ends every challenge still in flight as failed/shutdown, then stops the monitors and closes the solvers."""
        tasks = []
        for run in list(self._runs.values()):
            self._finish_failed(run, failures.Shutdown("the proxy stopped before an answer came"))
            if run.task is not None:
                run.task.cancel()
                tasks.append(run.task)
        for state in self.services.values():
            if state.monitor is not None:
                state.monitor.cancel()
                tasks.append(state.monitor)
        await asyncio.gather(*tasks, return_exceptions=True)
        for solver in self.config.solvers:
            with contextlib.suppress(Exception):
                await solver.close()

