"""Make the README's dashboard screenshot (docs/dashboard.png) from the test kit, the same way every time.

    uv run python -m scripts.screenshot_dashboard [--out docs/dashboard.png]

Makes synthetic challenges (fixed seed), serves them from the local test origin, starts the fake solving service and
``mitmdump -s addon/main.py`` with a key and ``captcha_solvers=omocaptcha``, opens ``http://captcha.mitm/`` in
headless Chromium through the proxy, then drives whirl and slide challenges from a few devices (one the service
cannot solve), posts some answers to the site (one of them wrong, so both verdicts show), waits until the page
shows every row, thumbnail and drawn answer, and saves the PNG. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kit import synth
from tests.kit.device import Challenge, Device
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpError, MitmdumpProcess, OptionValue

KEY = "screenshot-key"
DEFAULT_OUT = Path("docs/dashboard.png")
DEFAULT_CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000


@dataclass(frozen=True)
class Step:
    """One challenge of the scene: which device, which mode, whether the device posts the answer to the site, and
    whether the service's answer is off (so the site rejects it and the drawn answer shows it does not line up)."""

    device: int
    mode: str
    verify: bool = False
    off: bool = False
    unsolvable: bool = False


SCENE = (
    Step(0, "whirl", verify=True),
    Step(1, "slide", verify=True),
    Step(2, "whirl"),
    Step(0, "slide", verify=True, off=True),
    Step(1, "whirl", verify=True),
    Step(2, "slide", unsolvable=True),
    Step(0, "whirl", verify=True, off=True),
    Step(1, "slide", verify=True),
)
DEVICES = ("phone-01", "phone-02", "phone-03")
"""The client names in the table: the proxy keys clients by an X-Device header here (each also connects from its
own 127.0.0.N)."""
OFF_DEGREES = 45.0
OFF_PX = 120
SLIDE_MAX_X = 552 - 110
"""The right-most gap the 552-px background has room for beside a 110-px piece."""


def misled_manifest(challenges: Path) -> Path:
    """A copy of the manifest for the fake service in which the challenges of the `off` steps have wrong truths.

    The origin hands out each mode's challenges in manifest order, so the n-th step of a mode gets the n-th
    challenge of that mode."""
    manifest = json.loads((challenges / "manifest.json").read_text())
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for c in manifest["challenges"]:
        by_mode.setdefault(c["mode"], []).append(c)
    seen: dict[str, int] = {}
    for step in SCENE:
        n = seen[step.mode] = seen.get(step.mode, -1) + 1
        if not step.off:
            continue
        c = by_mode[step.mode][n]
        if step.mode == "whirl":
            c["angle"] = (c["angle"] + OFF_DEGREES) % 360
            c["drag_px"] = c["angle"] / 360 * manifest["widget"]["travel"]
        else:
            c["gap_x"] = c["gap_x"] + OFF_PX if c["gap_x"] + OFF_PX <= SLIDE_MAX_X else c["gap_x"] - OFF_PX
    path = challenges / "fake-manifest.json"  # beside the images, which the fake reads relative to it
    path.write_text(json.dumps(manifest))
    return path


async def _play(step: Step, device: Device, fake: FakeOmocaptcha) -> tuple[Challenge, dict[str, Any]]:
    fake.control(fail_share=1.0 if step.unsolvable else 0.0)
    ch = await device.get_challenge(step.mode, scheme="http" if step.mode == "slide" else "https")
    await device.fetch_images(ch, order="normal")
    r = await device.api("/v1/answer/wait", timeout=30)
    if r.status_code != 200 or r.json().get("challenge") != ch.id:
        raise RuntimeError(f"no answer for {ch.id}: HTTP {r.status_code} {r.text[:200]}")
    event: dict[str, Any] = r.json()
    if step.verify and event["event"] == "solved":
        answer = event["answer"]
        if ch.mode == "slide":
            accepted = await device.verify(ch, answer["x"], width=answer["width_view"])
        else:
            accepted = await device.verify(ch, float(answer["value"]))
        if accepted == step.off:
            raise RuntimeError(f"the site {'accepted' if accepted else 'rejected'} {ch.id} against the scene")
    return ch, event


async def shoot(proxy: MitmdumpProcess, fake: FakeOmocaptcha, out: Path, *, chromium: str, width: int,
                height: int, scale: float) -> None:
    from playwright.async_api import async_playwright, expect

    devices = [Device(f"127.0.0.{11 + i}", proxy.proxy_url, proxy.ca_path, headers={"X-Device": name})
               for i, name in enumerate(DEVICES)]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                           proxy={"server": proxy.proxy_url}, args=["--disable-gpu"])
        try:
            context = await browser.new_context(viewport={"width": width, "height": height},
                                                device_scale_factor=scale, locale="en-GB", timezone_id="UTC")
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto("http://captcha.mitm/")
            await page.wait_for_selector('#conn[data-state="live"]')
            played = [await _play(step, devices[step.device], fake) for step in SCENE]
            fake.control(fail_share=0.0)
            solved = [ch for ch, event in played if event["event"] == "solved"]
            for ch, event in played:
                await page.wait_for_selector(f'tr[data-challenge="{ch.id}"][data-status="{event["event"]}"]')
            rows = page.locator("#rows tr")
            await expect(rows).to_have_count(len(played))
            await expect(page.locator('img.answer[data-state="loaded"]')).to_have_count(len(solved))
            thumbs = sum(len(ch.roles) for ch, _ in played)
            await expect(page.locator('img.thumb[data-state="loaded"]')).to_have_count(thumbs)
            await expect(page.locator('#stats .stat[data-stat="captured"] .value')).to_have_text(str(len(played)))
            await expect(page.locator("#balance")).to_be_visible()
            await page.evaluate("Promise.all([...document.images].map(img => img.decode().catch(() => null)))")
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out), full_page=True)
        finally:
            await browser.close()
            for device in devices:
                await device.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.screenshot_dashboard",
        description="Make the dashboard screenshot for the README from the test kit (synthetic challenges, the "
                    "fake solving service, a real mitmdump with the addon, headless Chromium through the proxy).")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNG goes (default: %(default)s)")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", DEFAULT_CHROMIUM),
                   help="the Chromium executable (default: $CHROMIUM or %(default)s)")
    p.add_argument("--width", type=int, default=1360, help="viewport width in CSS pixels (default: %(default)s)")
    p.add_argument("--height", type=int, default=820,
                   help="viewport height; the shot is the full page (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="device pixel ratio (default: %(default)s)")
    p.add_argument("--seed", type=int, default=5, help="seed of the synthetic challenges (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (mitmdump's log, events)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    chromium = shutil.which(args.chromium)
    if chromium is None:
        p.error(f"no Chromium at {args.chromium} (apt-get install chromium, or give --chromium)")
    work = Path(tempfile.mkdtemp(prefix="dashboard-shot-"))
    try:
        synth.generate(work / "challenges", seed=args.seed, count=len(SCENE))
        misled = misled_manifest(work / "challenges")
        with OriginServer(work / "challenges") as origin, FakeOmocaptcha(
                keys=(KEY,), manifests=(str(misled),), solve_seconds=0.3, seed=args.seed) as fake:
            options: dict[str, OptionValue] = {
                "captcha_sidecar": str(work / "events.jsonl"), "captcha_solvers": "omocaptcha", "omocaptcha_key": KEY,
                "omocaptcha_url": fake.base_url, "captcha_poll_ms": 100, "captcha_client_key": "header:X-Device"}
            with MitmdumpProcess(["addon/main.py"], origin=(origin.http_port, origin.https_port), options=options,
                                 workdir=work / "mitm") as proxy:
                asyncio.run(shoot(proxy, fake, args.out, chromium=chromium, width=args.width, height=args.height,
                                  scale=args.scale))
    except MitmdumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
