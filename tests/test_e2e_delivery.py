"""End to end, delivery: the HTTP API for the device itself and for a fleet controller, the token, held
responses, and the conversion of answers to a caller's own geometry, all through a real mitmdump."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.kit.device import Device
from tests.kit.e2e import KEY, plan_for, proxy, run_device
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=77, count=60)
    with OriginServer(d) as origin:
        yield origin, origin.app.challenges, d


async def test_device_and_fleet_views(kit: Any, tmp_path: Path) -> None:
    origin, _truth, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),), solve_seconds=0.3) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=100,
    ) as p:
        devices = [Device(f"127.0.0.{i + 2}", p.proxy_url, p.ca_path) for i in range(21)]
        watcher = devices[0]
        latencies: list[float] = []

        async def watch_own_answer() -> dict[str, Any]:
            r = await watcher.api("/v1/answer/wait", after=0, timeout=30)
            latencies.append(datetime.now(UTC).timestamp())
            return dict(r.json())

        # Started before any challenge: it can only end with the watcher's first answer (a 204 has no JSON).
        waiting = asyncio.create_task(watch_own_answer())
        results = await asyncio.gather(*(run_device(dev, plan_for(i, 2), wait=True, verify=False)
                                         for i, dev in enumerate(devices)))
        own = await waiting
        first_own = results[0][0]
        assert own["client"] == watcher.ip and own["challenge"] == first_own.challenge.id and own["event"] == "solved"
        event_time = datetime.fromisoformat(own["time"]).timestamp()
        print(f"long poll returned {1000 * (latencies[0] - event_time):.1f} ms after the final event")

        controller = Device("127.0.0.250", p.proxy_url, p.ca_path)
        for i, dev in enumerate(devices[:5]):
            mine = [run.challenge.id for run in results[i]]
            latest = (await controller.api("/v1/answer", client=dev.ip)).json()
            assert latest["client"] == dev.ip and latest["challenge"] == mine[-1]
            walked, after = [], 0
            while True:
                r = await controller.api("/v1/answer/wait", client=dev.ip, after=after, timeout=0.2)
                if r.status_code == 204:
                    break
                walked.append(r.json()["challenge"])
                after = r.json()["seq"]
            assert walked == mine
            events = (await controller.api("/v1/events", client=dev.ip, limit=100)).json()["events"]
            assert {e["client"] for e in events} == {dev.ip}
            assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
        assert (await controller.api("/v1/answer")).status_code == 404
        mine = (await controller.api("/v1/stats", client=devices[3].ip)).json()
        assert mine == {"client": devices[3].ip, "captured": 2, "solved": 2, "failed": {}, "expired": 0,
                        "verified": 0, "in_flight": 0}
        stats = (await controller.api("/v1/stats")).json()
        assert stats["captured"] == stats["solved"] == 42 and stats["in_flight"] == 0
        assert stats["jobs_sent"] == 42
        await asyncio.gather(*(dev.aclose() for dev in [*devices, controller]))


async def test_token_is_required_over_http_and_https(kit: Any, tmp_path: Path) -> None:
    origin, _, _ = kit
    with proxy(origin, tmp_path, captcha_api_token="s3cret-tok") as p:
        async with Device("127.0.0.9", p.proxy_url, p.ca_path) as dev:
            for scheme in ("http", "https"):
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-tok"}):
                    r = await dev.api("/v1/stats", scheme=scheme, headers=headers)
                    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
                ok = await dev.api("/v1/stats", scheme=scheme, headers={"Authorization": "Bearer s3cret-tok"})
                assert ok.status_code == 200 and "captured" in ok.json()
        assert "captcha.mitm" not in origin.stats()["hosts"]


async def test_held_response_carries_the_answer_and_nothing_else_waits(kit: Any, tmp_path: Path) -> None:
    origin, truth, d = kit
    # Jobs never finish on their own: the test releases them once it has seen the rest of the traffic go through.
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),), solve_seconds=3600) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=100,
        captcha_hold=True,
    ) as p:
        async with Device("127.0.0.30", p.proxy_url, p.ca_path) as dev:
            for n, mode in enumerate(("whirl", "slide"), start=1):
                ch = await dev.get_challenge(mode)
                urls = list(ch.urls().values())
                first = await dev.client.get(urls[0])
                assert "x-captcha-answer" not in first.headers
                held = asyncio.create_task(dev.client.get(urls[1]))
                await until(lambda n=n: fake.stats()["jobs"]["created"] == n)  # captured, its job at the service
                t0 = time.monotonic()
                again = await dev.client.get(urls[0])
                plain = await dev.get_plain("/plain/json")
                quick = time.monotonic() - t0
                assert again.status_code == plain.status_code == 200 and "x-captcha-answer" not in again.headers
                assert not held.done()  # its job cannot have finished: only the test ends it
                release_jobs(fake)
                response = await held
                answer = json.loads(response.headers["x-captcha-answer"])
                assert answer["event"] == "solved" and answer["challenge"] == ch.id and answer["client"] == dev.ip
                assert response.content == (d / truth[ch.id]["images"][ch.roles[1]]["file"]).read_bytes()
                print(f"{mode}: while held, the same device's other requests took {quick * 1000:.0f} ms")


async def until(condition: Callable[[], bool], limit: float = 30) -> None:
    """A bounded poll on a condition of another process or thread."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.02)


def release_jobs(fake: FakeOmocaptcha) -> None:
    """Makes every job of the fake service final now (a test's gate on jobs made with a long solve time)."""
    with fake.state.lock:
        for job in fake.state.jobs.values():
            job.ready_at = 0.0


async def test_drag_conversion_passes_the_sites_verify(kit: Any, tmp_path: Path) -> None:
    origin, truth, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.40", p.proxy_url, p.ca_path) as dev:
            for width in (276, 340, 552):
                ch = await dev.get_challenge("slide")
                await dev.fetch_images(ch)
                event = (await dev.api("/v1/answer/wait", timeout=20, width=width)).json()
                drag = event["drag"]
                assert drag["width"] == width
                assert abs(drag["x"] * 552 / width - truth[ch.id]["gap_x"]) <= 1.5
                assert await dev.verify(ch, drag["x"], width=width)
            ch = await dev.get_challenge("whirl")
            await dev.fetch_images(ch)
            event = (await dev.api("/v1/answer/wait", timeout=20, track=340, handle=69)).json()
            assert event["drag"]["travel"] == 271
            assert abs(event["drag"]["angle"] - truth[ch.id]["angle"]) <= 1.5
            assert await dev.verify(ch, event["drag"]["x"])
            r = await dev.api("/v1/answer", track="x")
            assert "drag" not in r.json()




async def test_example_client_prints_the_drag_for_its_device(kit: Any, tmp_path: Path) -> None:
    import sys

    origin, truth, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),), solve_seconds=0.2) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_poll_ms=50,
    ) as p:
        example = await asyncio.create_subprocess_exec(
            sys.executable, "scripts/example_client.py", "--proxy", p.proxy_url, "--client", "127.0.0.50",
            "--width", "340", "--once", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # It reads where to start from before it waits: the device starts once it says so.
        assert example.stderr is not None
        started = await asyncio.wait_for(example.stderr.readline(), 60)
        assert started.startswith(b"waiting for answers after event 0"), started
        async with Device("127.0.0.50", p.proxy_url, p.ca_path) as dev:
            ch = await dev.get_challenge("slide")
            await dev.fetch_images(ch)
        out, err = await asyncio.wait_for(example.communicate(), 30)
    assert example.returncode == 0, err
    line = out.decode().strip()
    assert line.startswith(f"127.0.0.50 slide {ch.id}: drag the slider ") and "px on a 340-px puzzle" in line
    x = float(line.split("drag the slider ")[1].split()[0])
    assert abs(x * 552 / 340 - truth[ch.id]["gap_x"]) <= 1.5
