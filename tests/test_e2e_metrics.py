"""End to end, `/metrics`: after a run with solved, failed (two reasons), expired and verified challenges through a
real mitmdump, the scrape parsed with prometheus-client's own parsers says exactly what `/v1/stats` and the
events say."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from addon.publish.metrics import ANSWER_BUCKETS
from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(90)
SERVICE = "omocaptcha-v1"

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=61, count=10)
    with OriginServer(d) as origin:
        yield origin, d


def parse(text: str, openmetrics: bool = False) -> Samples:
    """sample name -> [(labels, value)], every family of the scrape."""
    families = openmetrics_families(text) if openmetrics else text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    out: Samples = {}
    for family in families:
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def by(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        if all(labels.get(k) == m for k, m in match.items()) and v:
            out[labels[label]] = out.get(labels[label], 0.0) + v
    return out


async def solve(device: Device, mode: str) -> tuple[Challenge, dict[str, Any]]:
    ch = await device.get_challenge(mode)
    await device.fetch_images(ch)
    r = await device.api("/v1/answer/wait", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    event: dict[str, Any] = r.json()
    assert event["challenge"] == ch.id, event
    return ch, event


async def verify(device: Device, ch: Challenge, event: dict[str, Any], right: bool) -> bool:
    answer = event["answer"]
    if ch.mode == "slide":
        x = answer["x"] if right else (answer["x"] + 110) % answer["width_view"]
        return await device.verify(ch, x, width=answer["width_view"])
    return await device.verify(ch, float(answer["value"]) if right else (float(answer["value"]) + 135) % 271)


@pytest.mark.parametrize("by_client", [False, True], ids=["totals", "by-client"])
async def test_metrics_match_stats_and_events_exactly(kit: Any, tmp_path: Path, by_client: bool) -> None:
    origin, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=50, captcha_metrics_by_client=by_client,
    ) as p:
        a, b, c = (Device(f"127.0.0.{i}", p.proxy_url, p.ca_path) for i in (2, 3, 4))
        # a: five solved, three of them judged by the site (two accepted, one rejected).
        judged = []
        for mode in ("whirl", "slide", "whirl", "slide", "whirl"):
            judged.append(await solve(a, mode))
        assert all(e["event"] == "solved" for _, e in judged)
        assert await verify(a, *judged[0], right=True)
        assert await verify(a, *judged[1], right=True)
        assert not await verify(a, *judged[2], right=False)
        # b: two the service cannot solve, then one whose job it answers in the wrong shape.
        fake.control(fail_share=1.0)
        unsolvable = [await solve(b, "whirl"), await solve(b, "slide")]
        fake.control(fail_share=0.0, faults={"createJob": {"wrong_shape": 1.0}})
        broken = await solve(b, "slide")
        fake.control(faults={})
        assert [e.get("reason") for _, e in [*unsolvable, broken]] == ["unsolvable", "unsolvable", "api_error"]
        # c: a whirl abandoned after its ring (the next get replaces it: expired), then one solved.
        left = await c.get_challenge("whirl")
        await c.client.get(left.urls()["outer"])
        _, last = await solve(c, "whirl")
        assert last["event"] == "solved"

        stats = (await a.api("/v1/stats")).json()
        assert (stats["captured"], stats["solved"], stats["expired"], stats["verified"]) == (9, 6, 1, 3)
        assert stats["failed"] == {"unsolvable": 2, "api_error": 1}
        assert (stats["in_flight"], stats["waiting"]) == (0, 0)
        events = (await a.api("/v1/events", limit=1000)).json()["events"]
        solved = [e for e in events if e["event"] == "solved" and not e.get("cached")]
        assert len(solved) == 6

        r = await a.api("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        m = parse(r.text)
        om = await a.api("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")

        for samples in (m, parse(om.text, openmetrics=True)):
            assert by(samples, "captcha_captured_total", "kind") == {"rotate": 5, "slide": 4}
            # Every kind has its series from the start (at 0), so a dashboard's query finds the object kinds too
            # (by client, a series starts with the client's first event).
            assert {labels["kind"]: v for labels, v in samples["captcha_captured_total"]
                    if labels["kind"] in ("3d", "icon")} == ({} if by_client else {"3d": 0, "icon": 0})
            assert total(samples, "captcha_captured_total") == stats["captured"]
            assert by(samples, "captcha_solved_total", "kind", service=SERVICE) == {"rotate": 4, "slide": 2}
            assert total(samples, "captcha_solved_total") == stats["solved"]
            assert by(samples, "captcha_failed_total", "reason", service=SERVICE) == stats["failed"]
            assert by(samples, "captcha_failed_total", "kind") == {"rotate": 1, "slide": 2}
            assert by(samples, "captcha_expired_total", "reason") == {"replaced": 1}
            assert total(samples, "captcha_expired_total") == stats["expired"]
            assert by(samples, "captcha_verified_total", "outcome", service=SERVICE) == {"accepted": 2, "rejected": 1}
            assert total(samples, "captcha_verified_total") == stats["verified"]
            judged_by_service = stats["by_service"][SERVICE]
            assert by(samples, "captcha_verified_total", "outcome") == {
                "accepted": sum(k["accepted"] for k in judged_by_service.values()),
                "rejected": sum(k["rejected"] for k in judged_by_service.values())}

        # The histogram holds exactly the solved events' elapsed times, bucket by bucket.
        assert total(m, "captcha_answer_seconds_count", service=SERVICE) == len(solved) == stats["solved"]
        seconds = [e["elapsed_ms"] / 1000 for e in solved]
        assert math.isclose(total(m, "captcha_answer_seconds_sum", service=SERVICE), sum(seconds), rel_tol=1e-9)
        per_bucket = Counter(bisect.bisect_left(ANSWER_BUCKETS, s) for s in seconds)
        cumulative, expected = 0, {}
        for i, bound in enumerate((*ANSWER_BUCKETS, math.inf)):
            cumulative += per_bucket[i]
            expected["+Inf" if math.isinf(bound) else repr(bound)] = cumulative
        got = {labels["le"]: v for labels, v in m["captcha_answer_seconds_bucket"] if labels["service"] == SERVICE}
        assert {float(k): v for k, v in got.items()} == {float(k): v for k, v in expected.items()}

        assert total(m, "captcha_jobs_in_flight") == stats["in_flight"] == 0
        assert total(m, "captcha_jobs_waiting") == stats["waiting"] == 0
        assert {labels["service"]: v for labels, v in m["captcha_balance_usd"]} == {
            service: float(balance) for service, balance in stats["balance"].items()}
        assert stats["balance"], "the service's balance should be known once its key was checked"

        if by_client:
            for device in (a, b, c):
                mine = (await a.api("/v1/stats", client=device.ip)).json()
                ip = device.ip
                assert total(m, "captcha_captured_total", client=ip) == mine["captured"]
                assert total(m, "captcha_solved_total", client=ip) == mine["solved"]
                assert by(m, "captcha_failed_total", "reason", client=ip) == mine["failed"]
                assert total(m, "captcha_expired_total", client=ip) == mine["expired"]
                assert total(m, "captcha_verified_total", client=ip) == mine["verified"]
        else:
            assert all("client" not in labels for samples in m.values() for labels, _ in samples)
        for device in (a, b, c):
            await device.aclose()
