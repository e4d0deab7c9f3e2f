"""Solve a captcha in Chromium through the proxy: Playwright waits for the proxy's answer, drags or clicks like a hand.

    uv run python -m scripts.example_playwright --proxy http://127.0.0.1:8080 --url https://SITE/PAGE-WITH-CAPTCHA

For each --url: open the page through the proxy, wait for the widget, measure its slider, ask the proxy for the
answer to that challenge in the slider's own pixels with a human-like plan (`/v1/answer/wait?...&plan=1`), replay
the plan with `page.mouse` and print the verdict the page shows. An object captcha (3d, icon) is a picture to click:
its plan is `clicks`, each point clicked at the picture's page coordinates after the plan's pauses, then Confirm.
--straight replays the same answer as a straight constant-speed drag (for clicks: all at once, no pause) instead,
to see a site refuse it. Exit code 0 when every verify passed.

Chromium trusts mitmproxy's CA through --ignore-certificate-errors-spki-list with the CA key's hash: nothing to
install in a certificate store, and unlike `ignore_https_errors` it trusts the proxy only, not any certificate.
The selectors fit the test kit's widget (tests/kit/widget/); change WIDGET_* for a real site.

Another way to get the answer: with `captcha_hold=true` the proxy holds the image response that completes a
challenge until it is solved and adds the final event as `X-Captcha-Answer`; read it in `page.on("response")`
(it has `answer.fraction`, but no converted drag nor plan: ask `/v1/answer` for those).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Mouse, Page, sync_playwright

from scripts.answer_api import (
    CHROMIUM_FLAGS,
    DEFAULT_CA,
    AnswerApi,
    burst_clicks,
    spki_hash,
    straight_path,
    widget_query,
)

WIDGET = "#captcha"
WIDGET_READY = "#captcha[data-state=ready]"
WIDGET_DONE = "#captcha[data-verdict]"
WIDGET_TRACK, WIDGET_HANDLE, WIDGET_PICTURE, WIDGET_CONFIRM = "#track", "#handle", "#picture", "#confirm"
CLICK_MODES = ("3d", "icon")


def replay(mouse: Mouse, x0: float, y0: float, path: list[list[float]]) -> None:
    """Press at (x0, y0), move through the path's `[t_ms, dx, dy]` steps on time, release at the last one."""
    mouse.move(x0, y0)
    mouse.down()
    start = time.perf_counter()
    for t_ms, dx, dy in path[1:]:
        delay = start + t_ms / 1000 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        mouse.move(x0 + dx, y0 + dy)
    mouse.up()


def click(mouse: Mouse, x0: float, y0: float, clicks: list[list[float]]) -> None:
    """Click each `[t_ms, x, y]` of the plan at (x0 + x, y0 + y), each at its time after the start."""
    start = time.perf_counter()
    for t_ms, x, y in clicks:
        delay = start + t_ms / 1000 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        mouse.click(x0 + x, y0 + y)


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    if found is None:
        raise RuntimeError(f"{selector} is not on screen")
    return {"x": found["x"], "y": found["y"], "width": found["width"], "height": found["height"]}


def solve(page: Page, api: AnswerApi, url: str, *, straight: bool = False) -> dict[str, Any]:
    """One challenge: load, answer, drag, verdict -> {mode, challenge, passed, message, event}."""
    after = api.newest_seq()
    page.goto(url)
    page.wait_for_selector(WIDGET_READY)
    widget = page.locator(WIDGET)
    challenge, mode = widget.get_attribute("data-challenge") or "", widget.get_attribute("data-mode") or ""
    picture = box(page, WIDGET_PICTURE)
    if mode in CLICK_MODES:
        event = api.wait(challenge, after, widget_query(mode, 0, 0, picture["width"]))
        gesture = "clicks"
    else:
        track, handle = box(page, WIDGET_TRACK), box(page, WIDGET_HANDLE)
        event = api.wait(challenge, after, widget_query(mode, track["width"], handle["width"], picture["width"]))
        gesture = "path"
    result: dict[str, Any] = {"mode": mode, "challenge": challenge, "event": event}
    if event["event"] != "solved" or gesture not in event:
        return {**result, "passed": False, "message": f"no answer: {event.get('reason', event['event'])}"}
    if gesture == "clicks":
        click(page.mouse, picture["x"], picture["y"], burst_clicks(event["clicks"]) if straight else event["clicks"])
        page.locator(WIDGET_CONFIRM).click()
    else:
        path = straight_path(event["path"]) if straight else event["path"]
        replay(page.mouse, round(handle["x"] + handle["width"] / 2), round(handle["y"] + handle["height"] / 2), path)
    page.wait_for_selector(WIDGET_DONE)
    passed = widget.get_attribute("data-verdict") == "pass"
    return {**result, "passed": passed, "message": page.locator("#verdict").inner_text()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxy", required=True, help="the mitmproxy address, e.g. http://127.0.0.1:8080")
    p.add_argument("--url", action="append", required=True, help="a page with the captcha (repeat for more)")
    p.add_argument("--ca", type=Path, default=DEFAULT_CA, help=f"mitmproxy's CA certificate (default {DEFAULT_CA})")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (Debian's chromium by default)")
    p.add_argument("--host", default="captcha.mitm", help="the addon's captcha_host")
    p.add_argument("--token", default="", help="captcha_api_token, if the proxy has one")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for an answer")
    p.add_argument("--straight", action="store_true",
                   help="drag in a straight line at constant speed, or click all points at once (a bot's)")
    p.add_argument("--screenshot", type=Path, help="save the widget after the last verdict to this PNG")
    p.add_argument("--headed", action="store_true", help="show the browser window")
    args = p.parse_args(argv)

    flags = [*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={spki_hash(args.ca)}"]
    api = AnswerApi(args.proxy, args.host, args.token, args.timeout)
    passed = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=not args.headed,
                                     proxy={"server": args.proxy}, args=flags)
        try:
            page = browser.new_page(viewport={"width": 480, "height": 520})
            page.set_default_timeout(args.timeout * 1000)
            for url in args.url:
                result = solve(page, api, url, straight=args.straight)
                passed += result["passed"]
                drag = result["event"].get("drag") or {}
                did = (f"clicked {len(drag['points'])} points" if "points" in drag
                       else f"dragged {drag.get('x', 0):.1f} px")
                print(f"{result['mode']} {result['challenge'][:12]}: {did}, "
                      f"{'passed' if result['passed'] else 'refused'}: {result['message']}", flush=True)
            if args.screenshot:
                page.locator(WIDGET).screenshot(path=str(args.screenshot))
        finally:
            browser.close()
            api.close()
    print(f"{passed} of {len(args.url)} passed", file=sys.stderr)
    return 0 if passed == len(args.url) else 1


if __name__ == "__main__":
    raise SystemExit(main())
