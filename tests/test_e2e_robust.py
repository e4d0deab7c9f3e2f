"""End to end, robustness: load, hostile images, shutdown, and the service key never leaking."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.device import Device
from tests.kit.e2e import KEY, proxy, read_events
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def challenges(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=5, count=40)
    return d, {c["id"]: c for c in json.loads((d / "manifest.json").read_text())["challenges"]}


@pytest.fixture(scope="module")
def origin(challenges: tuple[Path, dict[str, Any]]) -> Iterator[Any]:
    with OriginServer(challenges[0]) as o:
        yield o


async def wait_until_settled(dev: Device, captured: int, limit: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        stats = dict((await dev.api("/v1/stats")).json())
        if stats["captured"] >= captured and stats["in_flight"] == 0:
            return stats
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.25)


async def test_load_200_challenges_from_100_clients(origin: Any, challenges: Any, tmp_path: Path) -> None:
    d, _ = challenges
    clients, each = 100, 2
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=100,
        captcha_max_jobs=32, captcha_max_waiting=40, captcha_timeout=60,
    ) as p:
        devices = [Device(f"127.0.1.{i + 1}", p.proxy_url, p.ca_path, http2=False) for i in range(clients)]
        plain = Device("127.0.2.1", p.proxy_url, p.ca_path)
        watcher = Device("127.0.2.2", p.proxy_url, p.ca_path)
        plain_latencies: list[float] = []
        waiting_seen: list[int] = []
        done = asyncio.Event()

        async def device_loop(dev: Device, n: int) -> None:
            for k in range(each):
                ch = await dev.get_challenge(("whirl", "slide")[(n + k) % 2], shape=("single", "edata")[k % 2])
                await dev.fetch_images(ch)

        async def plain_loop() -> None:
            while not done.is_set():
                t = time.monotonic()
                r = await plain.get_plain("/plain/json")
                assert r.status_code == 200
                plain_latencies.append(time.monotonic() - t)
                waiting_seen.append((await watcher.api("/v1/stats")).json()["waiting"])
                await asyncio.sleep(0.05)

        background = asyncio.create_task(plain_loop())
        start = time.monotonic()
        await asyncio.gather(*(device_loop(dev, n) for n, dev in enumerate(devices)))
        arrival = time.monotonic() - start
        stats = await wait_until_settled(watcher, clients * each)
        done.set()
        await background
        await asyncio.gather(*(dev.aclose() for dev in [*devices, plain, watcher]))
    events = read_events(tmp_path / "events.jsonl")
    captured = [e["challenge"] for e in events if e["event"] == "captured"]
    finals = Counter(e["challenge"] for e in events if e["event"] in ("solved", "failed"))
    reasons = Counter(e.get("reason", "solved") for e in events if e["event"] in ("solved", "failed"))
    assert len(captured) == len(set(captured)) == clients * each
    assert set(finals) == set(captured) and set(finals.values()) == {1}
    # The fake service runs in this test's process, beside 100 devices: on a loaded machine a createJob can go
    # unanswered within the client's timeout, which the addon rightly ends as api_error (never paid twice). Any
    # other failure is a finding.
    others = [e for e in events if e["event"] == "failed" and e["reason"] != "overloaded"
              and not (e["reason"] == "api_error" and "no answer in time" in e["message"])]
    assert not others, others[:5]
    assert set(reasons) <= {"solved", "overloaded", "api_error"}, reasons
    assert max(waiting_seen) <= 40 and stats["in_flight"] == 0
    assert plain_latencies and max(plain_latencies) < 10
    print(f"load: {len(captured)} challenges from {clients} clients arrived in {arrival:.1f}s; outcomes "
          f"{dict(reasons)}; plain requests during load: {len(plain_latencies)}, median "
          f"{statistics.median(plain_latencies) * 1000:.0f} ms, max {max(plain_latencies) * 1000:.0f} ms; "
          f"most waiting {max(waiting_seen)}")


async def test_hostile_images_pass_untouched(challenges: Any, tmp_path: Path) -> None:
    d, truth = challenges
    hostile = tmp_path / "hostile"
    shutil.copytree(d, hostile)
    whirls = [c for c in truth.values() if c["mode"] == "whirl"]
    truncated, garbage = whirls[0], whirls[1]
    outer = hostile / truncated["images"]["outer"]["file"]
    outer.write_bytes(outer.read_bytes()[: outer.stat().st_size // 3])
    (hostile / garbage["images"]["inner"]["file"]).write_bytes(b"<html>503 Service Unavailable</html>")
    with OriginServer(hostile) as o, FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        o, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.60", p.proxy_url, p.ca_path) as dev:
            seen: dict[str, dict[str, bytes]] = {}
            for _ in range(len(whirls)):
                ch = await dev.get_challenge("whirl")
                seen[ch.id] = await dev.fetch_images(ch)
            # Every whole challenge and the cut one end in a final event; the one with garbage never is whole.
            await wait_until_settled(dev, len(whirls) - 1)
        log_text = p.log_text()
    for cid, images in seen.items():
        for role, body in images.items():
            assert body == (hostile / truth[cid]["images"][role]["file"]).read_bytes()
    events = read_events(tmp_path / "events.jsonl")
    by_challenge: dict[str, list[str]] = {}
    for e in events:
        by_challenge.setdefault(e["challenge"], []).append(e.get("reason") or e["event"])
    assert by_challenge[truncated["id"]] == ["captured", "bad_image"]
    # Its good outer waited for an inner that never came, until the device's next get replaced it.
    assert by_challenge[garbage["id"]] == ["replaced"]
    # No job for the cut one (its completeness is checked first) nor for the one never whole.
    assert len([r for r in fake.log() if r["path"].endswith("createJob")]) == len(whirls) - 2
    assert {cid: reasons for cid, reasons in by_challenge.items() if cid not in (truncated["id"], garbage["id"])} == {
        c["id"]: ["captured", "solving", "solved"] for c in whirls[2:]}
    assert "Traceback" not in log_text and "bad captcha image" in log_text


async def test_clean_stop_fails_every_challenge_in_flight(origin: Any, challenges: Any, tmp_path: Path) -> None:
    d, _ = challenges
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),), solve_seconds=120) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=200,
    ) as p:
        async with Device("127.0.0.70", p.proxy_url, p.ca_path) as dev:
            for mode in ("whirl", "slide", "whirl"):
                await dev.fetch_images(await dev.get_challenge(mode))
            deadline = time.monotonic() + 30
            while fake.stats()["jobs"]["created"] < 3:  # every challenge has its job at the service: in flight
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
    events = read_events(tmp_path / "events.jsonl")
    captured = {e["challenge"] for e in events if e["event"] == "captured"}
    failed = {e["challenge"]: e["reason"] for e in events if e["event"] == "failed"}
    assert len(captured) == 3 and failed == dict.fromkeys(captured, "shutdown")
    assert (tmp_path / "events.jsonl").read_bytes().endswith(b"\n")


async def test_the_key_never_appears_in_any_output(origin: Any, challenges: Any, tmp_path: Path) -> None:
    d, _ = challenges
    secret = "OMO-SECRET-9f8e7d6c5b4a"
    flows_file = tmp_path / "flows.mitm"
    outputs: list[str] = []
    with FakeOmocaptcha(keys=(secret,), manifests=(str(d),), faults={"getJobResult": {"http_500": 0.3}}) as fake:
        with proxy(origin, tmp_path, omocaptcha_key=secret, omocaptcha_url=fake.base_url, captcha_poll_ms=50,
                   save_stream_file=str(flows_file)) as p:
            async with Device("127.0.0.80", p.proxy_url, p.ca_path) as dev:
                for mode in ("whirl", "slide"):
                    await dev.fetch_images(await dev.get_challenge(mode))
                    outputs.append((await dev.api("/v1/answer/wait", timeout=20)).text)
                fake.control(invalid_keys=[secret])
                await dev.fetch_images(await dev.get_challenge("whirl"))
                outputs.append((await dev.api("/v1/answer/wait", timeout=20)).text)
                for path in ("/v1/events", "/v1/stats", "/v1/answer"):
                    outputs.append((await dev.api(path, limit=1000)).text)
            outputs.append(p.log_text())
        requests = fake.log()
    outputs.append((tmp_path / "events.jsonl").read_text())
    outputs.append(flows_file.read_bytes().decode("latin-1"))
    assert '"invalid_key"' in outputs[2]
    for text in outputs:
        assert secret not in text
    for r in requests:
        if r["path"].endswith("createJob"):
            assert set(r["body"]) == {"api_token", "data"}
            assert set(r["body"]["data"]) <= {"type_job_id", "image_base64", "width_view"}
            assert all("challenge" in part for part in r["body"]["data"]["image_base64"])
        else:
            assert set(r["body"]) <= {"api_token", "job_id"}


async def test_full_disk_keeps_the_proxy_and_the_api_working(origin: Any, tmp_path: Path) -> None:
    with proxy(origin, tmp_path, captcha_sidecar="/dev/full") as p:
        async with Device("127.0.0.90", p.proxy_url, p.ca_path) as dev:
            for mode in ("whirl", "slide", "whirl"):
                images = await dev.fetch_images(await dev.get_challenge(mode))
                assert images
            stats = (await dev.api("/v1/stats")).json()
            events = (await dev.api("/v1/events")).json()["events"]
        log_text = p.log_text()
    assert stats["captured"] == 3 and len(events) == 3
    assert log_text.count("cannot be written") == 1 and "No space left on device" in log_text
