"""The addon classes in-process, with mitmproxy's own test helpers (taddons, tflow)."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow, tutils
from PIL import Image, ImageDraw

from addon.mitm.capture import CaptchaCapture
from addon.mitm.outlets import CaptchaEvents
from addon.mitm.solving import CaptchaSolving
from addon.wiring import build_addons
from tests.conftest import seal

CDN = "p16-rc-captcha-va.ibyteimg.com"


def png(size: tuple[int, int], hole: bool = False, alpha: bool = True, seed: int = 0) -> bytes:
    img = Image.effect_noise(size, 40 + seed).convert("RGBA" if alpha else "RGB")
    if hole:
        w, h = size
        ImageDraw.Draw(img).ellipse(
            (w // 2 - 105, h // 2 - 105, w // 2 + 105, h // 2 + 105), fill=(0, 0, 0, 0) if alpha else (255, 255, 255)
        )
    out = io.BytesIO()
    img.save(out, "PNG" if alpha else "JPEG")
    return out.getvalue()


def make_flow(
    host: str,
    path: str,
    body: bytes,
    *,
    client: str = "10.0.0.2",
    method: str = "GET",
    request_body: bytes = b"",
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> Any:
    f = tflow.tflow(resp=True)
    f.client_conn.peername = (client, 40000)
    f.request = tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        path=path.encode(),
        method=method.encode(),
        content=request_body,
        headers=tuple((k.encode(), v.encode()) for k, v in (headers or {}).items()),
    )
    f.request.headers["host"] = host
    f.response = tutils.tresp(status_code=status, content=body)
    return f


@pytest.fixture
def addon_env(tmp_path: Path) -> Iterator[tuple[Any, CaptchaCapture, Path]]:
    addons = build_addons()
    capture = next(a for a in addons if isinstance(a, CaptchaCapture))
    outlets = next(a for a in addons if isinstance(a, CaptchaEvents))
    sidecar = tmp_path / "events.jsonl"
    with taddons.context(*addons) as tctx:
        # Capture only: these tests hold the capture stage; solving has its own.
        tctx.configure(capture, captcha_sidecar=str(sidecar), captcha_solvers="none")
        DRAINS.append(outlets.drain)
        yield tctx, capture, sidecar
        DRAINS.remove(outlets.drain)


DRAINS: list[Any] = []


def events(path: Path) -> list[dict[str, Any]]:
    """The sidecar's events, once the sidecar's thread has written all emitted so far."""
    for drain in DRAINS:
        drain()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def get_body(cid: str, mode: str, url1: str, url2: str, tip_y: int = 0) -> bytes:
    return json.dumps(
        {
            "code": 200,
            "data": {
                "id": cid,
                "mode": mode,
                "question": {"url1": url1, "url2": url2, "tip_y": tip_y},
                "verify_id": "Verify_x",
            },
        }
    ).encode()


async def test_whirl_from_get_is_captured_with_roles_and_flows_untouched(
    addon_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    _tctx, capture, sidecar = addon_env
    outer, inner = png((347, 347), hole=True), png((211, 211), seed=1)
    u1, u2 = f"https://{CDN}/tos-x/aaa~tplv-x-1.png", f"https://{CDN}/tos-x/bbb~tplv-x-1.png"
    get = make_flow("verification-va.tiktok.com", "/captcha/get?aid=1", get_body("c" * 40, "whirl", u1, u2))
    await capture.response(get)
    img2 = make_flow("p19-rc-captcha-va.ibyteimg.com", "/tos-x/bbb~tplv-x-1.png", inner)
    img1 = make_flow(CDN, "/tos-x/aaa~tplv-x-1.png?x=1", outer)
    before = (img1.response.content, img2.response.content, get.response.content)
    await capture.response(img2)
    await capture.response(img1)
    assert (img1.response.content, img2.response.content, get.response.content) == before
    [ev] = events(sidecar)
    assert ev["event"] == "captured" and ev["challenge"] == "c" * 40 and ev["kind"] == "rotate"
    assert ev["client"] == "10.0.0.2" and ev["source"] == "get" and ev["seq"] == 1
    assert ev["images"]["outer"]["width"] == 347 and ev["images"]["inner"]["format"] == "png"
    assert ev["images"]["inner"]["url"].startswith("https://p19-")
    assert img1.marked and "outer" in img1.comment and "whirl " + "c" * 40 in get.comment
    assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o600
    assert "captured rotate" in caplog.text


async def test_edata_slide_with_tip_y_and_verify(addon_env: Any) -> None:
    _, capture, sidecar = addon_env
    bg = png((552, 344), alpha=False)
    piece = png((110, 110), seed=3)
    inner = {
        "code": 200,
        "data": {
            "challenges": [
                {
                    "id": "s1",
                    "mode": "slide",
                    "question": {
                        "url1": f"https://{CDN}/tos/bg.jpeg",
                        "url2": f"https://{CDN}/tos/piece.png",
                        "tip_y": 77,
                    },
                }
            ]
        },
    }
    await capture.response(
        make_flow(
            "rc-verification-sg.tiktokv.com", "/captcha/get", json.dumps({"data": {"edata": seal(inner)}}).encode()
        )
    )
    await capture.response(make_flow(CDN, "/tos/piece.png", piece))
    await capture.response(make_flow(CDN, "/tos/bg.jpeg", bg))
    verify_req = json.dumps({"edata": seal({"id": "s1", "mode": "slide", "reply": []})}).encode()
    await capture.response(
        make_flow(
            "rc-verification-sg.tiktokv.com",
            "/captcha/verify",
            json.dumps({"code": 200, "message": "Verification complete", "msg_sub_code": "success"}).encode(),
            method="POST",
            request_body=verify_req,
        )
    )
    captured, verified = events(sidecar)
    assert captured["kind"] == "slide" and captured["tip_y"] == 77
    assert set(captured["images"]) == {"background", "piece"} and captured["images"]["background"]["format"] == "jpeg"
    assert verified["event"] == "verified" and verified["challenge"] == "s1" and verified["accepted"] is True


async def test_geometry_pairs_without_a_get_per_client(addon_env: Any) -> None:
    _, capture, sidecar = addon_env
    await capture.response(make_flow(CDN, "/a.png", png((347, 347), hole=True), client="10.0.0.3"))
    await capture.response(make_flow(CDN, "/b.png", png((211, 211)), client="10.0.0.4"))
    assert events(sidecar) == []
    await capture.response(make_flow(CDN, "/c.png", png((211, 211), seed=2), client="10.0.0.3"))
    [ev] = events(sidecar)
    assert ev["client"] == "10.0.0.3" and ev["source"] == "geometry" and ev["kind"] == "rotate"


async def test_outer_size_without_a_hole_is_not_a_ring(addon_env: Any) -> None:
    _, capture, sidecar = addon_env
    await capture.response(make_flow(CDN, "/a.png", png((347, 347)), client="10.0.0.3"))
    await capture.response(make_flow(CDN, "/c.png", png((211, 211)), client="10.0.0.3"))
    assert events(sidecar) == []


@pytest.mark.parametrize("body", [b"", b"<html>", b"\x89PNG\r\n\x1a\n\0\0", b"{" * 5000, os.urandom(4000)])
async def test_bad_input_passes_untouched_with_a_log_line(addon_env: Any, body: bytes) -> None:
    _tctx, capture, sidecar = addon_env
    for host, path in (
        ("verification-va.tiktok.com", "/captcha/get"),
        (CDN, "/x.png"),
        ("verification-va.tiktok.com", "/captcha/verify"),
    ):
        f = make_flow(host, path, body)
        f.response.headers["content-type"] = "image/png"
        await capture.response(f)
        assert f.response.content == body
    assert events(sidecar) == []


async def test_header_client_key_follows_the_connection(addon_env: Any) -> None:
    tctx, capture, sidecar = addon_env
    tctx.configure(capture, captcha_client_key="header:X-Device-Id")
    u1, u2 = f"https://{CDN}/tos/o.png", f"https://{CDN}/tos/i.png"
    get = make_flow(
        "verification-va.tiktok.com",
        "/captcha/get",
        get_body("h1", "whirl", u1, u2),
        headers={"X-Device-Id": "phone-7"},
    )
    await capture.response(get)
    for path, body in (("/tos/o.png", png((347, 347), hole=True)), ("/tos/i.png", png((211, 211)))):
        f = make_flow(CDN, path, body)
        f.client_conn = get.client_conn
        await capture.response(f)
    [ev] = events(sidecar)
    assert ev["client"] == "phone-7"


async def test_custom_get_filter_replaces_the_builtin_rule(addon_env: Any) -> None:
    tctx, capture, _sidecar = addon_env
    tctx.configure(capture, captcha_get_filter="~d example.test & ~u /challenge")
    body = get_body("f1", "whirl", f"https://{CDN}/o.png", f"https://{CDN}/i.png")
    await capture.response(make_flow("verification-va.tiktok.com", "/captcha/get", body))
    assert not capture.assembler.is_announced("/o.png")
    await capture.response(make_flow("example.test", "/challenge", body))
    assert capture.assembler.is_announced("/o.png")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("captcha_client_key", "mac"),
        ("captcha_get_filter", "~q ~~"),
        ("captcha_pair_window", 0),
        ("omocaptcha_url", "ftp://x"),
        ("captcha_max_jobs", 0),
        ("captcha_host", ""),
    ],
)
def test_bad_options_are_refused(addon_env: Any, option: str, value: Any) -> None:
    tctx, _capture, _ = addon_env
    with pytest.raises(exceptions.OptionsError):
        tctx.options.update(**{option: value})


def test_sidecar_off(tmp_path: Path) -> None:
    addons = build_addons()
    events_addon = next(a for a in addons if isinstance(a, CaptchaEvents))
    with taddons.context(*addons) as tctx:
        tctx.configure(events_addon, captcha_sidecar="")
        assert events_addon.sidecar is None


async def test_proxyauth_client_key(addon_env: Any) -> None:
    tctx, capture, sidecar = addon_env
    tctx.configure(capture, captcha_client_key="proxyauth")
    u1, u2 = f"https://{CDN}/tos/po.png", f"https://{CDN}/tos/pi.png"
    flows = [make_flow("verification-va.tiktok.com", "/captcha/get", get_body("p1", "whirl", u1, u2)),
             make_flow(CDN, "/tos/po.png", png((347, 347), hole=True)), make_flow(CDN, "/tos/pi.png", png((211, 211)))]
    for f in flows:
        f.metadata["proxyauth"] = ("phone-3", "pw")
        await capture.response(f)
    [ev] = events(sidecar)
    assert ev["client"] == "phone-3"


async def capture_whirl(capture: CaptchaCapture, cid: str, client: str, seed: int) -> None:
    u1, u2 = f"https://{CDN}/tos/{cid}-o.png", f"https://{CDN}/tos/{cid}-i.png"
    await capture.response(make_flow("verification-va.tiktok.com", "/captcha/get", get_body(cid, "whirl", u1, u2),
                                     client=client))
    await capture.response(make_flow(CDN, f"/tos/{cid}-o.png", png((347, 347), hole=True, seed=seed), client=client))
    await capture.response(make_flow(CDN, f"/tos/{cid}-i.png", png((211, 211), seed=seed), client=client))


async def verify(capture: CaptchaCapture, client: str, request: dict[str, Any], accepted: bool = True) -> None:
    answer = {"code": 200, "message": "Verification complete"} if accepted else {"code": 500, "message": "failed"}
    await capture.response(make_flow("verification-va.tiktok.com", "/captcha/verify", json.dumps(answer).encode(),
                                     method="POST", request_body=json.dumps(request).encode(), client=client))


async def test_a_verify_belongs_to_the_challenge_it_names_and_to_that_challenges_client(addon_env: Any) -> None:
    _, capture, sidecar = addon_env
    await capture_whirl(capture, "a1", "10.0.0.2", 1)
    await capture_whirl(capture, "a2", "10.0.0.2", 2)
    await capture_whirl(capture, "b1", "10.0.0.3", 3)
    # Another client (a controller, or a second app on the phone's connection) verifies a1: a1 and its owner.
    await verify(capture, "10.0.0.3", {"id": "a1", "mode": "whirl", "reply": []})
    # The owner verifies its older challenge although a2 is its newest: the challenge named, not the newest.
    await verify(capture, "10.0.0.2", {"id": "a1", "mode": "whirl", "reply": []}, accepted=False)
    # A verify that names no challenge is the sender's newest one.
    await verify(capture, "10.0.0.3", {"mode": "whirl", "reply": []})
    # An id never captured keeps the sender as its client, its kind from the verify's mode.
    await verify(capture, "10.0.0.4", {"id": "zz", "mode": "slide", "reply": []})
    verified = [(e["challenge"], e["client"], e["kind"], e["accepted"]) for e in events(sidecar)
                if e["event"] == "verified"]
    assert verified == [("a1", "10.0.0.2", "rotate", True), ("a1", "10.0.0.2", "rotate", False),
                        ("b1", "10.0.0.3", "rotate", True), ("zz", "10.0.0.4", "slide", True)]


async def test_a_verify_naming_no_challenge_from_a_client_without_one_is_dropped_with_a_log_line(
        addon_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, capture, sidecar = addon_env
    await verify(capture, "10.0.0.5", {"mode": "whirl", "reply": []})
    await verify(capture, "10.0.0.5", {"id": "q", "mode": "puzzle", "reply": []})  # a kind this addon does not do
    assert events(sidecar) == []
    assert "names no challenge and 10.0.0.5 has none" in caplog.text


async def test_what_capture_remembers_is_bounded_the_least_recently_written_out_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import addon.mitm.capture

    monkeypatch.setattr(addon.mitm.capture, "MAX_REMEMBERED_CHALLENGES", 2)
    addons = build_addons()
    capture = next(a for a in addons if isinstance(a, CaptchaCapture))
    sidecar = tmp_path / "events.jsonl"
    with taddons.context(*addons) as tctx:
        tctx.configure(capture, captcha_sidecar=str(sidecar), captcha_solvers="none")
        await capture_whirl(capture, "a1", "10.0.0.2", 1)
        await capture_whirl(capture, "b1", "10.0.0.3", 2)
        await verify(capture, "10.0.0.2", {"mode": "whirl", "reply": []})  # a read: it does not keep a1 longer
        await capture_whirl(capture, "c1", "10.0.0.4", 3)
        # 10.0.0.2's newest challenge and a1's owner are forgotten; b1's are still known.
        await verify(capture, "10.0.0.2", {"mode": "whirl", "reply": []})
        await verify(capture, "10.0.0.9", {"id": "a1", "mode": "whirl", "reply": []})
        await verify(capture, "10.0.0.9", {"id": "b1", "mode": "whirl", "reply": []})
        next(a for a in addons if isinstance(a, CaptchaEvents)).drain()
        verified = [(e["challenge"], e["client"]) for e in events(sidecar) if e["event"] == "verified"]
        assert verified == [("a1", "10.0.0.2"), ("a1", "10.0.0.9"), ("b1", "10.0.0.3")]
        assert "names no challenge and 10.0.0.2 has none" in caplog.text


async def test_the_solving_key_reaches_both_omocaptcha_services_and_a_missing_one_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    monkeypatch.setenv("OMOCAPTCHA_KEY", "env-key-2718")
    addons = build_addons()
    solving = next(a for a in addons if isinstance(a, CaptchaSolving))
    with taddons.context(*addons) as tctx:
        tctx.configure(solving, captcha_solvers="omocaptcha, omocaptcha-v2", captcha_sidecar="")
        assert [s._key for s in solving.scheduler.config.solvers] == ["env-key-2718"] * 2  # type: ignore[attr-defined]
    assert "captcha: solving key from OMOCAPTCHA_KEY" in caplog.text and "no key is set" not in caplog.text
    monkeypatch.delenv("OMOCAPTCHA_KEY")
    addons = build_addons()
    solving = next(a for a in addons if isinstance(a, CaptchaSolving))
    with taddons.context(*addons) as tctx:
        tctx.configure(solving, captcha_solvers="local, omocaptcha-v2", captcha_sidecar="")
    assert "names a paid service but no key is set (omocaptcha_key / OMOCAPTCHA_KEY)" in caplog.text
