"""The fake omocaptcha service (tests/kit/fake_omocaptcha.py) holds the v1 job contract strictly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.kit.fake_omocaptcha import FAULTS_BY_ENDPOINT, FakeOmocaptcha, FakeState

KEY = "key-one"
KEY2 = "key-two"
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ a tiny manifest


@dataclass
class Kit:
    dir: Path
    manifest: dict[str, Any]

    def challenge(self, mode: str, n: int = 0) -> dict[str, Any]:
        found: list[dict[str, Any]] = [c for c in self.manifest["challenges"] if c["mode"] == mode]
        return found[n]

    def b64(self, challenge: dict[str, Any], role: str) -> str:
        return base64.b64encode(self.raw(challenge, role)).decode()

    def raw(self, challenge: dict[str, Any], role: str) -> bytes:
        return (self.dir / str(challenge["images"][role]["file"])).read_bytes()


def _image(directory: Path, name: str, size: tuple[int, int], color: tuple[int, ...], fmt: str) -> dict[str, Any]:
    mode = "RGBA" if len(color) == 4 else "RGB"
    img = Image.new(mode, size, color)
    img.putpixel((1, 1), (color[0] ^ 0xFF, 0, 0, 255)[: len(color)])
    buf = io.BytesIO()
    img.save(buf, fmt)
    data = buf.getvalue()
    (directory / name).write_bytes(data)
    return {
        "file": name,
        "path": f"/tos-maliva-i-b4yrtqhy5a-us/{hashlib.md5(data).hexdigest()}~tplv-b4yrtqhy5a-2.jpeg",
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": size[0],
        "height": size[1],
        "format": fmt.lower(),
    }


def make_kit(directory: Path, tag: int = 0) -> Kit:
    """Two whirl challenges (png, jpeg), two slides and one 3d, small but well-formed, as CONTRACT.md says."""
    directory.mkdir(parents=True, exist_ok=True)
    challenges: list[dict[str, Any]] = []

    def cid(n: int) -> str:
        return hashlib.sha1(f"{tag}-{n}".encode()).hexdigest()

    for n, (variant, angle) in enumerate([("png", 123.4), ("jpeg", 200.0)]):
        fmt, ext, alpha = ("PNG", "png", (255,)) if variant == "png" else ("JPEG", "jpg", ())
        challenges.append(
            {
                "id": cid(n),
                "mode": "whirl",
                "variant": variant,
                "angle": angle,
                "drag_px": angle / 360 * 271,
                "images": {
                    "outer": _image(directory, f"w{n}-outer.{ext}", (47, 47), (10 + tag, 20 + n, 30, *alpha), fmt),
                    "inner": _image(directory, f"w{n}-inner.{ext}", (21, 21), (40 + tag, 50 + n, 60, *alpha), fmt),
                },
            }
        )
    for n, gap in enumerate([312, 101]):
        challenges.append(
            {
                "id": cid(10 + n),
                "mode": "slide",
                "variant": "jpeg",
                "gap_x": gap,
                "tip_y": 87,
                "images": {
                    "background": _image(directory, f"s{n}-bg.jpg", (552, 344), (70 + tag, 80 + n, 90), "JPEG"),
                    "piece": _image(directory, f"s{n}-piece.png", (11, 11), (1, 2 + n, 3, 128), "PNG"),
                },
            }
        )
    challenges.append(
        {
            "id": cid(20),
            "mode": "3d",
            "variant": "png",
            "images": {"background": _image(directory, "3d.png", (55, 34), (5 + tag, 6, 7), "PNG")},
        }
    )
    manifest = {"seed": 1, "widget": {"width": 340, "handle": 69, "travel": 271}, "challenges": challenges}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return Kit(directory, manifest)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path / "kit")


@pytest.fixture
def fake(kit: Kit) -> Iterator[FakeOmocaptcha]:
    with FakeOmocaptcha(keys=[KEY, KEY2], manifests=[kit.dir]) as f:
        yield f


@pytest.fixture
def ctl(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    """For the control paths outside /api/."""
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        yield c


@pytest.fixture
def client(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5) as c:
        yield c


def rotate_body(kit: Kit, n: int = 0, key: str = KEY) -> dict[str, Any]:
    ch = kit.challenge("whirl", n)
    image = kit.b64(ch, "inner") + "|" + kit.b64(ch, "outer")
    return {"api_token": key, "data": {"type_job_id": "23", "image_base64": image}}


def slide_body(kit: Kit, n: int = 0, width_view: Any = 340, key: str = KEY) -> dict[str, Any]:
    ch = kit.challenge("slide", n)
    return {
        "api_token": key,
        "data": {"type_job_id": "21", "image_base64": kit.b64(ch, "background"), "width_view": width_view},
    }


def create(client: httpx.Client, body: dict[str, Any]) -> int:
    r = client.post("createJob", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data == {"error": False, "job_id": data["job_id"], "message": "Create job success."}
    assert type(data["job_id"]) is int
    return int(data["job_id"])


def result(client: httpx.Client, job_id: int, key: str = KEY) -> dict[str, Any]:
    r = client.post("getJobResult", json={"api_token": key, "job_id": job_id})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    out: dict[str, Any] = r.json()
    return out


def balance(client: httpx.Client, key: str = KEY) -> Decimal:
    data = client.post("getBalance", json={"api_token": key}).json()
    assert data["error"] is False and data["message"] == "Get balance success."
    assert isinstance(data["balance"], str)
    return Decimal(data["balance"])


# ------------------------------------------------------------------------------------------------ the happy path


def test_rotate_and_slide_are_solved_from_the_manifest(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    for n in (0, 1):
        job = create(client, rotate_body(kit, n))
        expected = str(round(kit.challenge("whirl", n)["drag_px"]))
        assert result(client, job) == {"error": False, "status": "success", "result": expected}
    for n in (0, 1):
        for width_view in (340, 300.5):
            job = create(client, slide_body(kit, n, width_view))
            expected = str(round(kit.challenge("slide", n)["gap_x"] * width_view / 552))
            assert result(client, job) == {"error": False, "status": "success", "result": expected}
    assert fake.stats()["jobs"] == {"created": 6, "running": 0, "succeeded": 6, "failed": 0}


def test_job_ids_are_distinct_integers(kit: Kit, client: httpx.Client) -> None:
    ids = [create(client, rotate_body(kit)) for _ in range(3)]
    assert len(set(ids)) == 3


def test_running_until_solve_time_then_success(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=60)

    def at(job: int, seconds: float) -> dict[str, Any]:
        """The job's result `seconds` after it was made, from the fake's logic with the time given (no waiting)."""
        poll = json.dumps({"api_token": KEY, "job_id": job}).encode()
        answer = fake.state.api("getJobResult", "application/json", poll, now=fake.state.jobs[job].created + seconds)
        assert answer.body is not None
        return answer.body

    job = create(client, rotate_body(kit))
    assert result(client, job) == {"error": False, "status": "running", "result": None}
    assert fake.stats()["jobs"]["running"] == 1
    assert at(job, 59.99) == {"error": False, "status": "running", "result": None}
    assert at(job, 60.0) == {"error": False, "status": "success", "result": str(round(123.4 / 360 * 271))}
    # an unsolvable job is running as long, then fails with result null
    bad = rotate_body(kit)
    bad["data"]["image_base64"] = "|".join(reversed(bad["data"]["image_base64"].split("|")))
    job = create(client, bad)
    assert result(client, job) == {"error": False, "status": "running", "result": None}
    assert at(job, 59.99) == {"error": False, "status": "running", "result": None}
    assert at(job, 60.0) == {"error": False, "status": "fail", "result": None}
    # over HTTP too, once the solve time has passed
    fake.control(solve_seconds=0)
    job = create(client, rotate_body(kit, 1))
    assert result(client, job) == {"error": False, "status": "success", "result": str(round(200.0 / 360 * 271))}


@pytest.mark.parametrize(
    "case",
    ["swapped", "mixed", "unknown", "slide_bg_as_rotate", "piece", "3d", "whirl_as_slide", "slide_bg_swapped"],
)
def test_wrong_images_fail(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, case: str) -> None:
    w0, w1, s0 = kit.challenge("whirl", 0), kit.challenge("whirl", 1), kit.challenge("slide", 0)
    other = base64.b64encode(_png_bytes((9, 9))).decode()
    rotate = {
        "swapped": kit.b64(w0, "outer") + "|" + kit.b64(w0, "inner"),
        "mixed": kit.b64(w0, "inner") + "|" + kit.b64(w1, "outer"),
        "unknown": kit.b64(w0, "inner") + "|" + other,
        "slide_bg_as_rotate": kit.b64(s0, "background") + "|" + kit.b64(s0, "piece"),
        "slide_bg_swapped": kit.b64(s0, "piece") + "|" + kit.b64(s0, "background"),
    }
    slide = {
        "piece": kit.b64(s0, "piece"),
        "3d": kit.b64(kit.challenge("3d"), "background"),
        "whirl_as_slide": kit.b64(w0, "outer"),
    }
    if case in rotate:
        body = {"api_token": KEY, "data": {"type_job_id": "23", "image_base64": rotate[case]}}
    else:
        body = {"api_token": KEY, "data": {"type_job_id": "21", "image_base64": slide[case], "width_view": 340}}
    job = create(client, body)
    assert result(client, job) == {"error": False, "status": "fail", "result": None}
    assert fake.stats()["jobs"]["failed"] == 1


def _png_bytes(size: tuple[int, int], color: tuple[int, int, int] = (1, 2, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


async def test_concurrent_async_clients(kit: Kit, fake: FakeOmocaptcha) -> None:
    fake.control(solve_seconds=0.2, latency_ms=20)
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=5) as ac:

        async def one(n: int) -> str:
            body = rotate_body(kit, n % 2) if n % 3 else slide_body(kit, n % 2)
            r = await ac.post("createJob", json=body)
            job = r.json()["job_id"]
            while True:
                data = (await ac.post("getJobResult", json={"api_token": KEY, "job_id": job})).json()
                if data["status"] != "running":
                    return str(data["result"])
                await asyncio.sleep(0.05)

        results = await asyncio.gather(*(one(n) for n in range(12)))
    assert len(results) == 12 and "None" not in results
    assert fake.stats()["jobs"] == {"created": 12, "running": 0, "succeeded": 12, "failed": 0}
    assert len(fake.stats()["polls"]["per_job"]) == 12


# ------------------------------------------------------------------------------------------------ validation


def _bad_bodies(kit: Kit) -> dict[str, tuple[Any, str]]:
    """name -> (body to send as JSON, expected message)."""
    w = kit.challenge("whirl")
    inner, outer = kit.b64(w, "inner"), kit.b64(w, "outer")
    bg = kit.b64(kit.challenge("slide"), "background")
    not_image = base64.b64encode(b"this is not an image at all").decode()

    def rot(image: Any, **extra: Any) -> dict[str, Any]:
        return {"api_token": KEY, "data": {"type_job_id": "23", "image_base64": image, **extra}}

    def sl(**data: Any) -> dict[str, Any]:
        return {"api_token": KEY, "data": {"type_job_id": "21", "image_base64": bg, **data}}

    good = rot(inner + "|" + outer)
    return {
        "no token": ({"data": good["data"]}, "Invalid api token."),
        "wrong token": ({**good, "api_token": "nope"}, "Invalid api token."),
        "token not a string": ({**good, "api_token": 123}, "Invalid api token."),
        "empty token": ({**good, "api_token": ""}, "Invalid api token."),
        "json array": ([good], "Invalid JSON body."),
        "no data": ({"api_token": KEY}, "data is required."),
        "data is a string": ({"api_token": KEY, "data": "x"}, "data is required."),
        "type as number": (
            {"api_token": KEY, "data": {**good["data"], "type_job_id": 23}},
            "type_job_id must be a string.",
        ),
        "type missing": ({"api_token": KEY, "data": {"image_base64": inner + "|" + outer}}, "type_job_id is required."),
        "unknown type": ({"api_token": KEY, "data": {**good["data"], "type_job_id": "26"}}, "Job type not found."),
        "type with spaces": ({"api_token": KEY, "data": {**good["data"], "type_job_id": " 23"}}, "Job type not found."),
        "no image": ({"api_token": KEY, "data": {"type_job_id": "23"}}, "image_base64 is required."),
        "image as list": (rot([inner, outer]), "image_base64 is required."),
        "rotate one image": (rot(inner), "image_base64 must be two images joined by '|' for type_job_id 23."),
        "rotate three parts": (
            rot(inner + "|" + outer + "|" + outer),
            "image_base64 must be two images joined by '|' for type_job_id 23.",
        ),
        "rotate double bar": (
            rot(inner + "||" + outer),
            "image_base64 must be two images joined by '|' for type_job_id 23.",
        ),
        "rotate empty half": (rot(inner + "|"), "image_base64 is not valid base64."),
        "data prefix": (
            rot("data:image/png;base64," + inner + "|" + outer),
            "image_base64 must be plain base64, without a data: prefix.",
        ),
        "data prefix second": (
            rot(inner + "|data:image/png;base64," + outer),
            "image_base64 must be plain base64, without a data: prefix.",
        ),
        "not base64": (rot(inner + "|" + "@@@@"), "image_base64 is not valid base64."),
        "bad padding": (rot(inner.rstrip("=") + "A|" + outer), "image_base64 is not valid base64."),
        "newlines in base64": (rot(inner[:8] + "\n" + inner[8:] + "|" + outer), "image_base64 is not valid base64."),
        "urlsafe base64": (
            rot(inner.replace("+", "-").replace("/", "_") + "A-_A|" + outer),
            "image_base64 is not valid base64.",
        ),
        "not an image": (rot(inner + "|" + not_image), "image_base64 is not a valid image."),
        "truncated png": (
            rot(inner + "|" + base64.b64encode(base64.b64decode(outer)[:40]).decode()),
            "image_base64 is not a valid image.",
        ),
        "slide no width": (sl(), "width_view is required."),
        "slide width null": (sl(width_view=None), "width_view is required."),
        "slide width string": (sl(width_view="340"), "width_view must be a number."),
        "slide width bool": (sl(width_view=True), "width_view must be a number."),
        "slide width zero": (sl(width_view=0), "width_view must be positive."),
        "slide width negative": (sl(width_view=-340), "width_view must be positive."),
        "slide two images": (
            {"api_token": KEY, "data": {"type_job_id": "21", "image_base64": bg + "|" + bg, "width_view": 340}},
            "image_base64 must be one image for type_job_id 21.",
        ),
        "slide data prefix": (
            {
                "api_token": KEY,
                "data": {"type_job_id": "21", "image_base64": "data:image/jpeg;base64," + bg, "width_view": 340},
            },
            "image_base64 must be plain base64, without a data: prefix.",
        ),
    }


def test_every_validation_rule(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    before = balance(client)
    for name, (body, message) in _bad_bodies(kit).items():
        r = client.post("createJob", json=body)
        assert r.status_code == 200, name
        assert r.json() == {"error": True, "message": message}, name
    assert fake.stats()["jobs"]["created"] == 0
    assert balance(client) == before


def test_bodies_that_are_not_json(fake: FakeOmocaptcha, client: httpx.Client, kit: Kit) -> None:
    good = json.dumps(rotate_body(kit))
    cases: list[tuple[bytes, dict[str, str], str]] = [
        (
            b"api_token=key-one",
            {"content-type": "application/x-www-form-urlencoded"},
            "Content-Type must be application/json.",
        ),
        (good.encode(), {"content-type": "text/plain"}, "Content-Type must be application/json."),
        (good.encode(), {}, "Content-Type must be application/json."),
        (b"{not json", {"content-type": "application/json"}, "Invalid JSON body."),
        (b'{"api_token": NaN}', {"content-type": "application/json"}, "Invalid JSON body."),
        (b"", {"content-type": "application/json"}, "Invalid JSON body."),
        (b"\xff\xfe", {"content-type": "application/json"}, "Invalid JSON body."),
    ]
    for raw, headers, message in cases:
        for endpoint in ("createJob", "getJobResult", "getBalance", "getService"):
            r = client.post(endpoint, content=raw, headers=headers)
            assert r.status_code == 200
            assert r.json() == {"error": True, "message": message}, (raw, headers, endpoint)
    # a charset parameter is fine
    r = client.post("createJob", content=good.encode(), headers={"content-type": "application/json; charset=utf-8"})
    assert r.json()["error"] is False
    # the log keeps short raw text as it came
    assert any(e["body"] == "api_token=key-one" for e in fake.log())


def test_get_job_result_rules(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    job = create(client, rotate_body(kit))
    assert result(client, job + 1000) == {"error": True, "message": "Job not found."}
    assert result(client, job, key=KEY2) == {"error": True, "message": "Job not found."}
    assert result(client, job, key="bad") == {"error": True, "message": "Invalid api token."}
    for job_id in (str(job), float(job), None, True, [job]):
        r = client.post("getJobResult", json={"api_token": KEY, "job_id": job_id})
        assert r.json() == {"error": True, "message": "job_id must be an integer."}, job_id
    r = client.post("getJobResult", json={"api_token": KEY})
    assert r.json() == {"error": True, "message": "job_id must be an integer."}
    assert result(client, job)["status"] == "success"


def test_balance_and_service(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    r = client.post("getBalance", json={"api_token": KEY})
    assert r.json() == {"error": False, "balance": "10.00000", "message": "Get balance success."}
    create(client, rotate_body(kit))
    create(client, slide_body(kit))
    assert client.post("getBalance", json={"api_token": KEY}).json()["balance"] == "9.99890"
    assert balance(client, KEY2) == Decimal("10")
    assert client.post("getBalance", json={"api_token": "x"}).json() == {"error": True, "message": "Invalid api token."}
    assert client.post("getBalance", json={}).json() == {"error": True, "message": "Invalid api token."}
    assert fake.stats()["charged"] == "0.00110"

    service = client.post("getService", json={"api_token": KEY}).json()
    assert service["error"] is False
    assert [s["id"] for s in service["service"]] == [21, 23]
    for s in service["service"]:
        assert s["price"] == "0.00055" and isinstance(s["name"], str)
        assert {"avg_success", "avg_time"} <= s.keys()
    assert client.post("getService", json={}).json() == {"error": True, "message": "Invalid api token."}


def test_empty_balance_refuses_jobs(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(balance="0.00100")
    create(client, rotate_body(kit))
    assert client.post("createJob", json=rotate_body(kit)).json() == {"error": True, "message": "Balance not enough."}
    assert balance(client) == Decimal("0.00045")
    fake.control(balance={KEY: "1"})
    assert balance(client) == Decimal("1")


def test_paths_and_methods(fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client) -> None:
    body = {"api_token": KEY}
    for path in ("/api//getBalance", "/api/getBalance/", "/api/getbalance", "/api/nothing", "/api", "/api/"):
        r = ctl.post(path, json=body)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
    assert client.get("getBalance").status_code == 405
    assert client.post("getBalance?x=1", json=body).json()["error"] is False
    paths = [e["path"] for e in fake.log()]
    assert "/api//getBalance" in paths and "/api/getBalance/" in paths
    assert fake.stats()["requests"]["other"] == 6


# ------------------------------------------------------------------------------------------------ behaviour controls


def test_fail_share_spread_is_exact(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(fail_share=0.5, draw="spread")
    statuses = [result(client, create(client, slide_body(kit)))["status"] for _ in range(10)]
    assert statuses.count("fail") == 5
    assert fake.stats()["jobs"] == {"created": 10, "running": 0, "succeeded": 5, "failed": 5}
    reasons = {j["reason"] for j in fake.stats()["polls"]["per_job"].values() if j["status"] == "fail"}
    assert reasons == {"fail_share"}


def test_fail_share_random_repeats_with_the_seed(kit: Kit) -> None:
    def run(seed: int) -> list[str]:
        with (
            FakeOmocaptcha(keys=[KEY], manifests=[kit.dir], fail_share=0.5, seed=seed) as f,
            httpx.Client(base_url=f.base_url) as c,
        ):
            return [result(c, create(c, rotate_body(kit)))["status"] for _ in range(16)]

    first = run(7)
    assert first == run(7)
    assert 0 < first.count("fail") < 16
    assert first != run(8) or run(9) != first


def test_fail_share_extremes(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(fail_share=1.0)
    assert result(client, create(client, rotate_body(kit)))["status"] == "fail"
    fake.control(fail_share=0.0)
    assert result(client, create(client, rotate_body(kit)))["status"] == "success"


def test_invalid_key_mid_run(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=5)
    job = create(client, rotate_body(kit))
    fake.control(invalid_keys=[KEY])
    assert result(client, job) == {"error": True, "message": "Invalid api token."}
    assert client.post("createJob", json=rotate_body(kit)).json() == {"error": True, "message": "Invalid api token."}
    assert client.post("getBalance", json={"api_token": KEY}).json()["error"] is True
    create(client, rotate_body(kit, key=KEY2))  # the other key still works
    fake.control(invalid_keys=[])
    assert result(client, job)["status"] == "running"


def test_down_closes_every_api_connection(
    kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client
) -> None:
    fake.control(down=True)
    for endpoint in ("createJob", "getJobResult", "getBalance", "getService", "nothing"):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(endpoint, json=rotate_body(kit))
    assert ctl.get("/_control").json()["down"] is True
    assert fake.stats()["jobs"]["created"] == 0
    assert {e["status"] for e in fake.log()} == {"refused"}
    assert {e["fault"] for e in fake.log()} == {"down"}
    fake.control(down=False)
    create(client, rotate_body(kit))


def test_hold_keeps_every_job_running_until_let_go(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    assert fake.control(hold=True)["hold"] is True
    jobs = [create(client, rotate_body(kit)) for _ in range(2)]
    assert [result(client, j)["status"] for j in jobs] == ["running", "running"]
    fake.control(hold=False)
    assert [result(client, j)["status"] for j in jobs] == ["success", "success"]


def test_latency(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(latency_ms=250)
    t = time.monotonic()
    balance(client)
    assert time.monotonic() - t >= 0.25
    # a client that gives up during the latency may still have created (and paid for) a job
    with pytest.raises(httpx.ReadTimeout):
        client.post("createJob", json=rotate_body(kit), timeout=0.1)
    deadline = time.monotonic() + 3
    while fake.stats()["jobs"]["created"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["jobs"]["created"] == 1
    deadline = time.monotonic() + 3
    while fake.log()[-1]["status"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.log()[-1]["status"] in (200, "client_gone")


def test_control_validation(fake: FakeOmocaptcha, ctl: httpx.Client) -> None:
    bad: list[dict[str, Any]] = [
        {"nonsense": 1},
        {"fail_share": 1.5},
        {"fail_share": "0.5"},
        {"solve_seconds": -1},
        {"latency_ms": True},
        {"down": "yes"},
        {"hold": 1},
        {"invalid_keys": "k"},
        {"keys": []},
        {"draw": "sometimes"},
        {"seed": 1.5},
        {"balance": "lots"},
        {"balance": -1},
        {"faults": {"createJob": {"no_such_fault": 0.1}}},
        {"faults": {"getBalance": {"empty_result": 0.1}}},
        {"faults": {"createJob": {"empty_result": 0.1}}},
        {"faults": {"getBalance": {"http_500_after_create": 0.1}}},
        {"faults": {"nowhere": {"http_500": 0.1}}},
        {"faults": {"createJob": {"http_500": 0.7, "drop": 0.4}}},
        {"faults": {"createJob": {"http_500": 2}}},
        {"faults": ["http_500"]},
        {"add_manifest": "/nonexistent/dir"},
    ]
    before = fake.settings()
    for changes in bad:
        with pytest.raises((ValueError, OSError)):
            fake.control(**changes)
        r = ctl.post("/_control", json=changes)
        assert r.status_code == 400, changes
        assert isinstance(r.json()["error"], str)
    assert fake.settings() == before
    assert ctl.post("/_control", content=b"nope").status_code == 400


def test_control_over_http_and_reset(
    kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, tmp_path: Path, ctl: httpx.Client
) -> None:
    settings_ = ctl.get("/_control").json()
    assert settings_["solve_seconds"] == 0 and settings_["faults"] == {} and settings_["challenges"] == 5
    assert settings_["balances"] == {KEY: "10.00000", KEY2: "10.00000"}
    changes = {
        "solve_seconds": 1.5,
        "fail_share": 0.25,
        "latency_ms": 5,
        "seed": 3,
        "draw": "spread",
        "faults": {"getJobResult": {"http_500": 0.2, "non_json": 0.1}},
        "invalid_keys": [KEY2],
    }
    r = ctl.post("/_control", json=changes)
    assert r.status_code == 200
    for name, value in changes.items():
        assert r.json()[name] == value
    assert ctl.get("/_control").json() == r.json() == fake.settings()
    # faults replace the whole table
    assert fake.control(faults={"createJob": {"drop": 0.5}})["faults"] == {"createJob": {"drop": 0.5}}
    assert fake.control(faults=None)["faults"] == {}
    # add a manifest at run time
    other = make_kit(tmp_path / "other", tag=100)
    assert ctl.post("/_control", json={"add_manifest": str(other.dir)}).json()["challenges"] == 10
    fake.control(reset=True)
    assert fake.settings()["solve_seconds"] == 0 and fake.settings()["invalid_keys"] == []
    assert fake.settings()["challenges"] == 10
    job = create(client, rotate_body(other))
    assert result(client, job)["result"] == str(round(other.challenge("whirl")["drag_px"]))
    assert fake.add_manifest(make_kit(tmp_path / "third", tag=200).dir) == 5


# ------------------------------------------------------------------------------------------------ faults

HTML_FAULTS = {"http_500": 500, "http_502": 502, "http_429": 429, "non_json": 200}


@pytest.mark.parametrize("endpoint", ["createJob", "getJobResult", "getBalance", "getService"])
def test_faults_that_replace_the_answer(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, endpoint: str) -> None:
    job = create(client, rotate_body(kit))
    body = {"createJob": rotate_body(kit), "getJobResult": {"api_token": KEY, "job_id": job}}.get(
        endpoint, {"api_token": KEY}
    )
    wrong_shapes = {
        "createJob": {"errorId": 0, "taskId": 123456},
        "getJobResult": {"errorId": 0, "status": "processing"},
        "getBalance": {"errorId": 0, "balance": 345.678, "quantity": 10000, "voucher_balance": 123.211},
        "getService": {"errorId": 0, "services": []},
    }
    for fault, status in HTML_FAULTS.items():
        fake.control(faults={endpoint: {fault: 1.0}})
        r = client.post(endpoint, json=body)
        assert r.status_code == status, fault
        assert r.headers["content-type"].startswith("text/html")
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)
    fake.control(faults={endpoint: {"wrong_shape": 1.0}})
    assert client.post(endpoint, json=body).json() == wrong_shapes[endpoint]
    fake.control(faults={endpoint: {"error_true": 1.0}})
    assert client.post(endpoint, json=body).json() == {"error": True, "message": "Server busy."}
    fake.control(faults={endpoint: {"drop": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(endpoint, json=body)
    fake.control(faults={endpoint: {"hang": 1.0}})
    with pytest.raises(httpx.ReadTimeout):
        client.post(endpoint, json=body, timeout=0.2)
    fake.control(faults=None)
    # none of them created a job
    assert fake.stats()["jobs"]["created"] == 1
    faulted = [e for e in fake.log() if e["fault"]]
    assert [e["fault"] for e in faulted] == [*HTML_FAULTS, "wrong_shape", "error_true", "drop", "hang"]
    assert [e["status"] for e in faulted] == [*HTML_FAULTS.values(), 200, 200, "dropped", "hang"]
    assert fake.stats()["faults"][endpoint] == dict.fromkeys(
        [*HTML_FAULTS, "wrong_shape", "error_true", "drop", "hang"], 1
    )


def test_faults_after_create_still_create_and_charge(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(faults={"createJob": {"http_500_after_create": 1.0}})
    r = client.post("createJob", json=rotate_body(kit))
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    fake.control(faults={"createJob": {"drop_after_create": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("createJob", json=rotate_body(kit))
    fake.control(faults={"createJob": {"hang_after_create": 1.0}})
    with pytest.raises(httpx.ReadTimeout):
        client.post("createJob", json=rotate_body(kit), timeout=0.2)
    # a request that fails validation creates nothing, so the fault does not apply
    fake.control(faults={"createJob": {"http_500_after_create": 1.0}})
    assert client.post("createJob", json={"api_token": KEY}).json()["error"] is True
    assert fake.stats()["jobs"]["created"] == 3
    assert balance(client) == Decimal("10") - 3 * Decimal("0.00055")
    entries = [e for e in fake.log() if e["path"] == "/api/createJob"]
    assert [e["fault"] for e in entries] == ["http_500_after_create", "drop_after_create", "hang_after_create", None]
    assert all(isinstance(e["job_id"], int) for e in entries[:3])
    # the jobs exist and can be polled by id (as a client could learn from the log, never from the answer)
    assert result(client, entries[0]["job_id"])["status"] == "success"


def test_result_faults(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=60)
    running = create(client, rotate_body(kit))
    fake.control(solve_seconds=0)
    unsolvable = rotate_body(kit)
    unsolvable["data"]["image_base64"] = "|".join(reversed(unsolvable["data"]["image_base64"].split("|")))
    failed = create(client, unsolvable)
    solved = create(client, rotate_body(kit))
    answer = str(round(kit.challenge("whirl")["drag_px"]))

    def polls(fault: str) -> list[dict[str, Any]]:
        fake.control(faults={"getJobResult": {fault: 1.0}})
        return [result(client, job) for job in (running, failed, solved)]

    assert polls("empty_result") == [
        {"error": False, "status": "running", "result": ""},
        {"error": False, "status": "fail", "result": ""},
        {"error": False, "status": "success", "result": answer},
    ]
    assert polls("waiting_status") == [
        {"error": False, "status": "waiting", "result": None},
        {"error": False, "status": "fail", "result": None},
        {"error": False, "status": "success", "result": answer},
    ]
    assert polls("unknown_status") == [{"error": False, "status": "queued", "result": None}] * 3
    assert polls("success_field") == [
        {"error": False, "status": "running", "result": None, "success": False},
        {"error": False, "status": "fail", "result": None, "success": False},
        {"error": False, "status": "success", "result": answer, "success": True},
    ]
    # where a fault changed nothing, the log says no fault
    faults = [e["fault"] for e in fake.log() if e["path"] == "/api/getJobResult"]
    assert (
        faults
        == ["empty_result", "empty_result", None, "waiting_status", None, None]
        + ["unknown_status"] * 3
        + ["success_field"] * 3
    )


def test_success_field_on_other_endpoints(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(faults={"createJob": {"success_field": 1.0}, "getBalance": {"success_field": 1.0}})
    r = client.post("createJob", json=rotate_body(kit)).json()
    assert r["success"] is True and r["error"] is False and isinstance(r["job_id"], int)
    assert client.post("getBalance", json={"api_token": "bad"}).json() == {
        "error": True,
        "message": "Invalid api token.",
        "success": False,
    }


def test_fault_shares_spread_exactly(fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(draw="spread", faults={"getBalance": {"http_500": 0.25, "error_true": 0.25}})
    answers = []
    for _ in range(16):
        r = client.post("getBalance", json={"api_token": KEY})
        answers.append("500" if r.status_code == 500 else "busy" if r.json()["error"] else "ok")
    assert answers.count("500") == 4 and answers.count("busy") == 4 and answers.count("ok") == 8


def test_fault_shares_random_are_seeded(fake: FakeOmocaptcha, client: httpx.Client) -> None:
    def run(seed: int) -> list[int]:
        fake.control(seed=seed, faults={"getService": {"http_502": 0.5}})
        return [client.post("getService", json={"api_token": KEY}).status_code for _ in range(20)]

    first = run(11)
    assert first == run(11)
    assert 0 < first.count(502) < 20


def test_every_fault_is_covered() -> None:
    covered = {
        "http_500",
        "http_502",
        "http_429",
        "non_json",
        "wrong_shape",
        "error_true",
        "drop",
        "hang",
        "success_field",
        "empty_result",
        "waiting_status",
        "unknown_status",
        "http_500_after_create",
        "drop_after_create",
        "hang_after_create",
    }
    assert {f for faults in FAULTS_BY_ENDPOINT.values() for f in faults} == covered


# ------------------------------------------------------------------------------------------------ log and stats


def test_log_hides_image_bytes(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client) -> None:
    body = rotate_body(kit)
    create(client, body)
    prefixed = slide_body(kit)
    prefixed["data"]["image_base64"] = "data:image/jpeg;base64," + prefixed["data"]["image_base64"]
    client.post("createJob", json=prefixed)
    raw_log = json.dumps(ctl.get("/_log").json())
    for part in body["data"]["image_base64"].split("|"):
        assert part[:100] not in raw_log
    entry = fake.log()[0]
    assert entry["path"] == "/api/createJob" and entry["status"] == 200 and entry["fault"] is None
    assert isinstance(entry["time"], float) and entry["body"]["api_token"] == KEY
    w = kit.challenge("whirl")
    inner, outer = entry["body"]["data"]["image_base64"]
    for summary, role in ((inner, "inner"), (outer, "outer")):
        data = kit.raw(w, role)
        assert summary == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "format": "png",
            "challenge": w["id"],
            "role": role,
        }
    (bg,) = fake.log()[1]["body"]["data"]["image_base64"]
    assert bg["data_prefix"] is True and bg["format"] == "jpeg" and bg["role"] == "background"
    assert fake.log()[1]["response"] == {
        "error": True,
        "message": "image_base64 must be plain base64, without a data: prefix.",
    }
    assert len(raw_log) < 3000
    assert ctl.post("/_log/clear").json() == {"requests": []}
    assert fake.log() == []
    client.post("getService", json={"api_token": KEY})
    fake.clear_log()
    assert ctl.get("/_log").json() == {"requests": []}


def test_stats_count_polls_and_intervals(
    kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client
) -> None:
    # Held running for the first three polls, whatever the machine's load; ready at once after that.
    fake.control(solve_seconds=0, hold=True)
    job = create(client, rotate_body(kit))
    other = create(client, slide_body(kit))
    for _ in range(3):
        assert result(client, job)["status"] == "running"
        time.sleep(0.12)
    fake.control(hold=False)
    assert result(client, job)["status"] == "success"
    result(client, job)  # one poll after the final answer
    result(client, other)
    deadline = time.monotonic() + 10
    while ctl.get("/_stats").json()["jobs"]["running"]:  # the other job's solve time passing
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stats = ctl.get("/_stats").json()
    per = stats["polls"]["per_job"][str(job)]
    assert per["polls"] == 5 and per["polls_after_final"] == 1 and per["status"] == "success"
    arrived = fake.state.jobs[job].polls
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrived)]
    assert per["min_interval_ms"] == round(min(gaps), 3) and min(gaps[:3]) >= 120  # slept 0.12 s between those
    assert stats["polls"]["max"] == 5 and stats["polls"]["total"] == 6
    assert stats["polls"]["min_interval_ms"] == per["min_interval_ms"]
    assert stats["polls"]["per_job"][str(other)]["min_interval_ms"] is None
    assert stats["jobs"] == {"created": 2, "running": 0, "succeeded": 2, "failed": 0}
    assert stats["requests"]["createJob"] == 2 and stats["requests"]["getJobResult"] == 6
    assert stats == fake.stats()


# ------------------------------------------------------------------------------------------------ in-process fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10,
)
job_data = st.fixed_dictionaries(
    {},
    optional={
        "type_job_id": st.sampled_from(["21", "23", 21, 23, "", None]) | json_values,
        "image_base64": st.sampled_from(["", "|", "aGVsbG8=", "aGVsbG8=|aGVsbG8=", "data:x"]) | json_values,
        "width_view": st.sampled_from([340, 0, -1, "340", 1e308]) | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries({}, optional={"api_token": st.sampled_from([KEY, "x", 1]), "data": job_data})
    | json_values,
    endpoint=st.sampled_from(["createJob", "getJobResult", "getBalance", "getService"]),
)
def test_fuzz_never_crashes_and_answers_the_error_shape(body: Any, endpoint: str) -> None:
    state = FakeState([KEY])
    outcome = state.api(endpoint, "application/json", json.dumps(body).encode())
    assert outcome.status == 200 and outcome.body is not None
    assert isinstance(outcome.body["error"], bool)
    if outcome.body["error"]:
        assert set(outcome.body) == {"error", "message"} and isinstance(outcome.body["message"], str)
    assert not state.jobs  # no fuzzed body holds a real image
    state.summarize(body)


# ------------------------------------------------------------------------------------------------ the command line


def test_command_line(kit: Kit) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.kit.fake_omocaptcha",
            "--port",
            "0",
            "--key",
            KEY,
            "--key",
            KEY2,
            "--manifest",
            str(kit.dir),
            "--solve-seconds",
            "0",
            "--fault",
            "getService:http_502=1",
            "--draw",
            "spread",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert set(info) == {"port", "base_url", "v2_base_url"}
        assert info["base_url"] == f"http://127.0.0.1:{info['port']}/api/"
        with httpx.Client(base_url=info["base_url"]) as c:
            job = create(c, rotate_body(kit))
            assert result(c, job)["result"] == str(round(kit.challenge("whirl")["drag_px"]))
            assert c.post("getService", json={"api_token": KEY}).status_code == 502
            settings_ = c.get(f"http://127.0.0.1:{info['port']}/_control").json()
            assert settings_["keys"] == [KEY, KEY2] and settings_["draw"] == "spread"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_command_line_rejects_bad_faults(kit: Kit) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tests.kit.fake_omocaptcha", "--key", KEY, "--fault", "getBalance:empty_result=1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2 and "empty_result" in r.stderr and r.stdout == ""
