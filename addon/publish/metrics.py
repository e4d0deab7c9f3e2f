"""`/metrics`: the tally's counts and answer-time histogram (`addon/publish/tally.py`), in a registry of their own
(never prometheus_client's global one), and gauges read at scrape time.

The counters and the histogram are handed to prometheus_client as plain numbers by one custom collector rather
than kept in its Counter/Histogram: those add a `<name>_created` series beside every labelled series (doubling a
by-client scrape) and can only be told not to for the whole process; and the numbers are the tally's, which
`/v1/stats` reads too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from addon.kinds import Kind
from addon.publish.tally import ANSWER_BUCKETS, LABELS, Mark, Tally, finite

logger = logging.getLogger(__name__)

KINDS = tuple(str(kind) for kind in Kind)

COUNTERS: dict[str, str] = {
    "captured": "Challenges captured whole.",
    "solved": "Challenges answered.",
    "failed": "Challenges that ended without an answer, by reason.",
    "expired": "Challenge parts that never made a whole challenge, by reason.",
    "verified": "The site's verdicts on answered challenges.",
}
"""Event name -> help of the counter `captcha_<event>_total`, labelled as the tally counts it (`LABELS`), and by
`client` last with by_client."""


class Metrics:
    """The scrape of a tally's counts, and the gauges read at scrape time.

    `by_client=True` adds a `client` label to every counter: one series per device, so only for small farms.
    """

    def __init__(self, tally: Tally, *, in_flight: Callable[[], int] | None = None,
                 waiting: Callable[[], int] | None = None,
                 balance: Callable[[], Mapping[str, Any] | None] | None = None, by_client: bool = False):
        self.tally = tally
        self._view: tuple[bool, Mark | None] = (by_client, None)
        """(by_client, counting from): replaced whole, as a scrape on another thread reads both."""
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self, in_flight, waiting, balance))

    @property
    def by_client(self) -> bool:
        return self._view[0]

    def set_by_client(self, by_client: bool) -> None:
        """For an option changed after start: the counters start again from zero (a counter reset to Prometheus),
        while the tally, and /v1/stats with it, counts on."""
        if by_client != self.by_client:
            self._view = (by_client, self.tally.mark())

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type: Prometheus text, or OpenMetrics when `accept` asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def families(self) -> list[Metric]:
        """The counters and the histogram as metric families (from one consistent reading of the tally)."""
        by_client, since = self._view
        reading = self.tally.read(by_client, since)
        out: list[Metric] = []
        client = ("client",) if by_client else ()
        for name, documentation in COUNTERS.items():
            family = CounterMetricFamily(f"captcha_{name}", documentation, labels=(*LABELS[name], *client))
            series = reading.counters[name]
            if name == "captured" and not by_client:
                for kind in KINDS:  # every kind has its series from the start, at 0
                    series.setdefault((kind,), 0)
            for values, count in sorted(series.items()):
                family.add_metric(values, count)
            out.append(family)
        histogram = HistogramMetricFamily("captcha_answer_seconds", "Seconds from capture to the answer.",
                                          labels=("service",))
        for service, h in sorted(reading.answer_seconds.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*ANSWER_BUCKETS, math.inf), h.buckets, strict=True):
                cumulative += count
                buckets.append((_bound(bound), float(cumulative)))
            histogram.add_metric((service,), buckets, h.total)
        out.append(histogram)
        return out


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
    return float(value) if finite(value) else 0.0


def _amount(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = float(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return None
    return amount if math.isfinite(amount) else None
