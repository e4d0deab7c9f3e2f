"""End to end, client keys: with `captcha_client_key=header:NAME`, devices whose image fetches lack the header are
still told apart by the connection that carried it, through a real mitmdump."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.device import Challenge, Device
from tests.kit.e2e import proxy
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

HEADER = "X-Device-Id"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginServer]:
    # One whirl: every get after the first hands it out again under a fresh id with the same image paths, so
    # two devices hold two challenges whose images only the client key can tell apart.
    d = tmp_path_factory.mktemp("one-whirl")
    generate(d, seed=15, count=1)
    with OriginServer(d) as o:
        yield o


async def get_with_header(device: Device) -> Challenge:
    """The get carries the device header; the device's other requests do not unless told to."""
    device.client.headers[HEADER] = device.device_id
    try:
        return await device.get_challenge("whirl", scheme="http")
    finally:
        del device.client.headers[HEADER]


async def fetch(device: Device, url: str, with_header: bool) -> None:
    r = await device.client.get(url, headers={HEADER: device.device_id} if with_header else None)
    assert r.status_code == 200


async def test_image_fetches_without_the_header_belong_to_the_device_of_their_connection(
        origin: Any, tmp_path: Path) -> None:
    with proxy(origin, tmp_path, captcha_client_key=f"header:{HEADER}") as p:
        # Two devices behind one address, each with connections of its own.
        a = Device("127.0.0.66", p.proxy_url, p.ca_path, device_id="phone-A", http2=False)
        b = Device("127.0.0.66", p.proxy_url, p.ca_path, device_id="phone-B", http2=False)
        expected: set[tuple[str, str]] = set()
        try:
            # Round 1: only the first image fetch on each device's image connection carries the header.
            ch_a, ch_b = await get_with_header(a), await get_with_header(b)
            assert ch_a.id != ch_b.id and ch_a.urls() == ch_b.urls()
            first, second = ch_a.urls().values()
            await fetch(a, first, with_header=True)
            await fetch(b, first, with_header=True)
            await fetch(a, second, with_header=False)
            await fetch(b, second, with_header=False)
            expected |= {(ch_a.id, "phone-A"), (ch_b.id, "phone-B")}
            # Round 2, the other device first: no image fetch carries the header; the connections still name them.
            ch_b, ch_a = await get_with_header(b), await get_with_header(a)
            assert ch_a.urls() == ch_b.urls() == {"outer": first, "inner": second}
            await fetch(b, second, with_header=False)
            await fetch(a, second, with_header=False)
            await fetch(b, first, with_header=False)
            await fetch(a, first, with_header=False)
            expected |= {(ch_a.id, "phone-A"), (ch_b.id, "phone-B")}
            # The premise: each device kept one connection for its gets and one for its images.
            assert a.transport.backend.connections == b.transport.backend.connections == 2
        finally:
            await a.aclose()
            await b.aclose()
        async with Device("127.0.0.67", p.proxy_url, p.ca_path) as watcher:
            events = (await watcher.api("/v1/events", limit=100)).json()["events"]
            stats_a = (await watcher.api("/v1/stats", client="phone-A")).json()
    assert {(e["challenge"], e["client"]) for e in events if e["event"] == "captured"} == expected
    assert [e for e in events if e["event"] != "captured"] == []
    assert stats_a["captured"] == 2
