"""End to end through a real mitmdump: the local solver answers real 3d challenges of the held-out sources (the
model's test split, never trained or calibrated on) without a key, its clicks are judged by the test origin against
the labelled boxes, and with a key only the 3d challenges it is unsure of reach the paid service.

What the proxy publishes must be exactly what the same solver gives in this process, and every click it is sure of
must pass the site's verify; how often the model is right overall is in BENCHMARKS.md (scripts/eval_3d.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from addon.solving.vision import VisionError
from addon.solving.vision.objects3d import load_model, solve_3d
from tests.conftest import SAMPLES, samples_missing
from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import add_object_challenges, generate

pytestmark = pytest.mark.timeout(240)
HELD_OUT = 6
THRESHOLD = 0.5  # captcha_local_confidence's default, 50


def held_out_names() -> list[str]:
    """One file per source of the model's test split whose labels give a pair, in name order."""
    labels = json.loads((SAMPLES / "3d-train" / "labels.json").read_text())["labels"]
    split = load_model().meta["split"]
    seen: set[str] = set()
    names = []
    for name in sorted(labels):
        entry = labels[name]
        pair = entry["pair"]
        if split.get(entry["source"]) != "test" or entry["source"] in seen or pair is None:
            continue
        if [b["cls"] for b in entry["boxes"]].count(pair["cls"]) == 2:
            seen.add(entry["source"])
            names.append(name)
    return names


def pick(count: int) -> list[str]:
    """`count` held-out files: the first that the solver is unsure of (or finds no two objects in), and the first
    `count - 1` it is sure of, so that both paths of the chain are taken."""
    sure: list[str] = []
    unsure: list[str] = []
    for name in held_out_names():  # clear of the threshold: the origin serves a re-encoded copy
        try:
            confidence = solve_3d((SAMPLES / "3d-train" / name).read_bytes()).confidence
        except VisionError:
            confidence = 0.0
        if confidence >= THRESHOLD + 0.2:
            sure.append(name)
        elif confidence < THRESHOLD - 0.2:
            unsure.append(name)
        if len(sure) >= count - 1 and unsure:
            return sorted(sure[:count - 1] + unsure[:1])
    raise AssertionError(f"the test split has no {count - 1} sure and 1 unsure challenges")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginServer, Path, dict[str, Any]]]:
    """The origin with the held-out 3d challenges, and per image (its sha256: the origin gives a new challenge id
    each time round) what the solver gives in-process and whether that answer is right by the labels."""
    if not (SAMPLES / "3d-train" / "labels.json").exists():
        samples_missing(SAMPLES / "3d-train")
    d = tmp_path_factory.mktemp("local-3d")
    generate(d, seed=7, count=1)
    manifest = add_object_challenges(d, real_3d=[(name, "jpeg") for name in pick(HELD_OUT)])
    expected: dict[str, Any] = {}
    for c in manifest.challenges:
        if c.mode != "3d":
            continue
        body = (d / c.images["image"].file).read_bytes()
        key = hashlib.sha256(body).hexdigest()
        try:
            found = solve_3d(body)
        except VisionError:
            expected[key] = None
            continue
        expected[key] = (found, inside_different_boxes(found.points, c.targets))
    assert len(expected) == HELD_OUT
    with OriginServer(d) as origin:
        yield origin, d, expected


def inside_different_boxes(points: Any, boxes: list[list[float]]) -> bool:
    def inside(p: tuple[float, float], b: list[float]) -> bool:
        cx, cy, w, h = b
        return abs(p[0] - cx) <= w / 2 and abs(p[1] - cy) <= h / 2

    (a, b) = points
    return (inside(a, boxes[0]) and inside(b, boxes[1])) or (inside(a, boxes[1]) and inside(b, boxes[0]))


async def solve(dev: Device) -> tuple[Challenge, str, dict[str, Any]]:
    """A 3d challenge as a device sees it: the challenge, its image's sha256, the final event."""
    ch = await dev.get_challenge("3d")
    images = await dev.fetch_images(ch)
    r = await dev.api("/v1/answer/wait", timeout=60)
    assert r.status_code == 200, r.text
    event: dict[str, Any] = r.json()
    assert event["challenge"] == ch.id, event
    return ch, hashlib.sha256(images["image"]).hexdigest(), event


async def test_without_a_key_local_answers_held_out_3d_and_its_sure_clicks_pass(
        kit: tuple[OriginServer, Path, dict[str, Any]], tmp_path: Path) -> None:
    origin, _, expected = kit
    verdicts: dict[str, bool] = {}
    with proxy(origin, tmp_path, captcha_solvers="local") as p:
        async with Device("127.0.0.2", p.proxy_url, p.ca_path) as dev:
            for _ in range(HELD_OUT):
                ch, key, event = await solve(dev)
                want = expected[key]
                if want is None:  # the model found no two objects: not a bad image, the next solver may do better
                    assert (event["event"], event["reason"]) == ("failed", "unsolvable"), event
                    continue
                found, right = want
                assert (event["event"], event["service"], event["kind"]) == ("solved", "local", "3d"), event
                assert event["confidence"] == pytest.approx(found.confidence, abs=1e-4)
                natural = [(pt["x_natural"], pt["y_natural"]) for pt in event["answer"]["points"]]
                assert [c for pt in natural for c in pt] == pytest.approx([c for pt in found.points for c in pt],
                                                                          abs=0.01)
                clicks = [(pt["x"], pt["y"]) for pt in event["answer"]["points"]]
                verdicts[key] = await dev.verify_clicks(ch, clicks, event["answer"]["width_view"])
                assert verdicts[key] is right, (key, event["answer"], found)
            stats = (await dev.api("/v1/stats")).json()
    assert stats["jobs_sent"] == 0
    sure = [key for key, want in expected.items() if want is not None and want[0].confidence >= THRESHOLD]
    assert all(verdicts[key] for key in sure), {key: expected[key] for key in sure if not verdicts[key]}


async def test_with_a_key_only_the_3d_challenges_local_is_unsure_of_are_paid_for(
        kit: tuple[OriginServer, Path, dict[str, Any]], tmp_path: Path) -> None:
    origin, d, expected = kit
    unsure = {key for key, want in expected.items() if want is None or want[0].confidence < THRESHOLD}
    assert 0 < len(unsure) < len(expected)
    finals: dict[str, dict[str, Any]] = {}
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="local,omocaptcha",
        captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.3", p.proxy_url, p.ca_path) as dev:
            for _ in range(HELD_OUT):
                ch, key, event = await solve(dev)
                finals[key] = event
                assert event["event"] == "solved", event
                # The fake service answers from the labels, and local's sure answers are right (test above).
                assert await dev.verify_clicks(ch, [(pt["x"], pt["y"]) for pt in event["answer"]["points"]],
                                               event["answer"]["width_view"])
        creates = [r for r in fake.log() if r["path"].endswith("createJob")]
    assert set(finals) == set(expected)
    assert len(creates) == len(unsure)
    for key, event in finals.items():
        if key in unsure:
            assert (event["service"], event["tried"]) == ("omocaptcha-v1", ["local", "omocaptcha-v1"]), event
        else:
            assert (event["service"], event["tried"]) == ("local", ["local"]), event
    assert all(r["body"]["data"]["type_job_id"] == "22" for r in creates)
