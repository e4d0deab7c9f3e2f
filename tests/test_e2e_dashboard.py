"""End to end, the dashboard in a real browser: Debian's Chromium driven by Playwright, through a real mitmdump with
the addon, the test origin and the fake solving service. No mock browser: the page's own script reads the event
stream, fetches the images and draws the table; the test only waits on what the page shows."""

from __future__ import annotations

import asyncio
import io
import json
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
    """Page errors and Content Security Policy refusals."""
    console: list[str] = field(default_factory=list)
    """Everything a user would see in the console: errors and warnings (a 404 or 401 answer is one too)."""


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
            page.on("console", lambda m: out.console.append(f"{m.type}: {m.text} ({m.location.get('url')})")
                    if m.type in ("error", "warning") else None)
            page.on("response", lambda r: out.console.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: out.console.append(f"failed: {r.url} {r.failure}"))
            yield out
        finally:
            await browser.close()


def row(challenge_id: str) -> str:
    return f"tr[data-challenge={json.dumps(challenge_id, ensure_ascii=False)}]"


async def challenge(device: Device, mode: str) -> Challenge:
    ch = await device.get_challenge(mode, scheme="http" if mode == "slide" else "https")
    await device.fetch_images(ch, order="normal")
    return ch


async def answer_of(device: Device, ch: Challenge) -> dict[str, Any]:
    r = await device.api("/v1/answer/wait", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    event: dict[str, Any] = r.json()
    assert (event["challenge"], event["event"]) == (ch.id, "solved"), json.dumps(event)
    return event


async def verify(device: Device, ch: Challenge, event: dict[str, Any], *, right: bool) -> bool:
    answer = event["answer"]
    if ch.mode == "slide":
        width = answer["width_view"]
        x = answer["x"] if right else (answer["x"] + width / 3) % width
        return await device.verify(ch, x, width=width)
    value = float(answer["value"])
    return await device.verify(ch, value if right else (value + 135) % 271)


async def assert_pictures(page: Page, device: Device, ch: Challenge, token: str = "",
                          min_colours: int = MIN_COLOURS) -> None:
    """The row's thumbnails and drawn answer loaded, and the drawn answer is a real picture (page and API agree)."""
    thumbs = page.locator(f'{row(ch.id)} img.thumb[data-state="loaded"]')
    await expect(thumbs).to_have_count(len(ch.roles))
    assert sorted([await t.get_attribute("data-role") or "" for t in await thumbs.all()]) == sorted(ch.roles)
    picture = page.locator(f'{row(ch.id)} img.answer[data-state="loaded"]')
    await expect(picture).to_have_count(1)
    await picture.evaluate("img => img.decode()")
    seen = await picture.evaluate(SAMPLE_PIXELS)
    assert seen["width"] > 0 and seen["colours"] >= min_colours and seen["std"] >= MIN_STD, seen
    r = await device.api("/v1/challenges/answer.png", challenge=ch.id,
                         headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert pixels.shape[1::-1] == (seen["width"], seen["height"])
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colours and pixels.std() >= MIN_STD


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
            # The older URLs, with the id in the path, serve the same files as the page's.
            for by_path, path, query in (
                    (f"/v1/challenges/{first.id}/answer.png", "/v1/challenges/answer.png", {"challenge": first.id}),
                    (f"/v1/challenges/{first.id}/images/outer", "/v1/challenges/images",
                     {"challenge": first.id, "role": "outer"})):
                old, new = await a.api(by_path), await a.api(path, **query)
                assert (old.status_code, new.status_code, old.content) == (200, 200, new.content), by_path

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
            assert browser.console == []
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


# Client names and challenge ids come from the traffic: markup, any length, and path segments a browser collapses.
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1"><b>bold</b> &amp; <script>window.__pwned=2</script>'
LONG_NAME = "device-" + "0123456789" * 499 + "end"
NASTY_IDS = {("whirl", 0): "..", ("slide", 0): ".", ("whirl", 1): "a/../b?c=1&role=x#frag %2e%2E+/"}
MAX_ROW_PX = 200  # a row with its thumbnails and drawn answer is about 100 px; a wrapped long name thousands


@pytest.fixture(scope="module")
def nasty_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The origin hands out the first whirl as `..`, the first slide as `.`, the second whirl with a path inside."""
    d = tmp_path_factory.mktemp("nasty")
    generate(d, seed=67, count=2)
    manifest = json.loads((d / "manifest.json").read_text())
    seen: dict[str, int] = {}
    for c in manifest["challenges"]:
        n = seen[c["mode"]] = seen.get(c["mode"], -1) + 1
        c["id"] = NASTY_IDS.get((c["mode"], n), c["id"])
    (d / "manifest.json").write_text(json.dumps(manifest))
    with OriginServer(d) as origin:
        yield origin, d


async def test_hostile_names_and_ids_are_plain_text_clipped_and_reach_the_server_whole(
        nasty_kit: Any, tmp_path: Path) -> None:
    origin, d = nasty_kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_url=fake.base_url, captcha_solvers="omocaptcha",
        captcha_poll_ms=50, captcha_client_key="header:X-Device-Id",
    ) as p:
        long = Device("127.0.0.5", p.proxy_url, p.ca_path, device_header="X-Device-Id", device_id=LONG_NAME)
        hostile = Device("127.0.0.6", p.proxy_url, p.ca_path, device_header="X-Device-Id", device_id=HOSTILE_NAME)
        plain = Device("127.0.0.7", p.proxy_url, p.ca_path)
        async with browser_through(p.proxy_url) as browser:
            page = browser.page
            await page.goto(PAGE)
            await page.wait_for_selector('#conn[data-state="live"]')
            done: dict[str, tuple[Device, Challenge]] = {}
            for device, mode in ((long, "whirl"), (hostile, "slide"), (plain, "whirl"), (plain, "slide")):
                ch = await challenge(device, mode)
                await answer_of(device, ch)
                done[ch.id] = (device, ch)
            assert set(NASTY_IDS.values()) <= set(done), sorted(done)
            for device, ch in done.values():
                await page.wait_for_selector(f'{row(ch.id)}[data-status="solved"]')
                await assert_pictures(page, device, ch)

            # A 5,000-character name: one clipped line with an ellipsis, the whole name on hover; the row stays as
            # small as the others and the page as wide as the window.
            name = page.locator(f'{row("..")} td.client .text')
            assert await name.text_content() == LONG_NAME
            assert await name.get_attribute("title") == LONG_NAME
            heights = [(await page.locator(row(i)).bounding_box() or {"height": 1e9})["height"] for i in done]
            assert max(heights) < MAX_ROW_PX, heights
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            clipped = await name.evaluate("e => [e.scrollWidth > e.clientWidth, getComputedStyle(e).textOverflow]")
            assert clipped == [True, "ellipsis"], clipped

            # Markup in a name is text: the same characters, no element made of it, no script run from it.
            name = page.locator(f'{row(".")} td.client .text')
            assert await name.text_content() == HOSTILE_NAME
            assert await name.get_attribute("title") == HOSTILE_NAME
            assert await name.evaluate("e => e.childElementCount") == 0
            await page.fill("#client-filter", HOSTILE_NAME)
            await expect(page.locator("#rows tr:visible")).to_have_count(1)
            await expect(page.locator("#stats-scope")).to_have_text("client " + HOSTILE_NAME)
            assert await page.locator("#stats-scope").evaluate("e => e.childElementCount") == 0
            await page.fill("#client-filter", "")
            made = await page.evaluate("""() => ({
              pwned: window.__pwned === undefined ? null : window.__pwned,
              bold: document.querySelectorAll("b, script:not([src])").length,
              strayImages: document.querySelectorAll("img:not(.thumb):not(.answer)").length,
            })""")
            assert made == {"pwned": None, "bold": 0, "strayImages": 0}, made

            # A clean console from the first load on: no error, no warning, no answer of 400 or more (the favicon).
            assert browser.errors == [] and browser.console == [], browser.console
        for device in (long, hostile, plain):
            await device.aclose()


@pytest.fixture(scope="module")
def objects_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from tests.conftest import SAMPLES, samples_missing
    from tests.kit.synth import add_object_challenges, real_3d_names

    if not (SAMPLES / "3d-train" / "labels.json").exists():
        samples_missing(SAMPLES / "3d-train")
    d = tmp_path_factory.mktemp("objects")
    generate(d, seed=61, count=1)
    add_object_challenges(d, real_3d=[(real_3d_names(1)[0], "jpeg")], icons=1)
    with OriginServer(d) as origin:
        yield origin, d


async def test_object_rows_show_numbered_markers_on_the_points_and_the_prompt(
        objects_kit: Any, tmp_path: Path) -> None:
    from addon.publish.answer_picture import MARKER_FILL

    origin, d = objects_kit
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake, proxy(
        origin, tmp_path, omocaptcha_key=KEY, omocaptcha_v2_url=fake.v2_base_url, captcha_solvers="omocaptcha-v2",
        captcha_poll_ms=50,
    ) as p:
        device = Device("127.0.0.2", p.proxy_url, p.ca_path)
        async with browser_through(p.proxy_url) as browser:
            page = browser.page
            await page.goto(PAGE)
            await page.wait_for_selector('#conn[data-state="live"]')
            for mode in ("3d", "icon"):
                ch = await device.get_challenge(mode)
                await device.fetch_images(ch)
                event = await answer_of(device, ch)
                await page.wait_for_selector(f'{row(ch.id)}[data-status="solved"]')
                await expect(page.locator(f"{row(ch.id)} td.kind")).to_have_text(mode)
                # The made-up icon picture is a few flat shapes: fewer colours than a photograph.
                await assert_pictures(page, device, ch, min_colours=MIN_COLOURS if mode == "3d" else 8)
                if mode == "icon":
                    events = (await device.api("/v1/events", limit=10)).json()["events"]
                    [question] = [e["question"] for e in events if e["event"] == "captured" and e["challenge"] == ch.id]
                    assert question
                    await expect(page.locator(row(ch.id))).to_contain_text(question)
                # Each point to click carries the marker's colour in the drawn answer, a little off its centre
                # (where the number is written).
                r = await device.api("/v1/challenges/answer.png", challenge=ch.id)
                drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
                points = event["answer"]["points"]
                assert len(points) == 2
                for point in points:
                    x, y = round(point["x_natural"]), round(point["y_natural"])
                    patch = drawn[y - 9:y + 10, x - 9:x + 10].reshape(-1, 3)
                    near = np.abs(patch - np.array(MARKER_FILL[:3])).sum(axis=1) < 60
                    assert near.mean() > 0.3, (mode, point, near.mean())
            shot = Path(os.environ.get("CAPTCHA_SCREENSHOT_DIR", tmp_path)) / "dashboard-objects.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert browser.errors == [] and browser.console == []
        await device.aclose()
