"""Work the scheduler starts and does not wait for (a report to a service, a retired service's close, a fleet
answer dropped): each task kept referenced until it ends, and awaited at shutdown.

By hand because asyncio keeps only weak references to tasks, and a `TaskGroup` would tie every task to one
`async with` and cancel them all on the first error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 3.0
"""How long shutdown waits for background work still running before it cancels it."""


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs `work` on the running loop; without one (configured before mitmproxy runs) it is dropped unrun."""
        try:
            task = asyncio.get_running_loop().create_task(work, name=name)
        except RuntimeError:
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning(f"captcha: {task.get_name()} failed: {task.exception()!r}")

    async def drain(self) -> None:
        """Waits for the work still running (up to DRAIN_SECONDS), then cancels what is left and waits for that."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
