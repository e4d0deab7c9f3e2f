"""The seam between the scheduler and a store of answers shared with other proxies (fleet mode plugs in here),
and the scheduler's side of it: an image set solved once across the fleet, the fleet-wide cap on paid jobs, and
the JSON an answer travels in.

The scheduler knows only the `SharedSolving` protocol; ``addon/fleet/shared.py`` implements it on Redis, and the
wiring (``addon/mitm/fleet.py``) hands the scheduler an instance when ``captcha_redis`` is set.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from addon.solving.base import Solution, answer_from_json, answer_type
from addon.solving.failures import SolveFailure
from addon.solving.outcome import Found, Outcome


class SharedSolving(Protocol):
    async def solve_once(self, image_key: str, owner: str, timeout: float,
                         solve: Callable[[], Awaitable[str | None]]) -> tuple[str | None, bool]:
        """Solve an image set once across the proxies: ``solve`` runs here only while this proxy holds the image
        set's claim; otherwise the answer another proxy found (or had cached) is returned. (answer JSON or None,
        whether ``solve`` ran here); None once ``timeout`` seconds passed."""
        ...

    async def wait_paid_slot(self, limit: int, owner: str, ttl: float, timeout: float) -> bool:
        """One of ``limit`` paid jobs in flight across the proxies, waiting up to ``timeout`` s for it."""
        ...

    async def release_paid_slot(self, owner: str) -> None: ...

    async def drop_answer(self, image_key: str) -> None:
        """Forget the shared answer for an image set (the site refused it)."""
        ...


def shared_json(service: str, solution: Solution) -> str:
    """`kind` here is the answer's type (rotate, slide, points): what it takes to read the answer back."""
    return json.dumps({"service": service, "result": solution.result, "confidence": solution.confidence,
                       "kind": answer_type(solution.answer), "answer": solution.answer.to_json()})


def from_shared_json(text: str) -> tuple[str, Solution]:
    doc = json.loads(text)
    answer = answer_from_json(doc["kind"], doc["answer"])
    return str(doc["service"]), Solution(str(doc["result"]), answer, doc.get("confidence"))


async def solve_across(fleet: SharedSolving, image_key: str, owner: str, timeout: float,
                       run_chain: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """One proxy of the fleet solves an image set (a claim in Redis), the others wait for its answer and take over
    if the claim's owner dies; answers are cached fleet-wide. Raises TimeoutError when `timeout` passed while
    another proxy held the claim."""
    outcome: Outcome | None = None

    async def solve_here() -> str | None:
        nonlocal outcome
        outcome = await run_chain()
        return None if isinstance(outcome, SolveFailure) else shared_json(outcome.service, outcome.solution)

    answer, here = await fleet.solve_once(image_key, owner, timeout, solve_here)
    if here and outcome is not None:
        return outcome
    if answer is None:
        raise TimeoutError
    service, solution = from_shared_json(answer)
    return Found(service, None, solution, from_fleet=True)


@contextlib.asynccontextmanager
async def paid_slot(fleet: SharedSolving, limit: int, owner: str, ttl: float, timeout: float) -> AsyncIterator[None]:
    """One of the fleet's `limit` paid jobs in flight (`captcha_fleet_max_jobs`), held for the block."""
    await fleet.wait_paid_slot(limit, owner, ttl=ttl, timeout=timeout)
    try:
        yield
    finally:
        await fleet.release_paid_slot(owner)
