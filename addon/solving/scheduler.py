"""Runs every captured challenge through the chain of solvers: slots, one deadline, the chain's order, an answer
cache, repeats that wait for the answer in flight, and exactly one final event (`solved` or `failed`) per
challenge, whatever the solvers do.

Its parts, each a module of its own: the paid services' key, balance and breaker (`monitor.py`), the site's
verdicts and the reports (`verdicts.py`), solving once across a fleet (`sharing.py`), the work it does not wait
for (`background.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from addon.capture.assemble import Captured
from addon.kinds import SPECS
from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.solving import failures, sharing
from addon.solving.background import Background
from addon.solving.base import PaidSolver, Solution, Solver
from addon.solving.cache import AnswerCache, image_key
from addon.solving.failures import SolveFailure
from addon.solving.monitor import KeyState, ServiceMonitor, ServiceState
from addon.solving.outcome import Found, Outcome
from addon.solving.sharing import SharedSolving
from addon.solving.verdicts import Adaptive, Answered, Verdicts

logger = logging.getLogger(__name__)


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


FROM_CACHE, FROM_REPEAT, FROM_FLEET = "cache", "repeat", "fleet"
"""Where a `cached` answer came from (`solved`'s `cached_from`)."""


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
    """The runs, their slots and deadline, and the chain; the paid services' monitor (`monitor`), the site's
    verdicts (`verdicts`) and the fleet (`sharing`) are its parts."""

    def __init__(self, bus: EventBus, clock: Callable[[], float] = time.monotonic):
        self.bus = bus
        self.clock = clock
        self.config = SchedulerConfig()
        self.cache = AnswerCache(clock=clock)
        self.background = Background()
        self.monitor = ServiceMonitor(clock, self.background)
        self.verdicts = Verdicts(self.cache, self._paid, self.background)
        self._runs: dict[str, _Run] = {}
        self._leads: dict[str, _Lead] = {}
        """Image set -> the challenge solving it on this proxy now (fleet claims, across proxies, are apart)."""
        self.fleet: SharedSolving | None = None
        """Set in fleet mode (`captcha_redis`): image sets are solved once across the fleet."""
        self.fleet_max_jobs = 0
        self._slots = asyncio.Semaphore(self.config.max_jobs)

    @property
    def services(self) -> dict[str, ServiceState]:
        return self.monitor.services

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
        return self.monitor.jobs_sent

    @property
    def key_state(self) -> KeyState | Literal["none"]:
        """`none` without a paid service, else the key state of the first paid service of the chain."""
        return self.monitor.key_state(self.config.solvers)

    def in_flight_of(self, client: str) -> int:
        return sum(1 for run in self._runs.values() if run.captured.client == client)

    def _paid(self, name: str) -> PaidSolver | None:
        state = self.monitor.services.get(name)
        return state.solver if state is not None else None

    def configure(self, config: SchedulerConfig) -> None:
        """Takes a new chain and settings; solvers whose object changed are closed and their state renewed."""
        old = self.config
        self.config = config
        if old.max_jobs != config.max_jobs:
            self._slots = asyncio.Semaphore(config.max_jobs)
        if (old.cache_size, old.cache_ttl) != (config.cache_size, config.cache_ttl):
            self.cache.max_entries, self.cache.ttl = config.cache_size, config.cache_ttl
        self.monitor.configure(config.solvers, config.low_balance)
        self.verdicts.adaptive = Adaptive(config.adaptive, config.adaptive_share)
        if old.chain != config.chain:
            names = ", ".join(config.chain) or "none (capture only)"
            logger.info(f"captcha: solvers: {names}")

    def start(self) -> None:
        """Starts the monitors of services configured before the event loop was running."""
        self.monitor.start()

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
            if (chain[i].name, kind) in self.verdicts.demoted:
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
            if isinstance(lead.outcome, Found):
                self._finish_solved(run, lead.outcome.service, None, lead.outcome.solution, cached=FROM_REPEAT,
                                    same_as=lead.challenge)
                return
            # It failed, timed out or was cancelled: look again (the cache, another repeat that took over first),
            # else this challenge solves the set itself.
        lead = _Lead(run.captured.challenge_id)
        self._leads[run.key] = lead
        try:
            outcome = await self._solve(run, config)
            lead.outcome = outcome
        finally:
            if self._leads.get(run.key) is lead:
                del self._leads[run.key]
            lead.done.set()
        if isinstance(outcome, SolveFailure):
            self._finish_failed(run, outcome)
        else:
            self._finish_solved(run, outcome.service, outcome.job_id, outcome.solution,
                                cached=FROM_FLEET if outcome.from_fleet else None)

    async def _solve(self, run: _Run, config: SchedulerConfig) -> Outcome:
        # Only paid answers are worth a fleet-wide claim: the local solver is quicker than a round trip to Redis.
        if self.fleet is None or not any(s.paid for s in config.solvers):
            return await self._run_chain(run, config)
        return await sharing.solve_across(self.fleet, run.key, self._owner(run), max(0.0, run.deadline - self.clock()),
                                          lambda: self._run_chain(run, config))

    def _owner(self, run: _Run) -> str:
        """Who holds a fleet claim or paid slot: this proxy's run and the challenge."""
        return f"{self.bus.run}:{run.captured.challenge_id}"

    async def _run_chain(self, run: _Run, config: SchedulerConfig) -> Outcome:
        chain = self.chain_for(run)
        run.asked = self.cache.marks
        unsure: Found | None = None  # the surest answer under local_confidence so far, kept in case none is surer
        failure: SolveFailure = failures.ServiceError("no solver could take the challenge")
        for i, solver in enumerate(chain):
            last = i == len(chain) - 1
            state = self.services.get(solver.name)
            if state is not None:
                refusal = await self.monitor.refusal(state, last)
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
                    self.monitor.key_refused(state)
                failure = f
                continue
            if solution.confidence is not None and solution.confidence < config.local_confidence and not last:
                if unsure is None or solution.confidence > (unsure.solution.confidence or 0.0):
                    unsure = Found(solver.name, run.job_id, solution)
                continue
            return Found(solver.name, run.job_id, solution)
        return unsure if unsure is not None else failure

    @contextlib.asynccontextmanager
    async def _fleet_slot(self, run: _Run, solver: Solver, config: SchedulerConfig) -> AsyncIterator[None]:
        """The fleet-wide cap on paid jobs in flight (`captcha_fleet_max_jobs`), when fleet mode sets one."""
        if self.fleet is None or not self.fleet_max_jobs or not solver.paid:
            yield
            return
        async with sharing.paid_slot(self.fleet, self.fleet_max_jobs, self._owner(run), ttl=config.timeout_s,
                                     timeout=max(0.0, run.deadline - self.clock())):
            yield

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
        self.verdicts.remember(c.challenge_id, Answered(c.client, str(c.kind), service, cached is not None, run.key,
                                                        job_id, solution, same_as or c.challenge_id))
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

    # --- the site's verdicts, stats, shutdown -------------------------------------------------------------------

    def verdict(self, challenge_id: str, accepted: bool) -> Answered | None:
        """The site judged the answer of `challenge_id` (`Verdicts.judge`); a refused answer also leaves the
        fleet's cache."""
        answered = self.verdicts.judge(challenge_id, accepted)
        if answered is not None and not accepted and self.fleet is not None:
            self.background.spawn(self.fleet.drop_answer(answered.key), "captcha-fleet-drop")
        return answered

    def service_stats(self) -> dict[str, dict[str, Any]]:
        return self.monitor.stats()

    def jobs_sent_by_kind(self) -> dict[str, dict[str, int]]:
        return self.monitor.jobs_sent_by_kind()

    async def shutdown(self) -> None:
        """Ends every challenge still in flight as failed/shutdown, stops the monitors, waits for the background
        work (reports, closes) and closes the solvers."""
        tasks = []
        for run in list(self._runs.values()):
            self._finish_failed(run, failures.Shutdown("the proxy stopped before an answer came"))
            if run.task is not None:
                run.task.cancel()
                tasks.append(run.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.monitor.shutdown()
        await self.background.drain()
        for solver in self.config.solvers:
            with contextlib.suppress(Exception):
                await solver.close()
