"""End to end through a real mitmdump: omocaptcha v2, chains of solvers, the answer cache, and per-service
acceptance from the site's own verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(180)


def with_repeats(d: Path, copies: int) -> None:
    """Each mode's first challenge served `copies` more times under new ids: the same images, as a site that
    shows a device the same picture again does."""
    manifest = json.loads((d / "manifest.json").read_text())
    out = []
    for mode in ("whirl", "slide"):
        first = next(c for c in manifest["challenges"] if c["mode"] == mode)
        out += [first] + [{**first, "id": hashlib.sha1(f"{first['id']}/{n}".encode()).hexdigest()}
                          for n in range(copies)]
    out += [c for c in manifest["challenges"] if c["mode"] == "3d"]
    manifest["challenges"] = out
    (d / "manifest.json").write_text(json.dumps(manifest))


def with_concurrent_repeats(d: Path, sets: int, later: int) -> None:
    """Per mode, the first `sets` challenges each served twice in a row (the second under a new id), then the first
    one `later` more times: the same pictures on two devices at once, and again afterwards."""
    manifest = json.loads((d / "manifest.json").read_text())

    def again(c: dict[str, Any], n: int) -> dict[str, Any]:
        return {**c, "id": hashlib.sha1(f"{c['id']}/{n}".encode()).hexdigest()}

    out = []
    for mode in ("whirl", "slide"):
        firsts = [c for c in manifest["challenges"] if c["mode"] == mode][:sets]
        out += [x for c in firsts for x in (c, again(c, 0))] + [again(firsts[0], n) for n in range(1, later + 1)]
    manifest["challenges"] = out
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=5, count=12)
    with OriginServer(d) as origin:
        yield origin, origin.app.challenges, d


@pytest.fixture
def repeats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    d = tmp_path_factory.mktemp("repeats")
    generate(d, seed=9, count=1)
    with_repeats(d, copies=2)
    with OriginServer(d) as origin:
        yield origin, origin.app.challenges, d


async def solve(device: Device, mode: str) -> tuple[Challenge, dict[str, Any]]:
    ch = await device.get_challenge(mode)
    await device.fetch_images(ch)
    r = await device.api("/v1/answer/wait", timeout=30)
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["challenge"] == ch.id and event["event"] == "solved", event
    return ch, event


def drag(event: dict[str, Any], width: int) -> float:
    """The answer in the verify request's own units: slide x at `width`, whirl drag on the 271-px travel."""
    answer = event["answer"]
    return answer["fraction"] * width if event["kind"] == "slide" else answer["fraction"] * 271


async def test_v2_answers_pass_the_sites_verify_at_several_widths(kit: Any, tmp_path: Path) -> None:
    origin, truth, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_v2_url=fake.v2_base_url, captcha_solvers="omocaptcha-v2",
        captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.2", p.proxy_url, p.ca_path) as dev:
            for width in (276, 340, 552):
                for mode in ("whirl", "slide"):
                    ch, event = await solve(dev, mode)
                    assert (event["service"], event["tried"]) == ("omocaptcha-v2", ["omocaptcha-v2"])
                    if mode == "whirl":
                        error = (event["answer"]["angle"] - truth[ch.id]["angle"] + 180) % 360 - 180
                        assert abs(error) < 2.0, (event["answer"], truth[ch.id]["angle"])
                    assert await dev.verify(ch, drag(event, width), width=width)
            stats = (await dev.api("/v1/stats")).json()
        v2 = stats["by_service"]["omocaptcha-v2"]
        assert {k: (v["solved"], v["accepted"], v["rejected"], v["acceptance"], v["jobs_sent"]) for k, v in v2.items()} \
            == {"rotate": (3, 3, 0, 1.0, 3), "slide": (3, 3, 0, 1.0, 3)}
        assert [r["path"] for r in fake.log() if r["path"].startswith("/api/")] == []


async def test_v1_down_passes_every_challenge_to_v2(kit: Any, tmp_path: Path) -> None:
    origin, _, d = kit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=f"http://127.0.0.1:{closed_port}/api",
        omocaptcha_v2_url=fake.v2_base_url, captcha_solvers="omocaptcha,omocaptcha-v2", captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.3", p.proxy_url, p.ca_path) as dev:
            finals = [(await solve(dev, mode))[1] for mode in ("whirl", "slide", "whirl", "slide")]
            stats = (await dev.api("/v1/stats")).json()
    assert [f["service"] for f in finals] == ["omocaptcha-v2"] * 4
    # v1 is tried until the breaker calls it down (its start-up check and the first jobs are refused), then
    # skipped at once; each challenge is tried at most once per service.
    assert all(f["tried"] in (["omocaptcha-v1", "omocaptcha-v2"], ["omocaptcha-v2"]) for f in finals)
    assert finals[-1]["tried"] == ["omocaptcha-v2"]
    assert stats["services"]["omocaptcha-v1"]["down"] is True
    assert stats["solved"] == 4 and stats["failed"] == {}


async def test_repeats_are_paid_once_and_a_rejected_answer_moves_to_the_next_solver(
        repeats: Any, tmp_path: Path) -> None:
    origin, _, d = repeats
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, omocaptcha_v2_url=fake.v2_base_url,
        captcha_solvers="omocaptcha,omocaptcha-v2", captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.4", p.proxy_url, p.ca_path) as dev:
            for mode in ("whirl", "slide"):
                # 1: v1 answers; the device drags somewhere else, so the site says no.
                ch, first = await solve(dev, mode)
                assert (first["service"], first.get("cached")) == ("omocaptcha-v1", None)
                assert not await dev.verify(ch, drag(first, 340) + 60, width=340)
                # 2: the same images again: not v1 again (it was just wrong), and not the cache.
                ch, second = await solve(dev, mode)
                assert (second["service"], second["tried"], second.get("cached")) == (
                    "omocaptcha-v2", ["omocaptcha-v2"], None)
                assert await dev.verify(ch, drag(second, 340), width=340)
                # 3: once more: the accepted answer comes from the cache, with no job at all.
                ch, third = await solve(dev, mode)
                assert (third["service"], third["cached"], third["tried"]) == ("omocaptcha-v2", True, [])
                assert await dev.verify(ch, drag(third, 340), width=340)
            stats = (await dev.api("/v1/stats")).json()
            verified = [e for e in (await dev.api("/v1/events", limit=100)).json()["events"]
                        if e["event"] == "verified"]
        origin_verdicts = origin.stats()["verified"]
    jobs = [r for r in fake.log() if r["path"].endswith(("/createJob", "/createTask"))]
    assert len(jobs) == 4  # 6 challenges: one v1 job and one v2 task per mode
    # v2 hears how its own (not cached) answers fared; v1 has no such call.
    reports = [r["body"] for r in fake.log() if r["path"].endswith("/report")]
    assert sorted(r["isSuccess"] for r in reports) == [True, True] and all(len(r["id"]) == 1 for r in reports)
    assert stats["jobs_sent"] == 4 and stats["cache"]["hits"] == 2
    by = stats["by_service"]
    for kind in ("rotate", "slide"):
        assert (by["omocaptcha-v1"][kind]["accepted"], by["omocaptcha-v1"][kind]["rejected"]) == (0, 1)
        assert (by["omocaptcha-v2"][kind]["accepted"], by["omocaptcha-v2"][kind]["rejected"]) == (2, 0)
        assert by["omocaptcha-v2"][kind]["cached"] == 1
    assert origin_verdicts == {"pass": 4, "fail": 2}
    assert sorted((e["service"], e["cached"], e["accepted"]) for e in verified) == sorted(
        [("omocaptcha-v1", False, False), ("omocaptcha-v2", False, True), ("omocaptcha-v2", True, True)] * 2)


async def test_concurrent_repeats_are_paid_once_and_an_accepted_answer_after_a_rejection_is_reused(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    d = tmp_path_factory.mktemp("concurrent")
    generate(d, seed=13, count=4)
    with_concurrent_repeats(d, sets=4, later=3)
    with OriginServer(d) as origin, FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=20,
    ) as p:
        async with contextlib.AsyncExitStack() as stack:
            devices = [await stack.enter_async_context(Device(f"127.0.0.{40 + n}", p.proxy_url, p.ca_path))
                       for n in range(16)]
            # 8 image sets (4 whirl, 4 slide), each on two devices at once: the service holds every job running
            # until all 16 are captured, so each repeat arrives while its first is still being solved.
            fake.control(hold=True)
            challenges = [await dev.get_challenge("whirl" if n < 8 else "slide") for n, dev in enumerate(devices)]
            await asyncio.gather(*(dev.fetch_images(ch) for dev, ch in zip(devices, challenges, strict=True)))
            while (await devices[0].api("/v1/stats")).json()["captured"] < 16:
                await asyncio.sleep(0.01)
            fake.control(hold=False)
            answers = [(await dev.api("/v1/answer/wait", timeout=30)).json() for dev in devices]
            assert [a["challenge"] for a in answers] == [ch.id for ch in challenges]
            assert all(a["event"] == "solved" for a in answers), answers
            creates = [r for r in fake.log() if r["path"].endswith("/createJob")]
            assert len(creates) == 8  # one per image set
            for first, second in zip(answers[::2], answers[1::2], strict=True):
                paid, waited = (first, second) if second.get("cached") else (second, first)
                assert (paid.get("cached"), paid["tried"]) == (None, ["omocaptcha-v1"])
                assert (waited["cached"], waited["cached_from"], waited["same_as"], waited["tried"],
                        waited["answer"]) == (True, "repeat", paid["challenge"], [], paid["answer"])
            # The first set again, one device at a time: the site rejects the cached answer, the only service is
            # asked once more, the site accepts its answer, and the next repeat is served that one, unpaid.
            dev = devices[0]
            for mode in ("whirl", "slide"):
                ch, rejected = await solve(dev, mode)
                assert (rejected["cached_from"], rejected["tried"]) == ("cache", [])
                assert not await dev.verify(ch, drag(rejected, 340) + 60, width=340)
                ch, asked = await solve(dev, mode)
                assert (asked.get("cached"), asked["tried"]) == (None, ["omocaptcha-v1"])
                assert await dev.verify(ch, drag(asked, 340), width=340)
                ch, reused = await solve(dev, mode)
                assert (reused["cached_from"], reused["same_as"], reused["answer"]) == (
                    "cache", asked["challenge"], asked["answer"])
                assert await dev.verify(ch, drag(reused, 340), width=340)
            stats = (await dev.api("/v1/stats")).json()
        verdicts = origin.stats()["verified"]
    assert len([r for r in fake.log() if r["path"].endswith("/createJob")]) == 10  # no third job for either set
    assert stats["jobs_sent"] == 10 and stats["solved"] == 22 and stats["failed"] == {}
    assert verdicts == {"pass": 4, "fail": 2}
