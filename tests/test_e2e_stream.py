"""End to end, the event stream: Server-Sent Events through a real mitmdump, live and resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.device import Device
from tests.kit.e2e import proxy
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(120)
TOKEN = "stream-token-5e1f"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=31, count=12)
    with OriginServer(d) as origin:
        yield origin, d


async def sse(response: httpx.Response) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """(id, event) pairs as they arrive; comments (keep-alives) and the retry hint are skipped."""
    event_id, data = None, None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            assert event_id == data["seq"]
            yield event_id, data
            event_id, data = None, None


async def collect(device: Device, n: int, scheme: str = "http", ready: asyncio.Event | None = None,
                  **headers: str) -> list[dict[str, Any]]:
    """The first n events of a stream; `ready` is set once the stream is open (the server listens by then)."""
    got: list[dict[str, Any]] = []
    url = f"{scheme}://captcha.mitm/v1/events/stream"
    async with device.client.stream("GET", url, headers=headers, timeout=httpx.Timeout(30)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        if ready is not None:
            ready.set()
        async for _, event in sse(r):
            got.append(event)
            if len(got) == n:
                break
    return got


async def challenge(device: Device, mode: str) -> str:
    ch = await device.get_challenge(mode)
    await device.fetch_images(ch)
    return ch.id


async def test_live_events_then_exactly_the_missed_ones_on_resume(kit: Any, tmp_path: Path) -> None:
    origin, _ = kit
    with proxy(origin, tmp_path) as p:
        watcher = Device("127.0.0.2", p.proxy_url, p.ca_path)
        phone = Device("127.0.0.3", p.proxy_url, p.ca_path)
        for scheme in ("http", "https"):
            ready = asyncio.Event()
            live = asyncio.create_task(collect(watcher, 2, scheme, ready))
            await ready.wait()
            ids = [await challenge(phone, "whirl"), await challenge(phone, "slide")]
            events = await live
            assert [(e["event"], e["challenge"], e["client"]) for e in events] == [
                ("captured", ids[0], phone.ip), ("captured", ids[1], phone.ip)]
        last_seen = events[-1]["seq"]
        missed = [await challenge(phone, "whirl"), await challenge(phone, "slide")]
        resumed = await collect(watcher, 2, **{"Last-Event-ID": str(last_seen)})
        assert [e["challenge"] for e in resumed] == missed
        assert [e["seq"] for e in resumed] == [last_seen + 1, last_seen + 2]
        # Resuming from the start gives everything held, in order, once.
        everything = await collect(watcher, 6, **{"Last-Event-ID": "0"})
        assert [e["seq"] for e in everything] == list(range(1, 7))
        await watcher.aclose()
        await phone.aclose()


async def test_the_stream_filters_by_client_and_wants_the_token(kit: Any, tmp_path: Path) -> None:
    origin, _ = kit
    with proxy(origin, tmp_path, captcha_api_token=TOKEN) as p:
        watcher = Device("127.0.0.2", p.proxy_url, p.ca_path)
        phones = [Device(f"127.0.0.{i}", p.proxy_url, p.ca_path) for i in (3, 4)]
        r = await watcher.api("/v1/events/stream")
        assert (r.status_code, r.json()) == (401, {"error": "unauthorized"})
        auth = {"Authorization": f"Bearer {TOKEN}"}
        url = f"http://captcha.mitm/v1/events/stream?client={phones[1].ip}"

        ready = asyncio.Event()

        async def only_second() -> list[dict[str, Any]]:
            async with watcher.client.stream("GET", url, headers=auth) as r:
                ready.set()
                return [e async for _, e in _take(sse(r), 1)]

        live = asyncio.create_task(only_second())
        await ready.wait()
        await challenge(phones[0], "whirl")
        mine = await challenge(phones[1], "slide")
        [event] = await live
        assert (event["client"], event["challenge"]) == (phones[1].ip, mine)
        for d in (watcher, *phones):
            await d.aclose()


async def _take(events: AsyncIterator[tuple[int, dict[str, Any]]], n: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    count = 0
    async for item in events:
        yield item
        count += 1
        if count == n:
            return
