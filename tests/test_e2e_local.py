"""End to end through a real mitmdump: the local solver answers without a key, its answers pass the site's verify
(both kinds, both whirl eras), and with a key only the challenges it is unsure of reach the paid service."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from addon.solving import vision
from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, LOCAL_WARM_LINE, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpProcess
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=404, count=6)  # whirls alternate PNG and JPEG eras
    with OriginServer(d) as origin:
        yield origin, origin.app.challenges, d


def gapless_first_slide(d: Path) -> str:
    """Replaces the first slide's background with a picture that has no gap at all (a smooth gradient with grain),
    so the local solver has nothing to be sure of; the manifest keeps a truth for it, so the paid service can
    answer. Returns that challenge's id."""
    manifest = json.loads((d / "manifest.json").read_text())
    slide = next(c for c in manifest["challenges"] if c["mode"] == "slide")
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 552)[None, :, None]
    y = np.linspace(0, 1, 344)[:, None, None]
    picture = 60 + 120 * x * np.array([1.0, 0.6, 0.3]) + 60 * y * np.array([0.2, 0.5, 1.0])
    picture = np.clip(picture + rng.normal(0, 4, (344, 552, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "JPEG", quality=85)
    body = out.getvalue()
    (d / slide["images"]["background"]["file"]).write_bytes(body)
    slide["images"]["background"]["sha256"] = hashlib.sha256(body).hexdigest()
    (d / "manifest.json").write_text(json.dumps(manifest))
    piece = (d / slide["images"]["piece"]["file"]).read_bytes()
    sure = vision.solve_slide(body, piece, slide["tip_y"]).confidence
    assert sure < 0.5, f"precondition: the local solver should be unsure of a gapless picture (confidence {sure})"
    return str(slide["id"])


async def solve(device: Device, mode: str) -> tuple[Challenge, dict[str, Any]]:
    ch = await device.get_challenge(mode)
    await device.fetch_images(ch)
    r = await device.api("/v1/answer/wait", timeout=30)
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["challenge"] == ch.id, event
    return ch, event


async def test_without_a_key_the_local_solver_answers_and_the_site_accepts(kit: Any, tmp_path: Path) -> None:
    origin, truth, _ = kit
    with proxy(origin, tmp_path, captcha_solvers="auto") as p:
        async with Device("127.0.0.2", p.proxy_url, p.ca_path) as dev:
            eras, passed = set(), []
            for mode in ("whirl", "slide") * 6:
                ch, event = await solve(dev, mode)
                assert (event["event"], event["service"], event["job_id"], event["tried"]) == (
                    "solved", "local", None, ["local"]), event
                assert 0.0 <= event["confidence"] <= 1.0
                answer = event["answer"]
                if mode == "whirl":
                    eras.add(truth[ch.id]["variant"])
                    error = (answer["angle"] - truth[ch.id]["angle"] + 180) % 360 - 180
                    assert abs(error) <= 4.0, (answer, truth[ch.id]["angle"])
                    assert answer["fraction"] == pytest.approx(answer["angle"] / 360)
                    assert answer["value"] == pytest.approx(answer["fraction"] * 271)
                    passed.append(await dev.verify(ch, answer["value"]))
                else:
                    assert abs(answer["x_natural"] - truth[ch.id]["gap_x"]) <= 3.0, (answer, truth[ch.id]["gap_x"])
                    passed.append(await dev.verify(ch, answer["x"], width=answer["width_view"]))
            stats = (await dev.api("/v1/stats")).json()
    assert eras == {"png", "jpeg"}
    assert passed == [True] * 12
    assert stats["solvers"] == ["local"] and stats["jobs_sent"] == 0
    assert stats["by_service"]["local"]["rotate"]["accepted"] == 6
    assert stats["by_service"]["local"]["slide"]["accepted"] == 6


async def test_with_a_key_only_what_the_local_solver_is_unsure_of_is_paid_for(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    d = tmp_path_factory.mktemp("unsure")
    generate(d, seed=405, count=3)
    unsure_id = gapless_first_slide(d)
    with OriginServer(d) as origin, FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="local,omocaptcha",
        captcha_poll_ms=50,
    ) as p:
        async with Device("127.0.0.3", p.proxy_url, p.ca_path) as dev:
            finals = {}
            for mode in ("slide", "whirl", "slide", "whirl", "slide", "whirl"):
                ch, event = await solve(dev, mode)
                finals[ch.id] = event
                assert event["event"] == "solved", event
    assert unsure_id in finals
    unsure = finals.pop(unsure_id)
    assert (unsure["service"], unsure["tried"]) == ("omocaptcha-v1", ["local", "omocaptcha-v1"])
    assert {(e["service"], tuple(e["tried"])) for e in finals.values()} == {("local", ("local",))}
    assert all(e["confidence"] >= 0.5 for e in finals.values())
    jobs = [r for r in fake.log() if r["path"].endswith("/createJob")]
    assert len(jobs) == 1 and jobs[0]["body"]["data"]["type_job_id"] == "21"


WARM_LINE = LOCAL_WARM_LINE
LOOP_BUSY_LIMIT_MS = 40.0
"""Most CPU time one callback of the event loop may take while six devices' solves run, less the garbage
collector's (scripts/bench_looplag.py, looplag_callbacks). Measured: 11 ms with the solves in the workers; 150 ms
with them put back on the loop on purpose (the first one loads numpy and OpenCV into mitmdump, which the
workers spare it). CPU time of one callback, not wall time: neither a loaded machine nor a busy loop inflates it."""


def read_windows(path: Path, t0: float, t1: float) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [w for w in map(json.loads, lines) if t0 <= w["t"] <= t1 + 0.3]


async def test_local_solves_start_warm_and_never_hold_the_event_loop(kit: Any, tmp_path: Path) -> None:
    """The workers are started and warmed up when mitmdump starts (before the first challenge), and the solves of
    six devices at once run off mitmproxy's event loop: a loop-lag probe runs inside the same mitmdump."""
    origin = kit[0]
    lag = tmp_path / "looplag.jsonl"
    with MitmdumpProcess(["addon/main.py", "scripts/bench_looplag.py"], origin=(origin.http_port, origin.https_port),
                         options={"captcha_solvers": "local", "captcha_sidecar": str(tmp_path / "events.jsonl"),
                                  "looplag_file": str(lag), "looplag_interval_ms": 2, "looplag_callbacks": True},
                         workdir=tmp_path / "mitm", startup_timeout=60) as p:
        p.wait_for_log(WARM_LINE, timeout=60)  # without a warm-up at start this line never comes

        async def device(i: int) -> list[dict[str, Any]]:
            async with Device(f"127.0.1.{i}", p.proxy_url, p.ca_path) as dev:
                return [(await solve(dev, mode))[1] for mode in ("slide", "whirl", "slide")]

        t0 = time.time()
        events = [e for es in await asyncio.gather(*(device(i) for i in range(1, 7))) for e in es]
        t1 = time.time()
        async with asyncio.timeout(10):  # the probe writes a line every quarter of a second
            while not read_windows(lag, t1, t1):
                await asyncio.sleep(0.05)
        log = p.log_text()
    assert [e["service"] for e in events] == ["local"] * 18, events
    assert "before its warm-up" not in log and "came before the workers" not in log
    windows = read_windows(lag, t0, t1)
    longest = max(w["max_callback_ms"] for w in windows)
    busy = [round(w["max_busy_ms"], 1) for w in windows]
    assert longest < LOOP_BUSY_LIMIT_MS, f"one callback of the loop worked {longest:.1f} ms; per window {busy}"
