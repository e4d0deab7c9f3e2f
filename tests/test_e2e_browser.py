"""End to end in a real browser: Debian's Chromium, through a real mitmdump with the addon (the local solver, no
key), solves the test kit's captcha widget with the example clients of scripts/. The origin judges the answer and
the pointer's trajectory, so a right answer dragged in a straight line at constant speed is refused: the plan the
proxy hands out (`plan=1`) is what makes the difference."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import example_playwright
from tests.conftest import SAMPLES, samples_missing
from tests.kit.e2e import KEY, proxy
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpProcess
from tests.kit.synth import add_object_challenges, generate, real_3d_names

pytestmark = pytest.mark.timeout(120)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WIDGET = "https://verification-va.tiktok.com/captcha/widget/?mode={}"
LABELS_3D = SAMPLES / "3d-train" / "labels.json"


def needed(path: str, package: str) -> str:
    """The browser (or its driver); without it the test fails under CI (which installs it) and is skipped
    elsewhere."""
    found = shutil.which(path)
    if found is None:
        message = f"no {path} (apt-get install {package}, or set {package.upper().replace('-', '')} to its path)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginServer, MitmdumpProcess]]:
    needed(CHROMIUM, "chromium")  # before starting anything
    tmp = tmp_path_factory.mktemp("browser")
    generate(tmp / "challenges", seed=71, count=2)
    if LABELS_3D.exists():  # the object captchas' test says so when they are missing
        add_object_challenges(tmp / "challenges", real_3d=[(real_3d_names(1)[0], "jpeg")], icons=1, seed=71)
    with OriginServer(tmp / "challenges") as origin, proxy(origin, tmp, captcha_solvers="local") as mitm:
        yield origin, mitm


@pytest.fixture(scope="module")
def paid(kit: tuple[OriginServer, MitmdumpProcess],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitmdumpProcess]:
    """A second mitmdump beside the kit's, solving with the fake omocaptcha v2 (which takes 3d and icon)."""
    origin, _ = kit
    if not LABELS_3D.exists():
        samples_missing(LABELS_3D.parent)
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(origin.app.dir),)) as fake, proxy(
            origin, tmp_path_factory.mktemp("paid"), omocaptcha_key=KEY, omocaptcha_v2_url=fake.v2_base_url,
            captcha_solvers="omocaptcha-v2", captcha_poll_ms=50) as mitm:
        yield mitm


def args(mitm: MitmdumpProcess, *modes: str) -> list[str]:
    out = ["--proxy", mitm.proxy_url, "--ca", str(mitm.ca_path), "--chromium", needed(CHROMIUM, "chromium")]
    for mode in modes:
        out += ["--url", WIDGET.format(mode)]
    return out


def verdicts(origin: OriginServer, count: int) -> list[dict[str, Any]]:
    """The origin's last `count` verifications, each with the trajectory it measured."""
    found: list[dict[str, Any]] = origin.stats()["verifications"][-count:]
    assert len(found) == count and all("trajectory" in v for v in found), found
    return found


def test_playwright_solves_rotate_and_slide_with_the_plan(kit: tuple[OriginServer, MitmdumpProcess],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    origin, mitm = kit
    shot = tmp_path / "widget.png"
    assert example_playwright.main([*args(mitm, "whirl", "slide"), "--screenshot", str(shot)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["whirl", "slide"] and all("passed" in line for line in out), out
    judged = verdicts(origin, 2)
    assert [v["pass"] for v in judged] == [True, True], judged
    assert [origin.app.truth(v["id"])["mode"] for v in judged] == ["whirl", "slide"]
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_the_same_answers_dragged_straight_are_refused(kit: tuple[OriginServer, MitmdumpProcess],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    origin, mitm = kit
    assert example_playwright.main([*args(mitm, "whirl", "slide"), "--straight"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("refused" in line for line in out), out
    judged = verdicts(origin, 2)
    # Refused for the drag alone: the answer was right (the origin judges the answer first).
    assert [v["pass"] for v in judged] == [False, False], judged
    assert all(v["reason"] in ("trajectory_no_wobble", "trajectory_constant_speed") for v in judged), judged


def test_selenium_solves_a_rotate(kit: tuple[OriginServer, MitmdumpProcess],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    origin, mitm = kit
    driver = needed(CHROMEDRIVER, "chromium-driver")
    from scripts import example_selenium

    assert example_selenium.main([*args(mitm, "whirl"), "--driver", driver]) == 0
    assert "passed" in capsys.readouterr().out
    assert [v["pass"] for v in verdicts(origin, 1)] == [True]


def test_playwright_clicks_3d_and_icon_with_the_plan_and_a_burst_is_refused(
        kit: tuple[OriginServer, MitmdumpProcess], paid: MitmdumpProcess,
        capsys: pytest.CaptureFixture[str]) -> None:
    origin, _ = kit
    assert example_playwright.main(args(paid, "3d", "icon")) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["3d", "icon"], out
    assert all("clicked 2 points, passed" in line for line in out), out
    judged = verdicts(origin, 2)
    assert [v["pass"] for v in judged] == [True, True], judged
    assert [(origin.app.truth(v["id"]) or {}).get("mode") for v in judged] == ["3d", "icon"]
    assert all(v["trajectory"]["clicks"] == 2 and v["trajectory"]["min_gap_ms"] >= 80 for v in judged), judged

    # The same objects again (the origin starts over under fresh ids; the proxy's cache answers), clicked at once.
    assert example_playwright.main([*args(paid, "3d", "icon"), "--straight"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("refused" in line for line in out), out
    judged = verdicts(origin, 2)
    # Refused for the timing alone: the clicks were in the boxes (the origin judges them first).
    assert [v["pass"] for v in judged] == [False, False], judged
    assert all(v["reason"] in ("clicks_too_fast", "clicks_too_close") for v in judged), judged


def test_selenium_clicks_a_3d(kit: tuple[OriginServer, MitmdumpProcess], paid: MitmdumpProcess,
                              capsys: pytest.CaptureFixture[str]) -> None:
    origin, _ = kit
    driver = needed(CHROMEDRIVER, "chromium-driver")
    from scripts import example_selenium

    assert example_selenium.main([*args(paid, "3d"), "--driver", driver]) == 0
    assert "clicked 2 points, passed" in capsys.readouterr().out
    assert [v["pass"] for v in verdicts(origin, 1)] == [True]
