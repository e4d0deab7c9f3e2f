"""Solve a captcha in Chromium through the proxy with Selenium: wait for the proxy's answer, drag or click like a hand.

    uv run python -m scripts.example_selenium --proxy http://127.0.0.1:8080 --url https://SITE/PAGE-WITH-CAPTCHA

The same flow as scripts/example_playwright.py, with Debian's chromium-driver (/usr/bin/chromedriver) and W3C
actions: the plan's `[t_ms, dx, dy]` steps become pointer moves with pauses between them, in one `perform()`; an
object captcha's `clicks` (`[t_ms, x, y]` on the picture) become clicks with the plan's pauses, then Confirm.
Chromium trusts mitmproxy's CA through --ignore-certificate-errors-spki-list (the CA key's hash), as there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from scripts.answer_api import (
    CHROMIUM_FLAGS,
    DEFAULT_CA,
    AnswerApi,
    burst_clicks,
    spki_hash,
    straight_path,
    widget_query,
)

WIDGET_READY = "#captcha[data-state=ready]"
WIDGET_DONE = "#captcha[data-verdict]"
CLICK_MODES = ("3d", "icon")


def replay(driver: webdriver.Chrome, x0: int, y0: int, path: list[list[float]]) -> None:
    """Press at (x0, y0) (viewport pixels), move through the path's steps on time, release at the last one. W3C
    coordinates are whole pixels: each step is rounded, never accumulated, so the end is the plan's end."""
    actions = ActionBuilder(driver, duration=0)
    pointer = actions.pointer_action
    pointer.move_to_location(x0, y0)
    pointer.pointer_down()
    last = 0.0
    for t_ms, dx, dy in path[1:]:
        pointer.pause((t_ms - last) / 1000)
        pointer.move_to_location(x0 + round(dx), y0 + round(dy))
        last = t_ms
    pointer.pointer_up()
    actions.perform()


def click(driver: webdriver.Chrome, x0: float, y0: float, clicks: list[list[float]]) -> None:
    """Click each `[t_ms, x, y]` of the plan at (x0 + x, y0 + y) (viewport pixels, rounded), on time."""
    actions = ActionBuilder(driver, duration=0)
    pointer = actions.pointer_action
    last = 0.0
    for t_ms, x, y in clicks:
        if t_ms > last:
            pointer.pause((t_ms - last) / 1000)
        pointer.move_to_location(round(x0 + x), round(y0 + y))
        pointer.click()
        last = t_ms
    actions.perform()


def rect(driver: webdriver.Chrome, selector: str) -> dict[str, float]:
    found: dict[str, float] = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {x: r.x, y: r.y, width: r.width, height: r.height};", selector)
    return found


def solve(driver: webdriver.Chrome, api: AnswerApi, url: str, *, straight: bool = False,
          timeout: float = 30) -> dict[str, Any]:
    """One challenge: load, answer, drag, verdict -> {mode, challenge, passed, message, event}."""
    after = api.newest_seq()
    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    widget = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, WIDGET_READY))
    challenge, mode = widget.get_attribute("data-challenge") or "", widget.get_attribute("data-mode") or ""
    picture = rect(driver, "#picture")
    if mode in CLICK_MODES:
        event = api.wait(challenge, after, widget_query(mode, 0, 0, picture["width"]))
        gesture = "clicks"
    else:
        track, handle = rect(driver, "#track"), rect(driver, "#handle")
        event = api.wait(challenge, after, widget_query(mode, track["width"], handle["width"], picture["width"]))
        gesture = "path"
    result: dict[str, Any] = {"mode": mode, "challenge": challenge, "event": event}
    if event["event"] != "solved" or gesture not in event:
        return {**result, "passed": False, "message": f"no answer: {event.get('reason', event['event'])}"}
    if gesture == "clicks":
        click(driver, picture["x"], picture["y"], burst_clicks(event["clicks"]) if straight else event["clicks"])
        driver.find_element(By.ID, "confirm").click()
    else:
        path = straight_path(event["path"]) if straight else event["path"]
        replay(driver, round(handle["x"] + handle["width"] / 2), round(handle["y"] + handle["height"] / 2), path)
    done = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, WIDGET_DONE))
    passed = done.get_attribute("data-verdict") == "pass"
    return {**result, "passed": passed, "message": driver.find_element(By.ID, "verdict").text}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxy", required=True, help="the mitmproxy address, e.g. http://127.0.0.1:8080")
    p.add_argument("--url", action="append", required=True, help="a page with the captcha (repeat for more)")
    p.add_argument("--ca", type=Path, default=DEFAULT_CA, help=f"mitmproxy's CA certificate (default {DEFAULT_CA})")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (Debian's chromium by default)")
    p.add_argument("--driver", default="/usr/bin/chromedriver", help="the driver (Debian's chromium-driver)")
    p.add_argument("--host", default="captcha.mitm", help="the addon's captcha_host")
    p.add_argument("--token", default="", help="captcha_api_token, if the proxy has one")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for an answer")
    p.add_argument("--straight", action="store_true",
                   help="drag in a straight line at constant speed, or click all points at once (a bot's)")
    p.add_argument("--headed", action="store_true", help="show the browser window")
    args = p.parse_args(argv)

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    profile = tempfile.TemporaryDirectory(prefix="example-selenium-")
    for flag in (*CHROMIUM_FLAGS, f"--proxy-server={args.proxy}", f"--user-data-dir={profile.name}",
                 f"--ignore-certificate-errors-spki-list={spki_hash(args.ca)}", "--window-size=480,520"):
        options.add_argument(flag)
    if not args.headed:
        options.add_argument("--headless")
    api = AnswerApi(args.proxy, args.host, args.token, args.timeout)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=args.driver))
    passed = 0
    try:
        driver.set_page_load_timeout(args.timeout)
        for url in args.url:
            result = solve(driver, api, url, straight=args.straight, timeout=args.timeout)
            passed += result["passed"]
            drag = result["event"].get("drag") or {}
            did = f"clicked {len(drag['points'])} points" if "points" in drag else f"dragged {drag.get('x', 0):.1f} px"
            print(f"{result['mode']} {result['challenge'][:12]}: {did}, "
                  f"{'passed' if result['passed'] else 'refused'}: {result['message']}", flush=True)
    finally:
        driver.quit()
        api.close()
        profile.cleanup()
    print(f"{passed} of {len(args.url)} passed", file=sys.stderr)
    return 0 if passed == len(args.url) else 1


if __name__ == "__main__":
    raise SystemExit(main())
