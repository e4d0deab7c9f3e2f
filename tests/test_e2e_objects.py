"""End to end through a real mitmdump: TikTok's object captchas (3d from the real labelled images, made-up icon),
captured with the right kind, solved by omocaptcha v1 and v2, delivered as points in view pixels, and passed by
the test origin's verify. An icon with v1 alone fails `no_solver` without a job sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, samples_missing
from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, proxy, read_events
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import Format, add_object_challenges, generate, real_3d_names

pytestmark = pytest.mark.timeout(120)

FORMATS: tuple[Format, ...] = ("jpeg", "png", "webp")
SHAPES = ("single", "list", "edata")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginServer, Path]]:
    if not (SAMPLES / "3d-train" / "labels.json").exists():
        samples_missing(SAMPLES / "3d-train")
    d = tmp_path_factory.mktemp("objects")
    generate(d, seed=4, count=1)
    names = real_3d_names(3)
    add_object_challenges(d, real_3d=[(name, fmt) for name, fmt in zip(names, FORMATS, strict=True)], icons=2)
    with OriginServer(d) as origin:
        yield origin, d


async def answer_of(dev: Device, ch: Challenge, **query: Any) -> dict[str, Any]:
    r = await dev.api("/v1/answer/wait", timeout=30, **query)
    assert r.status_code == 200, r.text
    event: dict[str, Any] = r.json()
    assert event["challenge"] == ch.id, (event, ch.id)
    return event


def points(event: dict[str, Any]) -> list[tuple[float, float]]:
    return [(p["x"], p["y"]) for p in event["answer"]["points"]]


async def test_3d_through_v1_in_every_shape_and_format_and_icon_fails_no_solver(
        kit: tuple[OriginServer, Path], tmp_path: Path) -> None:
    origin, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.2", p.proxy_url, p.ca_path) as dev:
            formats = []
            for shape in SHAPES:  # the origin hands the 3d challenges out in turn: JPEG, PNG, WebP
                ch = await dev.get_challenge("3d", shape=shape)
                images = await dev.fetch_images(ch)
                formats.append(images["image"][:4])
                event = await answer_of(dev, ch)
                assert event["event"] == "solved" and event["kind"] == "3d", event
                answer = event["answer"]
                assert (answer["width_view"], answer["height_view"], len(answer["points"])) == (340, 212, 2)
                assert event["result"].count("|") == 3
                assert await dev.verify_clicks(ch, points(event), 340, encrypted=shape == "edata")
            # Inline images (question.object1): nothing to fetch, captured from the get alone. The origin has come
            # round to the first (JPEG) image again: the cache answers, nothing is paid twice.
            ch = await dev.get_challenge("3d", inline=True)
            event = await answer_of(dev, ch)
            assert event["event"] == "solved" and event.get("cached") is True
            assert await dev.verify_clicks(ch, points(event), 340)
            creates = [r for r in fake.log() if r["path"].endswith("createJob")]
            icon = await dev.get_challenge("icon")
            await dev.fetch_images(icon)
            failed = await answer_of(dev, icon)
            stats = (await dev.api("/v1/stats")).json()
            metrics = (await dev.api("/metrics")).text
    assert [f[:4] for f in formats] == [b"\xff\xd8\xff\xe0"[:4], b"\x89PNG", b"RIFF"]
    assert (failed["event"], failed["reason"], failed["tried"]) == ("failed", "no_solver", [])
    assert [r for r in fake.log() if r["path"].endswith("createJob")] == creates  # no job for the icon
    assert len(creates) == 3
    assert all(r["body"]["data"]["type_job_id"] == "22" for r in creates)
    assert stats["failed"] == {"no_solver": 1} and stats["solved"] == 4
    assert 'captcha_captured_total{kind="3d"} 4.0' in metrics
    assert 'reason="no_solver"' in metrics
    captured = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "captured"]
    assert [(e["kind"], list(e["images"]), e["question"]) for e in captured] == [("3d", ["image"], None)] * 4 + [
        ("icon", ["image"], "Which of these objects are round?")]
    assert origin.app.stats()["verified"] == {"pass": 4, "fail": 0}


async def test_3d_and_icon_through_v2_delivered_at_the_callers_width(
        kit: tuple[OriginServer, Path], tmp_path: Path) -> None:
    origin, d = kit
    before = origin.app.stats()["verified"]["pass"]
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_v2_url=fake.v2_base_url, captcha_solvers="omocaptcha-v2",
        captcha_poll_ms=50, captcha_hold=True,
    ) as p:
        async with Device("127.0.0.3", p.proxy_url, p.ca_path) as dev:
            for mode, shape in (("3d", "list"), ("icon", "single"), ("icon", "edata"), ("3d", "edata")):
                ch = await dev.get_challenge(mode, shape=shape)
                await dev.fetch_images(ch)
                event = await answer_of(dev, ch, width=348)
                assert event["event"] == "solved" and event["kind"] == mode, event
                drag = event["drag"]
                assert drag["width"] == 348 and len(drag["points"]) == 2
                clicks = [(q["x"], q["y"]) for q in drag["points"]]
                assert await dev.verify_clicks(ch, clicks, 348, encrypted=shape == "edata")
    tasks = [r["body"]["task"] for r in fake.log() if r["path"].endswith("createTask")]
    assert [t["type"] for t in tasks] == ["Tiktok3DSelectObjectWebTask", "TiktokSelectObjectWebTask",
                                         "TiktokSelectObjectWebTask", "Tiktok3DSelectObjectWebTask"]
    assert [t.get("question") for t in tasks][1:3] == ["Which of these objects are square?",
                                                       "Which of these objects are round?"]
    assert all((t["widthView"], t["heightView"]) == (340, 212) for t in tasks)
    assert origin.app.stats()["verified"]["pass"] == before + 4
    solved = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "solved"]
    assert all(set(e["answer"]) == {"points", "width_view", "height_view"} for e in solved)
