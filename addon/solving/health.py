"""Whether a solving service is up: the breaker the scheduler keeps for each paid service.

The rule (README states it; tests pin it): a service is down when at least `threshold` availability faults
(refused or dropped connections, timeouts, HTTP 5xx and 429, bodies that are not JSON) came since its last usable
answer AND that last usable answer is at least `window` seconds old (or there never was one). Faults of all
concurrent jobs count together, but a single usable answer resets the count, so a busy service that answers a fair
share of requests is never called down. While down, a probe (the service's free balance call) runs every `probe_s`
seconds; its first usable answer brings the service back.
"""

from __future__ import annotations

import asyncio

THRESHOLD = 5
WINDOW = 10.0
PROBE_INTERVAL = 5.0


class ServiceHealth:
    def __init__(self, threshold: int = THRESHOLD, window: float = WINDOW, probe_s: float = PROBE_INTERVAL):
        self.threshold = threshold
        self.window = window
        self.probe_s = probe_s
        self.faults = 0
        self.last_ok: float | None = None
        self.changed = asyncio.Event()
        """Set (and replaced) whenever the verdict may have changed: waiters for a probe's outcome wake on it."""

    def is_down(self, now: float) -> bool:
        return self.faults >= self.threshold and (self.last_ok is None or now - self.last_ok >= self.window)

    def fault(self) -> None:
        self.faults += 1

    def ok(self, now: float) -> None:
        self.faults = 0
        self.last_ok = now
        self._wake()

    def probed(self, now: float, up: bool) -> None:
        if up:
            self.ok(now)
        else:
            self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def next_verdict(self) -> None:
        """Returns at the next probe outcome or usable answer."""
        await self.changed.wait()
