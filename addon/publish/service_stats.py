"""Per-service, per-kind tallies from the events themselves, above all the site's own verdicts on each answer."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from addon.publish import events as ev

LATENCY_SAMPLES = 1000


@dataclass(slots=True)
class _Tally:
    solved: int = 0
    failed: int = 0
    accepted: int = 0
    rejected: int = 0
    cached: int = 0
    elapsed_ms: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def to_json(self, jobs_sent: int | None) -> dict[str, Any]:
        judged = self.accepted + self.rejected
        out: dict[str, Any] = {
            "solved": self.solved, "failed": self.failed, "accepted": self.accepted, "rejected": self.rejected,
            "acceptance": round(self.accepted / judged, 4) if judged else None,
            "p50_ms": statistics.median(self.elapsed_ms) if self.elapsed_ms else None,
            "cached": self.cached,
        }
        if jobs_sent is not None:
            out["jobs_sent"] = jobs_sent
        return out


class ServiceStats:
    """An outlet: `by_service` of /v1/stats (service → kind → solved, failed, accepted, rejected, acceptance, p50)."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def _tally(self, service: str, kind: str | None) -> _Tally:
        key = (service, kind or "unknown")
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        return tally

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Solved):
            tally = self._tally(event.service, event.kind)
            tally.solved += 1
            if event.cached:
                tally.cached += 1
            else:
                tally.elapsed_ms.append(event.elapsed_ms)
        elif isinstance(event, ev.Failed) and event.service is not None:
            self._tally(event.service, event.kind).failed += 1
        elif isinstance(event, ev.Verified) and event.service is not None:
            tally = self._tally(event.service, event.kind)
            if event.accepted:
                tally.accepted += 1
            else:
                tally.rejected += 1

    def to_json(self, jobs_sent: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
        """`jobs_sent`: service → kind → paid jobs, from the scheduler (local solvers have none)."""
        out: dict[str, dict[str, Any]] = {}
        for (service, kind), tally in sorted(self._tallies.items()):
            sent = jobs_sent.get(service)
            out.setdefault(service, {})[kind] = tally.to_json(sent.get(kind, 0) if sent is not None else None)
        return out
