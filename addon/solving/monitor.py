"""The paid services' monitor: each service's key state, balance, health and job count; its key checked at start,
its balance read every few minutes, a service that is down probed; and why a service cannot take a challenge now."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from addon.solving import failures
from addon.solving.background import Background
from addon.solving.base import PaidSolver, Solver, is_paid
from addon.solving.health import ServiceHealth

logger = logging.getLogger(__name__)

KEY_RECHECK = 30.0
"""Seconds between checks of a refused key, while challenges keep coming."""
BALANCE_EVERY = 300.0
MONITOR_TICK = 1.0

KeyState = Literal["unchecked", "valid", "invalid"]


@dataclass(slots=True)
class ServiceState:
    """What the scheduler knows of one paid service: its key, its health, its balance, its jobs."""

    solver: PaidSolver
    health: ServiceHealth = field(default_factory=ServiceHealth)
    key_state: KeyState = "unchecked"
    balance: str | None = None
    checked_at: float = float("-inf")
    wanted_at: float = float("-inf")
    jobs_sent: Counter[str] = field(default_factory=Counter)
    """Paid jobs created (or that may have been), by kind."""
    monitor: asyncio.Task[None] | None = None
    warned_low: bool = False


class ServiceMonitor:
    def __init__(self, clock: Callable[[], float], background: Background):
        self.clock = clock
        self.services: dict[str, ServiceState] = {}
        self.low_balance = 0.0
        self._background = background

    def configure(self, solvers: Sequence[Solver], low_balance: float) -> None:
        """Keeps the state of every paid service whose solver object stayed; a changed or removed one is retired
        (its monitor stopped, its solver closed) and a new one gets a fresh state and monitor."""
        self.low_balance = low_balance
        keep = {s.name: s for s in solvers}
        for name, state in list(self.services.items()):
            if keep.get(name) is not state.solver:
                self._retire(name)
        for solver in solvers:
            if is_paid(solver) and solver.name not in self.services:
                self.services[solver.name] = ServiceState(solver)
                self._start(self.services[solver.name])

    def _retire(self, name: str) -> None:
        state = self.services.pop(name)
        if state.monitor is not None:
            state.monitor.cancel()
        self._background.spawn(self._close(state), f"captcha-close-{name}")

    @staticmethod
    async def _close(state: ServiceState) -> None:
        if state.monitor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await state.monitor
        await state.solver.close()

    def _start(self, state: ServiceState) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # configured before the loop runs: `start()` starts it
        state.monitor = loop.create_task(self._watch(state), name=f"captcha-monitor-{state.solver.name}")

    def start(self) -> None:
        """Starts the monitors of services configured before the event loop was running."""
        for state in self.services.values():
            if state.monitor is None:
                self._start(state)

    async def _watch(self, state: ServiceState) -> None:
        """Checks the key at start, reads the balance every few minutes, and probes a service that is down."""
        await self.check(state, announce=True)
        while True:
            await asyncio.sleep(MONITOR_TICK)
            now = self.clock()
            since = now - state.checked_at
            if (state.health.is_down(now) and since >= state.health.probe_s) or since >= BALANCE_EVERY or (
                    state.key_state == "invalid" and since >= KEY_RECHECK and state.wanted_at > state.checked_at):
                await self.check(state, announce=False)

    async def check(self, state: ServiceState, announce: bool) -> None:
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
        except failures.SolveFailure as f:
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
        self.watch_balance(state)

    def watch_balance(self, state: ServiceState) -> None:
        try:
            low = float(state.balance or "nan") < self.low_balance
        except ValueError:
            return
        if low and not state.warned_low:
            logger.warning(f"captcha: {state.solver.name} balance is low: {state.balance} USD "
                           f"(captcha_low_balance={self.low_balance:g})")
        state.warned_low = low

    def key_refused(self, state: ServiceState) -> None:
        """A solve found the key refused: the service's challenges fail (or move on) until a recheck accepts it."""
        state.key_state, state.checked_at = "invalid", self.clock()

    async def refusal(self, state: ServiceState, last: bool) -> failures.SolveFailure | None:
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

    # --- what the stats read -------------------------------------------------------------------------------------

    def key_state(self, chain: Sequence[Solver]) -> KeyState | Literal["none"]:
        """`none` without a paid service, else the key state of the first paid service of the chain."""
        for solver in chain:
            if solver.paid and solver.name in self.services:
                return self.services[solver.name].key_state
        return "none"

    @property
    def jobs_sent(self) -> int:
        return sum(s.jobs_sent.total() for s in self.services.values())

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"state": s.key_state, "balance": s.balance, "jobs_sent": s.jobs_sent.total(),
                   "down": s.health.is_down(self.clock())}
            for name, s in self.services.items()
        }

    def jobs_sent_by_kind(self) -> dict[str, dict[str, int]]:
        return {name: dict(s.jobs_sent) for name, s in self.services.items()}

    async def shutdown(self) -> None:
        """Stops the monitors and waits for them to end."""
        tasks = [s.monitor for s in self.services.values() if s.monitor is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
