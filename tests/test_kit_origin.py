"""The test kit itself: synthetic challenges (synth), the edata codec and the origin server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from tests.kit import synth
from tests.kit.edata_codec import EdataError, decode_edata, encode_edata, find_edata, seal
from tests.kit.origin import BACKUP_HOST, CDN_HOST, OriginServer
from tests.kit.synth import (
    Manifest,
    SlideChallenge,
    ThreeDChallenge,
    WhirlChallenge,
    generate,
    load_manifest,
)

ROOT = Path(__file__).resolve().parent.parent
COUNT = 6
PASS_BODY = {"code": 200, "data": None, "message": "Verification complete", "msg_code": "200",
             "msg_sub_code": "success"}
FAIL_BODY = {"code": 500, "data": {"msg": "VerifyErr"}, "message": "Unable to verify. Please try again.",
             "msg_code": "500", "msg_sub_code": "verify_err"}
PATH_STYLES = {
    "b4yrtqhy5a": r"/tos-maliva-i-b4yrtqhy5a-us/[0-9a-f]{32}~tplv-b4yrtqhy5a-(1\.png|2\.jpeg)",
    "447w7jt563": r"/tos-useast2a-i-447w7jt563-euttp/[0-9a-f]{32}~tplv-447w7jt563-(1\.png|2\.jpeg)",
    "71rtze2081": r"/tos-maliva-i-71rtze2081-us/[0-9a-f]{32}~tplv-71rtze2081-(1\.png|2\.jpeg)",
    "cn": r"/tos-cn-i-188rlo5p4y/[0-9a-f]{32}~tplv-188rlo5p4y-(1\.png|2\.jpeg)",
    "legacy-usa": r"/img/security-captcha-oversea-usa/(whirl|slide|3d)_[0-9a-f]{40}_1_[12]\.(png|jpg)~tplv-obj\.image",
    "legacy-sg": r"/img/security-captcha-oversea-singapore/(whirl|slide|3d)_[0-9a-f]{40}_1_[12]\.(png|jpg)"
                 r"~tplv-obj\.image",
}


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate(tmp_path_factory.mktemp("kit"), seed=11, count=COUNT)


@pytest.fixture(scope="module")
def origin(kit: Manifest) -> Iterator[OriginServer]:
    assert kit.root is not None
    with OriginServer(kit.root) as server:
        yield server


def open_image(kit: Manifest, img: synth.ImageRef) -> Image.Image:
    im = Image.open(kit.file(img))
    im.load()
    return im


# -- synth -------------------------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_seeded(kit: Manifest, tmp_path: Path) -> None:
    assert kit.root is not None
    again = generate(tmp_path / "again", seed=11, count=COUNT)
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (kit.root / "manifest.json").read_bytes()
    assert again.to_json() == kit.to_json()
    for _, _, img in kit.images():
        assert (tmp_path / "again" / img.file).read_bytes() == kit.file(img).read_bytes()
    other = generate(tmp_path / "other", seed=12, count=2)
    assert not {c.id for c in other.challenges} & {c.id for c in kit.challenges}


def test_manifest_counts_ids_truth_and_paths(kit: Manifest) -> None:
    assert kit.root is not None
    raw = json.loads((kit.root / "manifest.json").read_text())
    assert raw["widget"] == {"width": 340, "handle": 69, "travel": 271} and raw["seed"] == 11
    assert load_manifest(kit.root).to_json() == raw
    whirls, slides, threeds = kit.whirls(), kit.slides(), kit.threeds()
    assert len(whirls) == len(slides) == COUNT and len(threeds) == synth.three_d_count(COUNT) >= 1
    assert Counter(w.variant for w in whirls) == {"png": COUNT // 2, "jpeg": COUNT // 2}
    ids = [c.id for c in kit.challenges]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{40}", i) for i in ids)
    for w in whirls:
        assert 15 <= w.angle <= 345 and w.drag_px == round(w.angle / 360 * 271, 1)
    for s in slides:
        assert 120 <= s.gap_x <= 430 and 10 <= s.tip_y <= 344 - 110 - 10
    paths = [img.path for _, _, img in kit.images()]
    assert len(set(paths)) == len(paths)
    for c in kit.challenges:
        for img in c.images.values():
            assert re.fullmatch(PATH_STYLES[c.url_style], img.path), img.path
    assert Counter(c.url_style for c in kit.challenges).most_common(1)[0][0] == "b4yrtqhy5a"
    assert any(w.url_style == "legacy-usa" and w.variant == "png" and w.url1.path.startswith(
        "/img/security-captcha-oversea-usa/whirl_") and w.url1.path.endswith("_1_1.png~tplv-obj.image")
        for w in whirls)
    assert by_json_id(raw, whirls[0].id)["images"]["outer"]["file"] == whirls[0].url1.file


def by_json_id(raw: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in raw["challenges"] if c["id"] == cid)


def test_image_files_sizes_formats_and_shapes(kit: Manifest) -> None:
    for c, role, img in kit.images():
        data = kit.file(img).read_bytes()
        assert hashlib.sha256(data).hexdigest() == img.sha256
        assert data.startswith(b"\x89PNG" if img.format == "png" else b"\xff\xd8\xff"), (c.id, role)
        im = open_image(kit, img)
        assert im.size == (img.width, img.height)
        expected = {"outer": (347, 347), "inner": (211, 211), "background": (552, 344), "piece": (110, 110),
                    "image": (552, 344)}
        assert im.size == expected[role]
    for w in kit.whirls():
        outer, inner = open_image(kit, w.url1), open_image(kit, w.images["inner"])
        if w.variant == "png":
            assert outer.mode == inner.mode == "RGBA"
            alpha = outer.getchannel("A")
            assert alpha.getpixel((2, 2)) == alpha.getpixel((344, 344)) == 0
            assert alpha.getpixel((173, 173)) == alpha.getpixel((173 + 100, 173)) == 0
            assert alpha.getpixel((173 + 140, 173)) == alpha.getpixel((173, 173 - 140)) == 255
            assert inner.getchannel("A").getpixel((1, 1)) == 0 and inner.getchannel("A").getpixel((105, 105)) == 255
        else:
            assert outer.mode == inner.mode == "RGB"
            for point in ((2, 2), (173, 173), (173 + 95, 173), (173, 173 - 95)):
                assert min(outer.getpixel(point)) > 235  # type: ignore[arg-type]
            assert min(inner.getpixel((1, 1))) > 235  # type: ignore[arg-type]
    for s in kit.slides():
        assert open_image(kit, s.url1).mode == "RGB" and s.url1.format == "jpeg"
        piece = open_image(kit, s.images["piece"])
        assert piece.mode == "RGBA" and s.images["piece"].format == "png"
        alpha = piece.getchannel("A")
        opaque = sum(alpha.histogram()[129:]) / (110 * 110)
        assert 0.3 < opaque < 0.8
        # as on real slides, the shape begins 6-7 px inside its 110-px tile (the answer is the tile's left edge)
        assert alpha.getbbox() is not None and 6 <= alpha.getbbox()[0] <= 7  # type: ignore[index]
    for d in kit.threeds():
        assert d.url1.format == "png" and (d.url1.width, d.url1.height) == (552, 344)


def whirl_turn_found(outer: Image.Image, inner: Image.Image) -> float:
    """Best clockwise turn of the inner disc, matching its rim to the ring's inner edge (a tiny solver)."""
    ring, disc = outer.convert("RGB").load(), inner.convert("RGB").load()
    assert ring is not None and disc is not None

    def circle(px: Any, centre: float, r: float) -> list[tuple[int, int, int]]:
        return [px[round(centre + r * math.cos(math.radians(a))), round(centre + r * math.sin(math.radians(a)))]
                for a in range(360)]

    ring_rim, disc_rim = circle(ring, 173, 110), circle(disc, 105, 100)

    def cost(turn: int) -> int:
        return sum(abs(p - q) for a in range(0, 360, 2)
                   for p, q in zip(ring_rim[a], disc_rim[(a - turn) % 360], strict=True))

    return float(min(range(360), key=cost))


def test_whirl_angle_is_really_in_the_pictures(kit: Manifest) -> None:
    for w in kit.whirls():
        found = whirl_turn_found(open_image(kit, w.url1), open_image(kit, w.images["inner"]))
        diff = abs(found - w.angle) % 360
        assert min(diff, 360 - diff) <= 6, (w.id, w.variant, found, w.angle)


def slide_gap_found(background: Image.Image, piece: Image.Image, tip_y: int) -> int:
    """The x where the background's edges best follow the piece's outline (a tiny solver)."""
    edges = background.convert("L").filter(ImageFilter.FIND_EDGES)
    alpha = piece.getchannel("A")
    outline = ImageChops.subtract(alpha, alpha.filter(ImageFilter.MinFilter(3))).point(lambda v: 255 * (v > 60))

    def score(x: int) -> float:
        return float(ImageStat.Stat(edges.crop((x, tip_y, x + 110, tip_y + 110)), outline).mean[0])

    return max(range(background.width - 110), key=score)


def test_slide_gap_is_really_in_the_background(kit: Manifest) -> None:
    for s in kit.slides():
        found = slide_gap_found(open_image(kit, s.url1), open_image(kit, s.images["piece"]), s.tip_y)
        assert abs(found - s.gap_x) <= 2, (s.id, found, s.gap_x)


def test_synth_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synth.main(["--seed", "3", "--count", "2", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["challenges"] == 2 + 2 + synth.three_d_count(2)
    assert len(load_manifest(tmp_path).challenges) == summary["challenges"]


# -- edata -------------------------------------------------------------------------------------------------------


def test_edata_round_trip_and_layout() -> None:
    obj = {"data": {"challenges": [{"id": "a" * 40, "mode": "whirl"}], "verify_id": "Verify_x"}, "ü": [1, None]}
    text = encode_edata(obj)
    assert decode_edata(text) == obj
    blob = base64.b64decode(text)
    assert blob[0] == 1 and len(blob) == 45 + len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
                                                   .encode())
    assert encode_edata(obj) != text  # fresh key and nonce each time
    assert decode_edata(text.rstrip("=").replace("+", "-").replace("/", "_")) == obj
    key, nonce = bytes(range(32)), bytes(range(12))
    assert encode_edata(obj, key=key, nonce=nonce) == encode_edata(obj, key=key, nonce=nonce)


def test_edata_is_rfc8439_chacha20_from_counter_zero() -> None:
    keystream = seal(bytes(64), key=bytes(32), nonce=bytes(12))[45:]  # RFC 8439 A.1, test vector #1
    assert keystream.hex() == ("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                               "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")


@pytest.mark.parametrize("bad", ["", "!!!", base64.b64encode(b"\x02" + bytes(60)).decode(),
                                 base64.b64encode(b"\x01" + bytes(10)).decode(),
                                 base64.b64encode(seal(b"not json", key=bytes(32), nonce=bytes(12))).decode()])
def test_edata_rejects_what_is_not_an_envelope(bad: str) -> None:
    with pytest.raises(EdataError):
        decode_edata(bad)


def test_find_edata() -> None:
    assert find_edata({"edata": "x"}) == "x" and find_edata({"data": {"edata": "y"}}) == "y"
    assert find_edata({"data": None}) is None and find_edata([1]) is None and find_edata({"edata": 3}) is None


# -- origin ------------------------------------------------------------------------------------------------------


def question_of(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    data = body["data"]
    if "challenges" in data:
        (item,) = data["challenges"]
        return item, data["verify_id"]
    return data, data["verify_id"]


@pytest.mark.parametrize("mode", ["whirl", "slide", "3d"])
def test_get_single_shape(origin: OriginServer, kit: Manifest, mode: str) -> None:
    r = httpx.get(f"{origin.http_url}/captcha/get", params={"mode": mode, "aid": "1988", "device_id": "7"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == 200 and body["data"]["version"] == 2
    item, verify_id = question_of(body)
    c = kit.by_id(item["id"])
    assert c is not None and c.mode == mode == item["mode"] and r.headers["x-testkit-challenge"] == c.id
    assert item["challenge_code"] == {"whirl": 99996, "slide": 99999, "3d": 99997}[mode]
    assert re.fullmatch(r"Verify_[0-9a-f-]{36}", verify_id)
    q = item["question"]
    assert q["url1"] == f"https://{CDN_HOST}{c.url1.path}" and q["backup_url1"] == [f"https://{BACKUP_HOST}{c.url1.path}"]
    if c.url2 is None:
        assert "url2" not in q
    else:
        assert q["url2"] == f"https://{CDN_HOST}{c.url2.path}"
    assert q["tip_y"] == (c.tip_y if isinstance(c, SlideChallenge) else 0)


def test_get_list_and_edata_shapes(origin: OriginServer, kit: Manifest) -> None:
    r = httpx.get(f"{origin.http_url}/captcha/get", params={"mode": "slide", "shape": "list", "scheme": "http"})
    item, _ = question_of(r.json())
    c = kit.by_id(item["id"])
    assert isinstance(c, SlideChallenge) and item["question"]["url2"] == f"http://{CDN_HOST}{c.images['piece'].path}"
    wrappings = set()
    for _ in range(2):
        body = httpx.get(f"{origin.http_url}/captcha/get", params={"mode": "whirl", "shape": "edata"}).json()
        wrappings.add("top" if "edata" in body else "data")
        sealed = find_edata(body)
        assert sealed is not None
        item, _ = question_of(decode_edata(sealed))
        assert isinstance(kit.by_id(item["id"]), WhirlChallenge)
    assert wrappings == {"top", "data"}


def test_images_on_any_host(origin: OriginServer, kit: Manifest) -> None:
    with httpx.Client(base_url=origin.http_url) as client:
        for c in (kit.whirls()[0], kit.whirls()[1], kit.slides()[0], kit.threeds()[0]):
            for img in c.images.values():
                for host in (CDN_HOST, BACKUP_HOST, "p9-whatever.example"):
                    r = client.get(img.path, headers={"Host": host})
                    assert r.status_code == 200 and r.content == kit.file(img).read_bytes()
                    assert r.headers["content-type"] == f"image/{img.format}"


def verify(client: httpx.Client, body: dict[str, Any], **params: str) -> tuple[int, Any]:
    r = client.post("/captcha/verify", params={"aid": "1233", **params}, json=body)
    return r.status_code, (r.json() if r.headers.get("content-type") == "application/json" else r.text)


def drag(c: WhirlChallenge | SlideChallenge, x: float, width: int = 340) -> dict[str, Any]:
    reply = [{"x": round(x * k / 4, 2), "y": 2, "relative_time": 90 * k} for k in range(1, 5)]
    body = {"modified_img_width": width, "id": c.id, "mode": c.mode, "reply": reply, "verify_id": "Verify_1"}
    return {**body, "drag_width": 271} if isinstance(c, WhirlChallenge) else body


def test_verify_judges_slides_and_whirls(origin: OriginServer, kit: Manifest) -> None:
    before = origin.stats()["verified"]
    s, w = kit.slides()[1], kit.whirls()[1]
    cases = [
        (drag(s, s.gap_x * 340 / 552), True), (drag(s, s.gap_x, width=552), True),
        (drag(s, (s.gap_x + 3) * 348 / 552, width=348), True), (drag(s, (s.gap_x + 10) * 340 / 552), False),
        (drag(w, w.drag_px), True), (drag(w, w.drag_px + 271), True), (drag(w, w.drag_px + 3), True),
        (drag(w, w.drag_px + 20), False), (drag(w, 271 - w.drag_px), abs(w.angle - 180) < 5),
        ({**drag(w, w.drag_px), "id": "f" * 40}, False), ({**drag(w, w.drag_px), "mode": "slide"}, False),
        ({**drag(w, w.drag_px), "reply": []}, False), ({"id": w.id}, False),
    ]
    with httpx.Client(base_url=origin.http_url) as client:
        for body, expected in cases:
            assert verify(client, body) == (200, PASS_BODY if expected else FAIL_BODY), body
        status, sealed = verify(client, {"edata": encode_edata(drag(s, s.gap_x * 340 / 552))})
        assert status == 200 and set(sealed) == {"edata"} and decode_edata(sealed["edata"]) == PASS_BODY
        status, sealed = verify(client, {"data": {"edata": encode_edata(drag(w, 0))}})
        assert status == 200 and decode_edata(sealed["data"]["edata"]) == FAIL_BODY
        assert verify(client, drag(w, 0), fail_body="legacy")[1] == {
            "code": 500, "data": None, "message": "Verification failed. Please try again."}
        assert verify(client, drag(w, w.drag_px), fail_body="legacy")[1] == PASS_BODY
    after = origin.stats()["verified"]
    passes = sum(1 for _, ok in cases if ok) + 2
    assert after["pass"] - before["pass"] == passes
    assert after["fail"] - before["fail"] == len(cases) + 4 - passes


def test_robustness(origin: OriginServer) -> None:
    with httpx.Client(base_url=origin.http_url) as client:
        assert client.post("/captcha/verify", content=b"{not json").status_code == 400
        assert client.post("/captcha/verify", content=b"[1, 2]").status_code == 400
        assert client.post("/captcha/verify", json={"edata": "AAAA"}).status_code == 400
        assert client.post("/captcha/verify", content=b"x" * (2 << 20)).status_code == 413
        assert client.get("/captcha/verify").status_code == 405
        assert client.get("/nothing/here").status_code == 404
        assert client.get("/tos-maliva-i-b4yrtqhy5a-us/0~tplv-b4yrtqhy5a-2.jpeg").status_code == 404
        assert client.get("/captcha/get", params={"mode": "icon"}).status_code == 404
        assert client.get("/captcha/get", params={"mode": "whirl", "shape": "other"}).status_code == 400
        assert client.get("/plain/bytes", params={"n": "-1"}).status_code == 400
        plain = client.get("/plain/json")
        assert plain.status_code == 200 and plain.json()["status_code"] == 0
        blob = client.get("/plain/bytes", params={"n": "300000"})
        assert blob.headers["content-type"] == "image/jpeg" and len(blob.content) == 300000
        assert client.get("/plain/bytes", params={"n": "0"}).content == b""
        stats = client.get("/_stats").json()
    assert set(stats) >= {"served", "verified", "handed", "hosts"} and stats["served"]["not_found"] >= 2


def test_https_with_http2_and_http1(origin: OriginServer, kit: Manifest) -> None:
    with httpx.Client(base_url=origin.https_url, http2=True, verify=False) as client:
        r = client.get("/captcha/get", params={"mode": "whirl"}, headers={"Host": "verification-va.tiktok.com"})
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        c = kit.by_id(r.json()["data"]["id"])
        assert isinstance(c, WhirlChallenge)
        assert client.get(c.url1.path).content == kit.file(c.url1).read_bytes()
        assert verify(client, drag(c, c.drag_px)) == (200, PASS_BODY)
    with httpx.Client(base_url=origin.https_url, verify=str(origin.cert_file)) as client:
        r = client.get("/plain/json")
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
    assert origin.stats()["hosts"]["verification-va.tiktok.com"] >= 1


async def test_concurrent_gets_hand_out_each_challenge_once(kit: Manifest) -> None:
    assert kit.root is not None
    gets = 4 * COUNT + 3
    with OriginServer(kit.root) as server:
        async with httpx.AsyncClient(base_url=server.https_url, http2=True, verify=False) as h2, \
                httpx.AsyncClient(base_url=server.http_url) as h1:
            answers = await asyncio.gather(*(
                (h2 if n % 2 else h1).get("/captcha/get", params={"mode": "slide", "shape": "list"})
                for n in range(gets)))
        ids = [question_of(r.json())[0]["id"] for r in answers]
        assert len(set(ids)) == gets
        assert {i for i in ids if kit.by_id(i) is not None} == {s.id for s in kit.slides()}
        assert server.stats()["handed"]["slide"] == gets
        fresh = next(i for i in ids if kit.by_id(i) is None)
        truth = server.app.truth(fresh)
        assert truth is not None and truth["mode"] == "slide"
        with httpx.Client(base_url=server.http_url) as client:
            body = {"modified_img_width": 552, "id": fresh, "mode": "slide",
                    "reply": [{"x": truth["gap_x"], "y": 0, "relative_time": 1}]}
            assert verify(client, body) == (200, PASS_BODY)


def test_origin_cli_prints_ports_and_serves(kit: Manifest) -> None:
    assert kit.root is not None
    proc = subprocess.Popen([sys.executable, "-m", "tests.kit.origin", "--manifest", str(kit.root),
                             "--http-port", "0", "--https-port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        r = httpx.get(f"http://127.0.0.1:{ports['http_port']}/captcha/get", params={"mode": "3d"})
        assert isinstance(kit.by_id(r.json()["data"]["id"]), ThreeDChallenge)
        with httpx.Client(http2=True, verify=False) as client:
            assert client.get(f"https://127.0.0.1:{ports['https_port']}/plain/json").http_version == "HTTP/2"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def trajectory(x: float, *, ms: float = 900, wobble: float = 3.0, human: bool = True) -> list[dict[str, float]]:
    """A drag to x: a hand's (fast then easing out, a sine of `wobble` px up and down) or a constant-speed one."""
    out = []
    for t in range(0, int(ms) + 1, 15):
        u = t / ms
        out.append({"x": round(x * (1 - (1 - u) ** 3 if human else u), 2),
                    "y": round(20 + wobble * math.sin(math.pi * u), 2), "relative_time": t})
    out[-1]["x"] = x
    return out


def test_a_web_verify_is_judged_on_its_trajectory_too(origin: OriginServer, kit: Manifest) -> None:
    w, s = kit.whirls()[2], kit.slides()[2]
    right_w, right_s = drag(w, w.drag_px), drag(s, s.gap_x * 340 / 552)
    cases = [
        (right_w, trajectory(w.drag_px), ""),
        (right_s, trajectory(right_s["reply"][-1]["x"]), ""),
        (right_w, trajectory(w.drag_px, human=False), "trajectory_constant_speed"),
        (right_w, trajectory(w.drag_px, wobble=0), "trajectory_no_wobble"),
        (right_w, trajectory(w.drag_px, ms=250), "trajectory_too_fast"),
        (right_w, trajectory(w.drag_px)[-4:], "trajectory_too_few_points"),
        (drag(w, w.drag_px + 40), trajectory(w.drag_px + 40), "wrong_answer"),
    ]
    with httpx.Client(base_url=origin.http_url) as client:
        for body, reply, reason in cases:
            status, answer = verify(client, {**body, "reply": reply}, platform="pc")
            assert (status, answer) == (200, PASS_BODY if not reason else FAIL_BODY), reason
            logged = origin.stats()["verifications"][-1]
            assert (logged["id"], logged["reason"]) == (body["id"], reason or None)
            assert set(logged["trajectory"]) >= {"points"}
        # Without platform=pc (an app's verify, as the device client's) only the answer is judged, as before.
        assert verify(client, {**right_w, "reply": trajectory(w.drag_px, human=False, wobble=0, ms=100)}) == (
            200, PASS_BODY)
        assert "trajectory" not in origin.stats()["verifications"][-1]


def test_the_widget_is_served_on_any_host(origin: OriginServer) -> None:
    with httpx.Client(base_url=origin.http_url, headers={"Host": "www.example.com"}) as client:
        page = client.get("/captcha/widget/", params={"mode": "slide"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/captcha/widget/widget.js" in page.text and "https://" not in page.text  # nothing from a CDN
        script = client.get("/captcha/widget/widget.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "/captcha/verify?aid=1988&platform=pc" in script.text and "relative_time" in script.text
        assert client.get("/captcha/widget/widget.css").status_code == 200
        assert client.get("/captcha/widget/../origin.py").status_code == 404
        assert client.get("/captcha/widget/nothing.js").status_code == 404
        assert client.post("/captcha/widget/").status_code == 405


def test_a_web_verify_of_clicks_is_judged_on_their_timing_too(tmp_path: Path) -> None:
    generate(tmp_path, seed=12, count=1)
    icon = synth.add_object_challenges(tmp_path, icons=1, seed=12).challenges[-1]
    assert isinstance(icon, ThreeDChallenge) and icon.targets is not None and len(icon.targets) == 2
    scale = 340 / icon.url1.width
    inside = [(x * scale, y * scale) for x, y, _, _ in icon.targets]
    outside = [inside[0], (1.0, 1.0)]

    def clicks(times: list[float | None], points: list[tuple[float, float]] = inside) -> list[dict[str, Any]]:
        return [{"x": x, "y": y, **({"relative_time": t} if t is not None else {})}
                for (x, y), t in zip(points, times, strict=True)]

    body = {"modified_img_width": 340, "id": icon.id, "mode": "icon", "verify_id": "Verify_1"}
    cases = [
        (clicks([620, 1350]), ""),
        (clicks([1350, 620]), ""),  # judged in time order
        (clicks([620, 650]), "clicks_too_close"),  # under 80 ms apart
        (clicks([620, 720]), "clicks_too_fast"),  # 100 ms apart, both within 150 ms
        (clicks([620, None]), "clicks_no_time"),
        (clicks([620, 1350], outside), "wrong_answer"),  # the clicks are judged before their timing
        (clicks([620, 621], outside), "wrong_answer"),
    ]
    with OriginServer(tmp_path) as origin, httpx.Client(base_url=origin.http_url) as client:
        for reply, reason in cases:
            status, answer = verify(client, {**body, "reply": reply}, platform="pc")
            assert (status, answer) == (200, PASS_BODY if not reason else FAIL_BODY), reason
            logged = origin.stats()["verifications"][-1]
            assert logged["reason"] == (reason or None), reason
            assert "clicks" in logged["trajectory"]
        # Without platform=pc (the device client's verify) the clicks' timing is not judged.
        assert verify(client, {**body, "reply": clicks([0, 0])}) == (200, PASS_BODY)
        assert "trajectory" not in origin.stats()["verifications"][-1]
