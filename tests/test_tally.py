"""The one tally of events: /v1/stats (totals, one client's, by_service) and /metrics read the same counts."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.publish.metrics import Metrics
from addon.publish.tally import LATENCY_SAMPLES, Tally
from addon.solving.base import RotateAnswer

NONE = {"captured": 0, "solved": 0, "failed": {}, "expired": 0, "verified": 0}


def solved(client: str, service: str, elapsed_ms: int, kind: str = "rotate", **more: Any) -> ev.Solved:
    return ev.Solved(client=client, challenge="c", kind=kind, service=service, job_id=None, result="90",
                     answer=RotateAnswer.from_angle(90), elapsed_ms=elapsed_ms, **more)


def failed(client: str, reason: str, service: str | None = None, kind: str = "rotate") -> ev.Failed:
    return ev.Failed(client=client, challenge="c", kind=kind, reason=reason, message="", service=service)


def verified(client: str, accepted: bool, service: str | None, kind: str = "rotate") -> ev.Verified:
    return ev.Verified(client=client, challenge="c", kind=kind, accepted=accepted, service=service)


def captured(client: str, kind: str = "rotate") -> ev.Captured:
    return ev.Captured(client=client, challenge="c", kind=kind, images={}, source="get")


def fed(*events: ev.Event, tally: Tally | None = None) -> Tally:
    tally = tally or Tally()
    bus = EventBus(run="r")
    bus.subscribe("tally", tally)
    for event in events:
        bus.emit(event)
    return tally


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.exposition()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and all((k, m) in labels for k, m in match.items()))


EVENTS: list[ev.Event] = [
    captured("a"), captured("a", "slide"), captured("b"), captured("b", "3d"),
    solved("a", "omocaptcha-v1", 1200), solved("a", "local", 30, "slide"), solved("b", "omocaptcha-v1", 5, cached=True),
    failed("b", "timeout"), failed("b", "api_error", "omocaptcha-v2", "3d"),
    ev.Expired(client="a", challenge="x", kind=None, images={}, reason="window"),
    verified("a", True, "omocaptcha-v1"), verified("a", False, "local", "slide"), verified("b", False, None),
    ev.Solving(client="a", challenge="c", kind="rotate", service="local", job_id=None),
]


def test_stats_of_the_proxy_and_of_each_client() -> None:
    tally = fed(*EVENTS)
    assert tally.stats() == {"captured": 4, "solved": 3, "failed": {"timeout": 1, "api_error": 1}, "expired": 1,
                             "verified": 3}
    assert tally.client_stats("a") == {**NONE, "captured": 2, "solved": 2, "expired": 1, "verified": 2}
    assert tally.client_stats("b") == {"captured": 2, "solved": 1, "failed": {"timeout": 1, "api_error": 1},
                                       "expired": 0, "verified": 1}
    assert tally.client_stats("nobody") == NONE


def test_by_service_per_kind() -> None:
    tally = fed(*EVENTS)
    assert tally.by_service({"omocaptcha-v1": {"rotate": 2}, "omocaptcha-v2": {}}) == {
        "local": {"slide": {"solved": 1, "failed": 0, "accepted": 0, "rejected": 1, "acceptance": 0.0,
                            "p50_ms": 30, "cached": 0}},
        "omocaptcha-v1": {"rotate": {"solved": 2, "failed": 0, "accepted": 1, "rejected": 0, "acceptance": 1.0,
                                     "p50_ms": 1200, "cached": 1, "jobs_sent": 2}},
        "omocaptcha-v2": {"3d": {"solved": 0, "failed": 1, "accepted": 0, "rejected": 0, "acceptance": None,
                                 "p50_ms": None, "cached": 0, "jobs_sent": 0}},
    }


def test_p50_of_the_latest_answers_only() -> None:
    tally = fed(*[solved("a", "local", 1000) for _ in range(LATENCY_SAMPLES)], *[solved("a", "local", 2) for _ in range(
        LATENCY_SAMPLES // 2 + 1)])
    assert tally.by_service({})["local"]["rotate"]["p50_ms"] == 2
    assert tally.by_service({})["local"]["rotate"]["solved"] == LATENCY_SAMPLES * 3 // 2 + 1


def test_metrics_and_stats_are_the_same_numbers() -> None:
    for by_client in (False, True):
        tally = fed(*EVENTS)
        samples, stats = scrape(Metrics(tally, by_client=by_client)), tally.stats()
        for name in ("captured", "solved", "expired", "verified"):
            assert total(samples, f"captcha_{name}_total") == stats[name], (by_client, name)
        for reason, n in stats["failed"].items():
            assert total(samples, "captcha_failed_total", reason=reason) == n
        for client in ("a", "b"):
            of = tally.client_stats(client)
            assert total(samples, "captcha_captured_total", client=client) == (of["captured"] if by_client else 0)
        for service, kinds in tally.by_service({}).items():
            for kind, row in kinds.items():
                assert total(samples, "captcha_solved_total", service=service, kind=kind) == row["solved"]
                assert total(samples, "captcha_verified_total", service=service, kind=kind,
                             outcome="rejected") == row["rejected"]


def test_clients_are_bounded_least_recently_seen_first() -> None:
    tally = fed(captured("a"), captured("b"), captured("a"), captured("c"), tally=Tally(max_clients=2))
    assert tally.client_stats("b") == NONE  # b was seen least recently when c came
    assert tally.client_stats("a")["captured"] == 2 and tally.client_stats("c")["captured"] == 1
    assert tally.stats()["captured"] == 4  # the proxy's totals forget nothing


def test_counts_since_a_mark_and_a_client_forgotten_meanwhile() -> None:
    tally = fed(captured("a"), captured("a"), captured("b"), tally=Tally(max_clients=2))
    mark = tally.mark()
    fed(captured("a"), captured("c"), captured("b"), tally=tally)  # c pushes b out, then b pushes a out
    assert tally.read(False, mark).counters["captured"] == {("rotate",): 3}
    # b came back after the mark, so all of its counts are since; a is forgotten; c is new.
    assert tally.read(True, mark).counters["captured"] == {("rotate", "b"): 1, ("rotate", "c"): 1}
    fed(captured("a"), tally=tally)  # a comes back: its new counts are all since the mark
    assert tally.read(True, mark).counters["captured"] == {("rotate", "b"): 1, ("rotate", "a"): 1}
