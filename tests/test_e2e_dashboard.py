"""End to end, the dashboard in a real browser: Debian's Chromium driven by Playwright, through a real mitmdump with
the addon, the test origin and the fake solving service. No mock browser: the page's own script reads the event
stream, fetches the images and draws the table; the test only waits on what the page shows."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Page, async_playwright, expect

from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.synth import generate

pytestmark = pytest.mark.timeout(90)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "dash-token-9c2e41"
PAGE = "http://captcha.mitm/"
WAIT_MS = 15_000

# The page's variety test: a drawn answer is a photo-like captcha, never one flat colour.
MIN_COLOURS = 64
MIN_STD = 10.0

SAMPLE_PIXELS = """img => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < data.length; i += 4 * 7) {
    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
    sum += v; sq += v * v; n++;
  }
  const mean = sum / n;
  return {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size,
          std: Math.sqrt(Math.max(0, sq / n - mean * mean))};
}"""


def chromium() -> str:
    """Debian's Chromium; without it the test fails under CI (which installs it) and is skipped elsewhere."""
    found = shutil.which(CHROMIUM)
    if found is None:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM to its path)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=53, count=8)
    with OriginServer(d) as origin:
        yield origin, d


@dataclass
class Browser:
    page: Page
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def browser_through(proxy_url: str) -> AsyncIterator[Browser]:
    """A headless Chromium whose every request goes through the proxy; page errors and CSP refusals are kept."""
    executable = chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                           proxy={"server": proxy_url}, args=["--disable-gpu"])
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            out = Browser(page)
            page.on("pageerror", lambda e: out.errors.append(f"page error: {e}"))
            page.on("console", lambda m: out.errors.append(f"console: {m.text}")
                    if m.type == "error" and "Content Security Policy" in m.text else None)
            yield out
        finally:
            await browser.close()


def row(challenge_id: str) -> str:
    return f'tr[data-challenge="{challenge_id}"]'


async def challenge(device: Device, mode: str) -> Challenge:
    ch = await device.get_challenge(mode, scheme="http" if mode == "slide" else "https")
    await device.fetch_images(ch, order="normal")
    return ch


async def answer_of(device: Device, ch: Challenge) -> dict[str, Any]:
    r = await device.api("/v1/answer/wait", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    event: dict[str, Any] = r.json()
    assert (event["challenge"], event["event"]) == (ch.id, "solved"), event
    return event


async def verify(device: Device, ch: Challenge, event: dict[str, Any], *, right: bool) -> bool:
    answer = event["answer"]
    if ch.mode == "slide":
        width = answer["width_view"]
        x = answer["x"] if right else (answer["x"] + width / 3) % width
        return await device.verify(ch, x, width=width)
    value = float(answer["value"])
    return await device.verify(ch, value if right else (value + 135) % 271)


async def assert_pictures(page: Page, device: Device, ch: Challenge, token: str = "") -> None:
    """The row's thumbnails and drawn answer loaded, and the drawn answer is a real picture (page and API agree)."""
    thumbs = page.locator(f'{row(ch.id)} img.thumb[data-state="loaded"]')
    await expect(thumbs).to_have_count(len(ch.roles))
    assert sorted([await t.get_attribute("data-role") or "" for t in await thumbs.all()]) == sorted(ch.roles)
    picture = page.locator(f'{row(ch.id)} img.answer[data-state="loaded"]')
    await expect(picture).to_have_count(1)
    await picture.evaluate("img => img.decode()")
    seen = await picture.evaluate(SAMPLE_PIXELS)
    assert seen["width"] > 0 and seen["colours"] >= MIN_COLOURS and seen["std"] >= MIN_STD, seen
    r = await device.api(f"/v1/challenges/{ch.id}/answer.png",
                         headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert pixels.shape[1::-1] == (seen["width"], seen["height"])
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= MIN_COLOURS and pixels.std() >= MIN_STD


async def test_rows_pictures_verdicts_and_filter_live(kit: Any, tmp_path: Path) -> None:
    origin, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=100,
    ) as p:
        a = Device("127.0.0.2", p.proxy_url, p.ca_path)
        b = Device("127.0.0.3", p.proxy_url, p.ca_path)
        async with browser_through(p.proxy_url) as browser:
            page = browser.page
            await page.goto(PAGE)
            await page.evaluate("window.__sameDocument = true")
            await page.wait_for_selector('#conn[data-state="live"]')
            await expect(page.locator("#empty")).to_be_visible()

            # A row shows up while the challenge is still being solved (the service takes its time with this one),
            # then turns solved: all without reload.
            fake.control(solve_seconds=1.0)
            first = await challenge(a, "whirl")
            await page.wait_for_selector(f'{row(first.id)}[data-status="captured"], '
                                         f'{row(first.id)}[data-status="solving"]')
            await expect(page.locator(f"{row(first.id)} td.client")).to_have_text(a.ip)
            await expect(page.locator("#empty")).to_be_hidden()
            fake.control(solve_seconds=0.2)
            first_answer = await answer_of(a, first)
            await page.wait_for_selector(f'{row(first.id)}[data-status="solved"]')

            async def one(device: Device, mode: str) -> tuple[Challenge, dict[str, Any]]:
                ch = await challenge(device, mode)
                return ch, await answer_of(device, ch)

            (a_slide, a_slide_answer), (b_whirl, _) = await asyncio.gather(one(a, "slide"), one(b, "whirl"))
            b_slide, b_slide_answer = await one(b, "slide")
            assert await verify(a, first, first_answer, right=True)
            assert await verify(a, a_slide, a_slide_answer, right=True)
            assert not await verify(b, b_slide, b_slide_answer, right=False)

            mine = {a.ip: [first, a_slide], b.ip: [b_whirl, b_slide]}
            for ch in (first, a_slide, b_whirl, b_slide):
                await page.wait_for_selector(f'{row(ch.id)}[data-status="solved"]')
            for ch in (first, a_slide):
                await expect(page.locator(f'{row(ch.id)} td.verdict[data-verdict="accepted"]')).to_have_text(
                    "accepted")
            await expect(page.locator(f'{row(b_slide.id)} td.verdict[data-verdict="rejected"]')).to_have_text(
                "rejected")
            await expect(page.locator(f'{row(b_whirl.id)} td.verdict')).to_have_text("")
            await expect(page.locator(f"{row(a_slide.id)} td.kind")).to_have_text("slide")
            await expect(page.locator(f"{row(first.id)} td.kind")).to_have_text("rotate")
            for device, chs in ((a, mine[a.ip]), (b, mine[b.ip])):
                for ch in chs:
                    await assert_pictures(page, device, ch)

            # The counters at the top follow /v1/stats; the balance the service reported is shown.
            stats = (await a.api("/v1/stats")).json()
            assert (stats["captured"], stats["solved"], stats["verified"]) == (4, 4, 3)
            for name in ("captured", "solved", "verified"):
                await expect(page.locator(f'#stats .stat[data-stat="{name}"] .value')).to_have_text(
                    str(stats[name]))
            await expect(page.locator("#balance .value")).to_have_text(re.compile(r"^omocaptcha-v1 \d"))

            # The client filter narrows the rows (and the counters) to one device, and widens them again.
            await page.fill("#client-filter", b.ip)
            visible = page.locator("#rows tr:visible")
            await expect(visible).to_have_count(2)
            await expect(page.locator("#rows tr:visible td.client")).to_have_text([b.ip, b.ip])
            await expect(page.locator("#stats-scope")).to_have_text(f"client {b.ip}")
            await expect(page.locator('#stats .stat[data-stat="captured"] .value')).to_have_text("2")
            await page.fill("#client-filter", "")
            await expect(visible).to_have_count(4)
            await expect(page.locator("#stats-scope")).to_have_text("all clients")

            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            with Image.open(shot) as img:
                assert img.width >= 1000 and img.height >= 300
            assert await page.evaluate("window.__sameDocument") is True, "the page was reloaded"
            assert browser.errors == []
        await a.aclose()
        await b.aclose()


async def test_token_prompt_refuses_a_wrong_token_then_streams_with_the_right_one(kit: Any, tmp_path: Path) -> None:
    origin, d = kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=50, captcha_api_token=TOKEN,
    ) as p:
        phone = Device("127.0.0.4", p.proxy_url, p.ca_path)
        async with browser_through(p.proxy_url) as browser:
            page = browser.page
            await page.goto(PAGE)
            form = page.locator("#token-form")
            await expect(form).to_be_visible()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "token")
            await expect(page.locator("#token-message")).to_have_text("")

            await page.fill("#token-input", "not-" + TOKEN)
            await page.click('#token-form button[type="submit"]')
            await expect(page.locator("#token-message")).to_have_text("that token was refused")
            await expect(form).to_be_visible()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "token")

            await page.fill("#token-input", TOKEN)
            await page.press("#token-input", "Enter")
            await expect(form).to_be_hidden()
            await page.wait_for_selector('#conn[data-state="live"]')

            # Live through the stream, with the token: the row, its answer, and the images behind it.
            ch = await challenge(phone, "slide")
            await page.wait_for_selector(f'{row(ch.id)}[data-status="solved"]')
            await assert_pictures(page, phone, ch, TOKEN)
            for path in (f"/v1/challenges/{ch.id}/answer.png", f"/v1/challenges/{ch.id}/images/piece"):
                assert (await phone.api(path)).status_code == 401
            await expect(page.locator('#stats .stat[data-stat="captured"] .value')).to_have_text("1")

            # Asked once: a reload keeps the token for the tab, and the rows come back without a prompt.
            await page.reload()
            await page.wait_for_selector('#conn[data-state="live"]')
            await expect(form).to_be_hidden()
            await page.wait_for_selector(f'{row(ch.id)}[data-status="solved"]')
            await page.screenshot(path=str(tmp_path / "dashboard-token.png"), full_page=True)
            assert browser.errors == []
        await phone.aclose()
