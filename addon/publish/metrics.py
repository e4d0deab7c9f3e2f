"""Prometheus metrics of the events, in a registry of their own (never prometheus_client's global one).

The counters and the histogram are kept as plain numbers by one custom collector rather than prometheus_client's
Counter/Histogram: those add a `<name>_created` series beside every labelled series (doubling a by-client scrape)
and can only be told not to for the whole process.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from addon.kinds import Kind

logger = logging.getLogger(__name__)

ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
                  90.0, 120.0)
"""Capture-to-answer seconds: a local solver answers in milliseconds, a paid service in seconds up to the timeout."""
NONE = "none"
"""Label value of a field the event lacks (a failure before any solver took the challenge has no service)."""
KINDS = tuple(str(kind) for kind in Kind)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "captured": ("Challenges captured whole.", ("kind",)),
    "solved": ("Challenges answered.", ("kind", "service")),
    "failed": ("Challenges that ended without an answer, by reason.", ("kind", "reason", "service")),
    "expired": ("Challenge parts that never made a whole challenge, by reason.", ("reason",)),
    "verified": ("The site's verdicts on answered challenges.", ("kind", "service", "outcome")),
}
"""Event name -> (help, labels) of the counter `captcha_<event>_total` (and a last `client` label with by_client)."""


@dataclass(slots=True)
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(ANSWER_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "less than or equal").
        self.buckets[bisect.bisect_left(ANSWER_BUCKETS, value)] += 1
        self.total += value


class Metrics:
    """Counts events as they are emitted (`observe` is a bus outlet) and reads the gauges at scrape time.

    `by_client=True` adds a `client` label to every counter: one series per device, so only for small farms.
    """

    def __init__(self, *, in_flight: Callable[[], int] | None = None, waiting: Callable[[], int] | None = None,
                 balance: Callable[[], Mapping[str, Any] | None] | None = None, by_client: bool = False):
        self.by_client = by_client
        self.counts: dict[str, Counter[tuple[str, ...]]] = {}
        self.answer_seconds: dict[str, _Histogram] = {}
        self._lock = threading.Lock()
        self._reset_counts()
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self, in_flight, waiting, balance))

    def set_by_client(self, by_client: bool) -> None:
        """For an option changed after start: the counters start again from zero (a counter reset to Prometheus)."""
        with self._lock:
            if by_client != self.by_client:
                self.by_client = by_client
                self._reset_counts()

    def _reset_counts(self) -> None:
        self.counts = {name: Counter() for name in COUNTERS}
        if not self.by_client:
            for kind in KINDS:
                self.counts["captured"][(kind,)] = 0

    def observe(self, event: Mapping[str, Any]) -> None:
        """Counts one event; never raises (it runs inside EventBus.emit, before other outlets)."""
        name = event.get("event")
        kind = _label(event.get("kind"))
        if name == "captured":
            labels: tuple[str, ...] = (kind,)
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
        elapsed = event.get("elapsed_ms")
        with self._lock:
            if self.by_client:
                labels += (_label(event.get("client")),)
            self.counts[name][labels] += 1
            if name == "solved" and _finite(elapsed) and not event.get("cached"):  # a cached answer took no time
                service = labels[1]
                histogram = self.answer_seconds.get(service)
                if histogram is None:
                    histogram = self.answer_seconds[service] = _Histogram()
                histogram.observe(max(0.0, elapsed / 1000))

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type: Prometheus text, or OpenMetrics when `accept` asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def families(self) -> list[Metric]:
        """The counters and the histogram as metric families (a consistent copy, taken under the lock)."""
        out: list[Metric] = []
        with self._lock:
            client = ("client",) if self.by_client else ()
            for name, (documentation, labels) in COUNTERS.items():
                family = CounterMetricFamily(f"captcha_{name}", documentation, labels=(*labels, *client))
                for values, count in sorted(self.counts[name].items()):
                    family.add_metric(values, count)
                out.append(family)
            histogram = HistogramMetricFamily("captcha_answer_seconds", "Seconds from capture to the answer.",
                                              labels=("service",))
            for service, h in sorted(self.answer_seconds.items()):
                cumulative, buckets = 0, []
                for bound, count in zip((*ANSWER_BUCKETS, math.inf), h.buckets, strict=True):
                    cumulative += count
                    buckets.append((_bound(bound), float(cumulative)))
                histogram.add_metric((service,), buckets, h.total)
            out.append(histogram)
        return out


def _finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _label(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class _Collector(Collector):
    def __init__(self, metrics: Metrics, in_flight: Callable[[], int] | None, waiting: Callable[[], int] | None,
                 balance: Callable[[], Mapping[str, Any] | None] | None):
        self.metrics = metrics
        self.in_flight = in_flight
        self.waiting = waiting
        self.balance = balance

    def describe(self) -> Iterable[Metric]:
        # Without it the registry would collect (and call the gauges' callables) at registration to learn the names.
        return [*self.metrics.families(), GaugeMetricFamily("captcha_jobs_in_flight", ""),
                GaugeMetricFamily("captcha_jobs_waiting", ""), GaugeMetricFamily("captcha_balance_usd", "")]

    def collect(self) -> Iterable[Metric]:
        yield from self.metrics.families()
        yield GaugeMetricFamily("captcha_jobs_in_flight", "Solving jobs running now.", value=_count(self.in_flight))
        yield GaugeMetricFamily("captcha_jobs_waiting", "Challenges waiting for a free job slot.",
                                value=_count(self.waiting))
        family = GaugeMetricFamily("captcha_balance_usd", "The paid solving services' balance, as they last said.",
                                   labels=("service",))
        balances = _read(self.balance)
        if isinstance(balances, Mapping):
            for service, value in sorted(balances.items(), key=lambda item: str(item[0])):
                amount = _amount(value)
                if amount is not None:
                    family.add_metric((str(service),), amount)
        yield family


def _read(source: Callable[[], Any] | None) -> Any:
    if source is None:
        return None
    try:
        return source()
    except Exception:
        # A scrape must not fail because one reading did.
        logger.exception("metrics: reading a gauge failed")
        return None


def _count(source: Callable[[], Any] | None) -> float:
    value = _read(source)
    return float(value) if _finite(value) else 0.0


def _amount(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = float(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return None
    return amount if math.isfinite(amount) else None
