from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from addon.kinds import Kind
from addon.publish.metrics import Metrics
from addon.publish.tally import Tally

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out
            out[key] = s.value
    return out


def of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def ev(event: str, kind: str | None = "rotate", client: str = "10.0.0.1", **fields: Any) -> dict[str, Any]:
    return {"seq": 0, "run": "r", "event": event, "time": "2025-01-01T00:00:00.000Z", "client": client,
            "challenge": "c", "kind": kind, **fields}


EVENTS = [
    ev("captured"), ev("captured"), ev("captured", client="dev-2"), ev("captured", "slide"), ev("captured", "slide"),
    ev("solving", service="omocaptcha-v1", job_id="1"),
    ev("solved", service="omocaptcha-v1", elapsed_ms=4, answer={"angle": 10.0}),
    ev("solved", service="omocaptcha-v1", elapsed_ms=1000, client="dev-2"),
    ev("solved", "slide", service="local", elapsed_ms=130_000),
    ev("failed", "slide", reason="timeout", message="no answer"),
    ev("failed", reason="api_error", service="omocaptcha-v1", message="boom"),
    ev("failed", reason="api_error", service="omocaptcha-v1", message="boom"),
    ev("expired", None, reason="window", images={}), ev("expired", "slide", reason="window", images={}),
    ev("expired", None, reason="replaced", images={}),
    ev("verified", service="omocaptcha-v1", accepted=True),
    ev("verified", "slide", service="local", accepted=False),
    ev("verified", "slide", accepted=False),
    ev("something-new"),
]


def test_counters_count_events_by_their_labels() -> None:
    metrics = Metrics(Tally())
    for event in EVENTS:
        metrics.tally.observe(event)
    samples = scrape(metrics)
    # every kind of the registry has its series from the start, at 0
    assert of(samples, "captcha_captured_total") == {L(kind=str(k)): 0 for k in Kind} | {L(kind="rotate"): 3,
                                                                                         L(kind="slide"): 2}
    assert of(samples, "captcha_solved_total") == {
        L(kind="rotate", service="omocaptcha-v1"): 2, L(kind="slide", service="local"): 1}
    assert of(samples, "captcha_failed_total") == {
        L(kind="slide", reason="timeout", service="none"): 1,
        L(kind="rotate", reason="api_error", service="omocaptcha-v1"): 2}
    assert of(samples, "captcha_expired_total") == {L(reason="window"): 2, L(reason="replaced"): 1}
    assert of(samples, "captcha_verified_total") == {
        L(kind="rotate", service="omocaptcha-v1", outcome="accepted"): 1,
        L(kind="slide", service="local", outcome="rejected"): 1,
        L(kind="slide", service="none", outcome="rejected"): 1}
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_answer_seconds_histogram() -> None:
    metrics = Metrics(Tally())
    for event in EVENTS:
        metrics.tally.observe(event)
    samples = scrape(metrics)
    buckets = of(samples, "captcha_answer_seconds_bucket")
    v1 = {dict(labels)["le"]: value for labels, value in buckets.items() if ("service", "omocaptcha-v1") in labels}
    local = {dict(labels)["le"]: value for labels, value in buckets.items() if ("service", "local") in labels}
    assert v1["0.005"] == 1  # 4 ms
    assert v1["0.5"] == 1 and v1["1.0"] == 2  # exactly 1 s falls in le="1.0"
    assert v1["120.0"] == 2 and v1["+Inf"] == 2
    assert local["120.0"] == 0 and local["+Inf"] == 1  # 130 s: past the last bound
    assert len(v1) == len(local) == 19
    assert of(samples, "captcha_answer_seconds_count") == {L(service="omocaptcha-v1"): 2, L(service="local"): 1}
    assert of(samples, "captcha_answer_seconds_sum") == {L(service="omocaptcha-v1"): 1.004, L(service="local"): 130}


def test_gauges_are_read_at_scrape_time() -> None:
    state: dict[str, Any] = {"in_flight": 0, "waiting": 0, "balance": None, "reads": 0}

    def in_flight() -> int:
        state["reads"] += 1
        return int(state["in_flight"])

    metrics = Metrics(Tally(), in_flight=in_flight, waiting=lambda: int(state["waiting"]),
                      balance=lambda: state["balance"])
    assert state["reads"] == 0
    samples = scrape(metrics)
    assert state["reads"] == 1
    assert of(samples, "captcha_jobs_in_flight") == {L(): 0}
    assert of(samples, "captcha_jobs_waiting") == {L(): 0}
    assert of(samples, "captcha_balance_usd") == {}
    state.update(in_flight=7, waiting=3, balance={"omocaptcha-v1": "9.99", "omocaptcha-v2": Decimal("0.5"),
                                                  "broken": "n/a", "nan": "NaN"})
    samples = scrape(metrics)
    assert of(samples, "captcha_jobs_in_flight") == {L(): 7}
    assert of(samples, "captcha_jobs_waiting") == {L(): 3}
    assert of(samples, "captcha_balance_usd") == {L(service="omocaptcha-v1"): 9.99, L(service="omocaptcha-v2"): 0.5}


def test_a_failing_gauge_does_not_fail_the_scrape() -> None:
    def broken() -> int:
        raise RuntimeError("solver gone")

    metrics = Metrics(Tally(), in_flight=broken, waiting=lambda: 2, balance=lambda: {"omocaptcha-v1": 1 / 0})
    metrics.tally.observe(ev("captured"))
    samples = scrape(metrics)
    assert of(samples, "captcha_jobs_in_flight") == {L(): 0}
    assert of(samples, "captcha_jobs_waiting") == {L(): 2}
    assert of(samples, "captcha_captured_total")[L(kind="rotate")] == 1


def test_client_label_is_an_option() -> None:
    metrics = Metrics(Tally(), by_client=True)
    for event in EVENTS:
        metrics.tally.observe(event)
    samples = scrape(metrics)
    assert of(samples, "captcha_captured_total") == {
        L(kind="rotate", client="10.0.0.1"): 2, L(kind="rotate", client="dev-2"): 1,
        L(kind="slide", client="10.0.0.1"): 2}
    assert of(samples, "captcha_solved_total")[L(kind="rotate", service="omocaptcha-v1", client="dev-2")] == 1
    for name in ("captcha_failed_total", "captcha_expired_total", "captcha_verified_total"):
        assert all(("client", "10.0.0.1") in labels for labels in of(samples, name))
    # The histogram stays by service only.
    assert set(of(samples, "captcha_answer_seconds_count")) == {L(service="omocaptcha-v1"), L(service="local")}


def test_own_registry_and_instances_apart() -> None:
    a, b = Metrics(Tally()), Metrics(Tally())
    a.tally.observe(ev("captured"))
    assert of(scrape(a), "captcha_captured_total")[L(kind="rotate")] == 1
    assert of(scrape(b), "captcha_captured_total")[L(kind="rotate")] == 0
    assert b"captcha_" not in generate_latest(REGISTRY)


def test_malformed_events_are_counted_as_far_as_they_go() -> None:
    metrics = Metrics(Tally())
    metrics.tally.observe({"event": "solved"})
    metrics.tally.observe(ev("solved", service="local", elapsed_ms="12"))
    metrics.tally.observe(ev("solved", service="local", elapsed_ms=True))
    metrics.tally.observe(ev("solved", service="local", elapsed_ms=float("nan")))
    metrics.tally.observe(ev("solved", service="local", elapsed_ms=-5))
    metrics.tally.observe(ev("verified", service="local", accepted="yes"))
    metrics.tally.observe({})
    samples = scrape(metrics)
    assert of(samples, "captcha_solved_total") == {L(kind="none", service="none"): 1, L(kind="rotate", service="local"): 4}
    assert of(samples, "captcha_answer_seconds_count") == {L(service="local"): 1}
    assert of(samples, "captcha_answer_seconds_sum") == {L(service="local"): 0}
    assert of(samples, "captcha_verified_total") == {L(kind="rotate", service="local", outcome="rejected"): 1}


def test_openmetrics_when_asked() -> None:
    metrics = Metrics(Tally())
    metrics.tally.observe(ev("captured"))
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'captcha_captured_total{kind="rotate"} 1.0' in body


def test_turning_the_client_label_on_later_restarts_the_counters() -> None:
    metrics = Metrics(Tally())
    metrics.tally.observe(ev("captured"))
    metrics.tally.observe(ev("solved", service="local", elapsed_ms=20))
    metrics.set_by_client(True)
    metrics.tally.observe(ev("captured", client="dev-1"))
    samples = scrape(metrics)
    assert of(samples, "captcha_captured_total") == {L(kind="rotate", client="dev-1"): 1}
    assert of(samples, "captcha_solved_total") == {}
    assert of(samples, "captcha_answer_seconds_count") == {L(service="local"): 1}
    metrics.set_by_client(True)  # unchanged: nothing is reset
    assert of(scrape(metrics), "captcha_captured_total") == {L(kind="rotate", client="dev-1"): 1}


def test_cached_answers_are_counted_as_solved_but_not_timed() -> None:
    metrics = Metrics(Tally())
    metrics.tally.observe(ev("solved", service="omocaptcha-v1", elapsed_ms=2000))
    metrics.tally.observe(ev("solved", service="omocaptcha-v1", elapsed_ms=3, cached=True))
    samples = scrape(metrics)
    assert of(samples, "captcha_solved_total") == {L(kind="rotate", service="omocaptcha-v1"): 2}
    assert of(samples, "captcha_answer_seconds_count") == {L(service="omocaptcha-v1"): 1}
    assert of(samples, "captcha_answer_seconds_sum") == {L(service="omocaptcha-v1"): 2.0}
