"""End to end: a real mitmdump with the addon, the origin on loopback under real host names, devices on their
own loopback addresses, over HTTP and HTTPS (HTTP/2 and HTTP/1.1), and the fake omocaptcha service."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.device import Device
from tests.kit.e2e import KEY, Run, plan_for, proxy, read_events, run_device
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

DEVICES = 16
PER_DEVICE = 3
ROLES = {"whirl": {"outer", "inner"}, "slide": {"background", "piece"}}
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=2026, count=DEVICES * PER_DEVICE)
    with OriginServer(d) as origin:
        yield origin, origin.app.challenges, d


async def fleet_run(p: Any, *, wait: bool, verify: bool, devices: int = DEVICES, http2_share: int = 2) -> list[Run]:
    fleet = [Device(f"127.0.0.{i + 2}", p.proxy_url, p.ca_path, http2=i % http2_share == 0) for i in range(devices)]
    try:
        results = await asyncio.gather(*(run_device(dev, plan_for(i, PER_DEVICE), wait=wait, verify=verify)
                                         for i, dev in enumerate(fleet)))
    finally:
        await asyncio.gather(*(dev.aclose() for dev in fleet))
    return [run for runs in results for run in runs]


def check_captured(runs: list[Run], events: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    captured = [e for e in events if e["event"] == "captured"]
    by_id = Counter(e["challenge"] for e in captured)
    assert len(runs) == DEVICES * PER_DEVICE
    assert not [e for e in events if e["event"] == "expired"]
    for run in runs:
        ch = run.challenge
        assert by_id[ch.id] == 1, f"{ch.id} captured {by_id[ch.id]} times"
        event = next(e for e in captured if e["challenge"] == ch.id)
        t = truth[ch.id]
        assert event["client"] == run.device
        assert event["kind"] == ("rotate" if ch.mode == "whirl" else "slide")
        assert set(event["images"]) == ROLES[ch.mode] == set(run.received)
        assert event["source"] == "get"
        for role, image in event["images"].items():
            assert image["sha256"] == t["images"][role]["sha256"] == run.received[role]
            assert (image["width"], image["height"]) == (t["images"][role]["width"], t["images"][role]["height"])
            assert image["format"] == t["images"][role]["format"]
        if ch.mode == "slide":
            assert event["tip_y"] == t["tip_y"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["run"] for e in events}) == 1


async def test_capture_only_fleet(kit: Any, tmp_path: Path) -> None:
    origin, truth, _ = kit
    start = time.monotonic()
    with proxy(origin, tmp_path, omocaptcha_key="") as p:
        runs = await fleet_run(p, wait=False, verify=False)
        stats = (await _api(p, "/v1/stats")).json()
    events = read_events(tmp_path / "events.jsonl")
    check_captured(runs, events, truth)
    assert {e["event"] for e in events} == {"captured"}
    assert stats["captured"] == len(runs) and stats["in_flight"] == 0 and stats["solving"] == "none"
    assert {r.scheme for r in runs} == {"http", "https"}
    print(f"capture-only: {len(runs)} challenges, {DEVICES} clients, {time.monotonic() - start:.1f}s")


async def test_solving_fleet_answers_ground_truth_and_passes_verify(kit: Any, tmp_path: Path) -> None:
    origin, truth, d = kit
    start = time.monotonic()
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=100,
    ) as p:
        passed_before = origin.stats()["verified"]["pass"]
        runs = await fleet_run(p, wait=True, verify=True)
        log_text = p.log_text()
    events = read_events(tmp_path / "events.jsonl")
    check_captured(runs, events, truth)
    finals = defaultdict(list)
    for e in events:
        if e["event"] in ("solved", "failed"):
            finals[e["challenge"]].append(e)
    for run in runs:
        ch, t = run.challenge, truth[run.challenge.id]
        [final] = finals[ch.id]
        assert final["event"] == "solved", final
        assert run.answer is not None and run.answer["seq"] == final["seq"]
        if ch.mode == "slide":
            assert abs(final["answer"]["x_natural"] - t["gap_x"]) <= 1.0
        else:
            assert final["result"] == str(round(t["drag_px"]))
        assert run.verified is True
    verified = [e for e in events if e["event"] == "verified"]
    assert len(verified) == len(runs) and all(e["accepted"] for e in verified)
    assert origin.stats()["verified"]["pass"] == passed_before + len(runs)
    assert KEY not in log_text and all(KEY not in json.dumps(e) for e in events)
    print(f"solving: {len(runs)} challenges, {DEVICES} clients, all correct, {time.monotonic() - start:.1f}s")


async def test_misbehaving_service_still_ends_every_challenge_once_within_its_deadline(kit: Any, tmp_path: Path) -> None:
    origin, truth, d = kit
    create_faults = {"http_500_after_create": 0.1, "http_502": 0.05}
    faults = {"getJobResult": {"http_500": 0.15, "non_json": 0.1, "http_429": 0.05, "unknown_status": 0.1,
                               "drop": 0.05},
              "createJob": create_faults}
    timeout = 8
    # Spread draws: each fault (and the unsolvable share) comes as often as its share says, to within one.
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),), faults=faults, fail_share=0.15, solve_seconds=0.5,
                        latency_ms=50, draw="spread", seed=3) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=150,
        captcha_timeout=timeout,
    ) as p:
        runs = await fleet_run(p, wait=False, verify=False)
        async with Device("127.0.0.200", p.proxy_url, p.ca_path) as watcher:
            async with asyncio.timeout(120):
                while True:
                    stats = (await watcher.api("/v1/stats")).json()
                    if stats["captured"] == len(runs) and stats["in_flight"] == 0:
                        break
                    await asyncio.sleep(0.1)
        service = fake.stats()
        creates = [r for r in fake.log() if r["path"].endswith("createJob")]
    events = read_events(tmp_path / "events.jsonl")
    check_captured(runs, events, truth)
    captured_at = {e["challenge"]: e["time"] for e in events if e["event"] == "captured"}
    finals = [e for e in events if e["event"] in ("solved", "failed")]
    assert sorted(e["challenge"] for e in finals) == sorted(captured_at)
    for e in finals:
        assert _seconds_between(captured_at[e["challenge"]], e["time"]) <= timeout + 1.0
    # What the fake was told to do, job by job: none of these creates may be sent again (each may have been
    # charged), a faulted create ends its challenge as api_error, every other job as the fake decided it.
    assert len(creates) == len(runs) == service["jobs"]["created"] + Counter(r["fault"] for r in creates)["http_502"]
    faulted = Counter(r["fault"] for r in creates if r["fault"])
    assert set(faulted) == set(create_faults)
    for name, share in create_faults.items():
        assert abs(faulted[name] - share * len(creates)) < 1, faulted
    jobs = service["polls"]["per_job"]
    answered = {r["job_id"]: jobs[str(r["job_id"])] for r in creates if r["fault"] is None}
    assert abs(service["jobs"]["failed"] - 0.15 * service["jobs"]["created"]) < 1
    for e in finals:
        if e["event"] == "solved":
            assert answered[e["job_id"]]["status"] == "success" and e["result"] == answered[e["job_id"]]["result"], e
        elif e["reason"] == "unsolvable":
            assert answered[e["job_id"]]["status"] == "fail", e
        else:
            assert (e["reason"], e["job_id"]) == ("api_error", None), e
    reasons = Counter(e.get("reason", "solved") for e in finals)
    assert reasons == {
        "solved": sum(j["status"] == "success" for j in answered.values()),
        "unsolvable": sum(j["status"] == "fail" for j in answered.values()),
        "api_error": sum(faulted.values()),
    }, reasons
    print(f"misbehaving service: {len(runs)} challenges, outcomes {dict(reasons)}, create faults {dict(faulted)}")


async def _api(p: Any, path: str, ip: str = "127.0.0.200", **params: Any) -> Any:
    async with Device(ip, p.proxy_url, p.ca_path) as dev:
        return await dev.api(path, **params)


def _seconds_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
