"""The one count of events: the bus feeds it once per event, and `/v1/stats` (the totals, one client's, and
`by_service`) and `/metrics` all read these same numbers, so they agree by construction.

Each event is counted under its labels (`LABELS`, which are /metrics' labels too), once for the whole proxy and
once for its client (the most recently seen `MAX_CLIENTS` clients, as many as the board keeps). Beside the counts:
the capture-to-answer histogram per service, and per service and kind the cached answers and the latest latencies.
The events come from their JSON (`to_json()`, built once per event and shared by the outlets), so an event with a
field missing or of the wrong type is counted as far as it goes. Counting runs on the event loop and a scrape reads
on a thread: both hold the lock.
"""

from __future__ import annotations

import bisect
import math
import statistics
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from cachetools import LRUCache

from addon.publish.board import MAX_CLIENTS
from addon.publish.events import Event

LABELS: dict[str, tuple[str, ...]] = {
    "captured": ("kind",),
    "solved": ("kind", "service"),
    "failed": ("kind", "reason", "service"),
    "expired": ("reason",),
    "verified": ("kind", "service", "outcome"),
}
"""The events counted, and the labels each is counted by (in this order in a count's key)."""
NONE = "none"
"""Label value of a field the event lacks (a failure before any solver took the challenge has no service)."""
UNKNOWN_KIND = "unknown"
"""`by_service`'s name for an answer of no kind."""
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
                  90.0, 120.0)
"""Capture-to-answer seconds: a local solver answers in milliseconds, a paid service in seconds up to the timeout."""
LATENCY_SAMPLES = 1000
"""Latest answer times kept per service and kind, for `by_service`'s p50."""

Labels = tuple[str, ...]
Key = tuple[str, Labels]
"""(event name, its label values)."""
Counts = Counter[Key]


@dataclass(slots=True)
class Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(ANSWER_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "less than or equal").
        self.buckets[bisect.bisect_left(ANSWER_BUCKETS, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        return Histogram(list(self.buckets), self.total)


@dataclass(frozen=True, slots=True)
class Mark:
    """What the counts were at one moment (`Tally.mark`), to read the counts since then."""

    totals: Counts
    clients: dict[str, tuple[Counts, Counts]]
    """client -> (its live counts, a copy of them): a client forgotten and seen again since has new live counts,
    which are all since the mark."""


@dataclass(frozen=True, slots=True)
class Reading:
    counters: dict[str, dict[Labels, int]]
    """Event name -> label values (with the client last, when read by client) -> count."""
    answer_seconds: dict[str, Histogram]
    """Service -> its capture-to-answer seconds."""


class Tally:
    def __init__(self, max_clients: int = MAX_CLIENTS):
        self._lock = threading.Lock()
        self._totals: Counts = Counter()
        self._clients: LRUCache[str, Counts] = LRUCache(max_clients)
        self._answer_seconds: dict[str, Histogram] = {}
        self._cached: Counter[tuple[str, str]] = Counter()
        self._latency: dict[tuple[str, str], deque[float]] = {}

    def __call__(self, event: Event) -> None:
        """The bus outlet."""
        self.observe(event.to_json())

    def observe(self, event: Mapping[str, Any]) -> None:
        """Counts one event given as its JSON; never raises on a malformed one."""
        name = event.get("event")
        kind = _label(event.get("kind"))
        if name == "captured":
            labels: Labels = (kind,)
        elif name == "solved":
            labels = (kind, _label(event.get("service")))
        elif name == "failed":
            labels = (kind, _label(event.get("reason")), _label(event.get("service")))
        elif name == "expired":
            labels = (_label(event.get("reason")),)
        elif name == "verified":
            labels = (kind, _label(event.get("service")), "accepted" if event.get("accepted") is True else "rejected")
        else:
            return
        key = (name, labels)
        client = _label(event.get("client"))
        with self._lock:
            self._totals[key] += 1
            counts = self._clients.get(client)
            if counts is None:
                counts = self._clients[client] = Counter()
            counts[key] += 1
            if name == "solved":
                self._solved(labels, event)

    def _solved(self, labels: Labels, event: Mapping[str, Any]) -> None:
        kind, service = labels
        if event.get("cached"):  # a cached answer took no time
            self._cached[(service, kind)] += 1
            return
        elapsed = event.get("elapsed_ms")
        if not finite(elapsed):
            return
        histogram = self._answer_seconds.get(service)
        if histogram is None:
            histogram = self._answer_seconds[service] = Histogram()
        histogram.observe(max(0.0, elapsed / 1000))
        latency = self._latency.get((service, kind))
        if latency is None:
            latency = self._latency[(service, kind)] = deque(maxlen=LATENCY_SAMPLES)
        latency.append(elapsed)

    # -- what /v1/stats reads ------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The whole proxy's `captured`, `solved`, `failed` (by reason), `expired` and `verified`."""
        with self._lock:
            return _summary(self._totals)

    def client_stats(self, client: str) -> dict[str, Any]:
        """The same for one client (all zero for one not seen, or not seen for long)."""
        with self._lock:
            return _summary(self._clients.get(client) or Counter())

    def by_service(self, jobs_sent: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
        """service -> kind -> solved, failed, accepted, rejected, acceptance, p50_ms, cached, and `jobs_sent` for a
        service in `jobs_sent` (the scheduler's paid jobs by service and kind; local solvers have none)."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(service: str, kind: str) -> dict[str, Any]:
            key = (service, UNKNOWN_KIND if kind == NONE else kind)
            found = rows.get(key)
            if found is None:
                found = rows[key] = {"solved": 0, "failed": 0, "accepted": 0, "rejected": 0}
            return found

        with self._lock:
            for (name, labels), n in self._totals.items():
                if name == "solved" and labels[1] != NONE:
                    row(labels[1], labels[0])["solved"] += n
                elif name == "failed" and labels[2] != NONE:
                    row(labels[2], labels[0])["failed"] += n
                elif name == "verified" and labels[1] != NONE:
                    row(labels[1], labels[0])[labels[2]] += n
            cached = dict(self._cached)
            latency = {key: list(samples) for key, samples in self._latency.items()}
        out: dict[str, dict[str, Any]] = {}
        for (service, kind), counts in sorted(rows.items()):
            label = NONE if kind == UNKNOWN_KIND else kind
            samples = latency.get((service, label))
            judged = counts["accepted"] + counts["rejected"]
            doc = {**counts, "acceptance": round(counts["accepted"] / judged, 4) if judged else None,
                   "p50_ms": statistics.median(samples) if samples else None,
                   "cached": cached.get((service, label), 0)}
            sent = jobs_sent.get(service)
            if sent is not None:
                doc["jobs_sent"] = sent.get(kind, 0)
            out.setdefault(service, {})[kind] = doc
        return out

    # -- what /metrics reads -------------------------------------------------------------------------------------

    def mark(self) -> Mark:
        with self._lock:
            return Mark(self._totals.copy(), {c: (counts, counts.copy()) for c, counts in self._clients.items()})

    def read(self, by_client: bool, since: Mark | None = None) -> Reading:
        """Every count (by client: one series per client, the client its last label value) and the histograms, a
        consistent copy. `since`: only what was counted after that mark; a series with nothing since is left out."""
        counters: dict[str, dict[Labels, int]] = {name: {} for name in LABELS}
        with self._lock:
            if by_client:
                for client, counts in self._clients.items():
                    base = since.clients.get(client) if since is not None else None
                    _add(counters, counts, base[1] if base is not None and base[0] is counts else None, (client,))
            else:
                _add(counters, self._totals, since.totals if since is not None else None, ())
            answer_seconds = {service: h.copy() for service, h in self._answer_seconds.items()}
        return Reading(counters, answer_seconds)


def _add(out: dict[str, dict[Labels, int]], counts: Counts, base: Counts | None, suffix: Labels) -> None:
    for (name, labels), n in counts.items():
        if base is not None:
            n -= base.get((name, labels), 0)
        if n > 0:
            out[name][labels + suffix] = n


def _summary(counts: Counts) -> dict[str, Any]:
    out: dict[str, Any] = {"captured": 0, "solved": 0, "failed": {}, "expired": 0, "verified": 0}
    failed: dict[str, int] = out["failed"]
    for (name, labels), n in counts.items():
        if name == "failed":
            reason = labels[1]
            failed[reason] = failed.get(reason, 0) + n
        else:
            out[name] += n
    return out


def finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _label(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)
