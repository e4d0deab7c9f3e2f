"""The seam between the scheduler and a store of answers shared with other proxies (fleet mode plugs in here).

The scheduler knows only this protocol; ``addon/fleet/shared.py`` implements it on Redis, and the wiring
(``addon/mitm/fleet.py``) hands the scheduler an instance when ``captcha_redis`` is set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


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
