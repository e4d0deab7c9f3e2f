"""The fake omocaptcha service (tests/kit/fake_omocaptcha.py) holds the v2 task contract as strictly as v1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kit.fake_omocaptcha import (
    ALL_FAULTS_BY_ENDPOINT,
    JOB_FAILED,
    TASK_ROTATE,
    TASK_SLIDE,
    V2_FAULTS_BY_ENDPOINT,
    FakeOmocaptcha,
    FakeState,
)
from tests.kit.synth import AnyChallenge, Manifest, generate

KEY = "key-one"
KEY2 = "key-two"
ROOT = Path(__file__).resolve().parent.parent
BAD_KEY = {
    "errorId": 1,
    "errorCode": "ERROR_KEY_DOES_NOT_EXIST",
    "errorDescription": "Account authorization key not found in the system.",
}
NOT_FOUND = {"errorId": 1, "errorCode": "ERROR_TASK_NOT_FOUND", "errorDescription": "Task not found."}
TEMPORARY = {
    "task_is_maintenance": "ERROR_TASK_IS_MAINTENANCE",
    "service_unavailable": "ERROR_SERVICE_UNAVAILABLE",
    "redis_unavailable": "ERROR_REDIS_UNAVAILABLE",
    "redis_job_data": "ERROR_REDIS_JOB_DATA",
}


# ------------------------------------------------------------------------------------------------ a synth manifest


class Kit:
    def __init__(self, manifest: Manifest):
        self.m = manifest
        assert manifest.root is not None
        self.dir = manifest.root

    def raw(self, mode: str, n: int, role: str) -> bytes:
        challenges: list[AnyChallenge] = [c for c in self.m.challenges if c.mode == mode]
        return self.m.file(challenges[n].images[role]).read_bytes()

    def b64(self, mode: str, n: int, role: str) -> str:
        return base64.b64encode(self.raw(mode, n, role)).decode()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(generate(tmp_path_factory.mktemp("kit"), seed=12, count=2))


@pytest.fixture
def fake(kit: Kit) -> Iterator[FakeOmocaptcha]:
    with FakeOmocaptcha(keys=[KEY, KEY2], manifests=[kit.dir]) as f:
        yield f


@pytest.fixture
def client(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.v2_base_url, timeout=5) as c:
        yield c


@pytest.fixture
def ctl(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        yield c


def rotate_body(kit: Kit, n: int = 0, key: str = KEY) -> dict[str, Any]:
    images = [kit.b64("whirl", n, "inner"), kit.b64("whirl", n, "outer")]
    return {"clientKey": key, "task": {"type": TASK_ROTATE, "imageBase64s": images}}


def slide_body(kit: Kit, n: int = 0, width_view: Any = 340, key: str = KEY) -> dict[str, Any]:
    task = {"type": TASK_SLIDE, "imageBase64": kit.b64("slide", n, "background"), "widthView": width_view}
    return {"clientKey": key, "task": task}


def create(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post("createTask", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"errorId", "taskId"} and data["errorId"] == 0, data
    assert str(uuid.UUID(data["taskId"])) == data["taskId"]
    return str(data["taskId"])


def result(client: httpx.Client, task_id: str, key: str = KEY) -> dict[str, Any]:
    r = client.post("getTaskResult", json={"clientKey": key, "taskId": task_id})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    out: dict[str, Any] = r.json()
    return out


def balance(client: httpx.Client, key: str = KEY) -> float:
    data = client.post("getBalance", json={"clientKey": key}).json()
    assert set(data) == {"errorId", "balance", "quantity", "voucher_balance"} and data["errorId"] == 0
    assert type(data["balance"]) is float and type(data["quantity"]) is int
    return float(data["balance"])


def expected_rotate(kit: Kit, n: int) -> float:
    return round(1 - kit.m.whirls()[n].angle / 360, 2)


# ------------------------------------------------------------------------------------------------ the happy path


def test_answers_come_from_the_manifest_truth(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    for n, whirl in enumerate(kit.m.whirls()):
        answer = result(client, create(client, rotate_body(kit, n)))
        assert answer == {"errorId": 0, "status": "ready", "solution": {"rotate": expected_rotate(kit, n)}}
        # the documented meaning: the handle goes (1 - rotate) of the track, i.e. the disc turns (1 - r) * 360
        assert abs((1 - answer["solution"]["rotate"]) * 360 - whirl.angle) <= 1.8
    for n, slide in enumerate(kit.m.slides()):
        for width_view in (340, 300, 552):
            answer = result(client, create(client, slide_body(kit, n, width_view)))
            x = answer["solution"]["end"]["x"]
            assert answer == {"errorId": 0, "status": "ready", "solution": {"end": {"x": x}}}
            assert type(x) is int and x == round(slide.gap_x * width_view / 552)
    assert fake.stats()["v2"]["tasks"] == {"created": 8, "processing": 0, "ready": 8, "failed": 0}
    assert fake.stats()["jobs"]["created"] == 0  # v1 jobs are counted apart


def test_task_ids_are_distinct_uuids(kit: Kit, client: httpx.Client) -> None:
    ids = {create(client, rotate_body(kit)) for _ in range(3)}
    assert len(ids) == 3


def test_hold_keeps_every_task_processing_until_let_go(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(hold=True)
    task = create(client, rotate_body(kit))
    assert result(client, task) == {"errorId": 0, "status": "processing"}
    fake.control(hold=False)
    assert result(client, task)["status"] == "ready"


def test_processing_until_the_solve_time(kit: Kit) -> None:
    """Driven through FakeState with explicit times: no waiting on the clock."""
    state = FakeState([KEY], [kit.dir], solve_seconds=5)

    def call(endpoint: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        outcome = state.api(endpoint, "application/json", json.dumps(body).encode(), now=now)
        assert outcome.status == 200 and outcome.body is not None
        return outcome.body

    solvable = call("v2/createTask", rotate_body(kit), 100.0)["taskId"]
    swapped = rotate_body(kit)
    swapped["task"]["imageBase64s"].reverse()
    unsolvable = call("v2/createTask", swapped, 100.0)["taskId"]
    for task_id in (solvable, unsolvable):
        assert call("v2/getTaskResult", {"clientKey": KEY, "taskId": task_id}, 104.99) == {
            "errorId": 0,
            "status": "processing",
        }
    assert call("v2/getTaskResult", {"clientKey": KEY, "taskId": solvable}, 105.0)["status"] == "ready"
    assert call("v2/getTaskResult", {"clientKey": KEY, "taskId": unsolvable}, 105.0) == JOB_FAILED
    # tasks made after a change keep their own time; those made before keep theirs
    state.control({"solve_seconds": 0})
    later = call("v2/createTask", slide_body(kit), 200.0)["taskId"]
    assert call("v2/getTaskResult", {"clientKey": KEY, "taskId": later}, 200.0)["status"] == "ready"


@pytest.mark.parametrize(
    "case", ["swapped", "mixed", "unknown", "slide_bg_as_rotate", "piece", "3d", "whirl_as_slide", "same_twice"]
)
def test_wrong_images_fail(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, case: str) -> None:
    other = kit.b64("3d", 0, "image")
    rotate = {
        "swapped": [kit.b64("whirl", 0, "outer"), kit.b64("whirl", 0, "inner")],
        "mixed": [kit.b64("whirl", 0, "inner"), kit.b64("whirl", 1, "outer")],
        "unknown": [kit.b64("whirl", 0, "inner"), base64.b64encode(_png()).decode()],
        "slide_bg_as_rotate": [kit.b64("slide", 0, "background"), kit.b64("slide", 0, "piece")],
        "same_twice": [kit.b64("whirl", 0, "inner")] * 2,
    }
    slide = {"piece": kit.b64("slide", 0, "piece"), "3d": other, "whirl_as_slide": kit.b64("whirl", 0, "outer")}
    if case in rotate:
        body = {"clientKey": KEY, "task": {"type": TASK_ROTATE, "imageBase64s": rotate[case]}}
    else:
        body = {"clientKey": KEY, "task": {"type": TASK_SLIDE, "imageBase64": slide[case], "widthView": 340}}
    task_id = create(client, body)
    assert result(client, task_id) == JOB_FAILED
    assert JOB_FAILED == {
        "errorId": 1,
        "errorCode": "ERROR_JOB_STATUS",
        "errorDescription": "Job failed",
        "status": "fail",
        "solution": {},
    }
    per = fake.stats()["v2"]["polls"]["per_task"][task_id]
    assert per["status"] == "fail" and per["reason"] is not None and per["solution"] is None
    assert balance(client) == pytest.approx(10 - 0.00055)  # a failed task is charged too


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ validation


def _bad_bodies(kit: Kit) -> dict[str, tuple[Any, str, str]]:
    """name -> (body to send as JSON, expected errorCode, expected errorDescription)."""
    inner, outer = kit.b64("whirl", 0, "inner"), kit.b64("whirl", 0, "outer")
    bg = kit.b64("slide", 0, "background")
    not_image = base64.b64encode(b"this is not an image at all").decode()
    truncated = base64.b64encode(base64.b64decode(outer)[:40]).decode()
    bad, key_code, key_text = "ERROR_BAD_PARAMETERS", str(BAD_KEY["errorCode"]), str(BAD_KEY["errorDescription"])

    def rot(images: Any, **extra: Any) -> dict[str, Any]:
        return {"clientKey": KEY, "task": {"type": TASK_ROTATE, "imageBase64s": images, **extra}}

    def sl(**task: Any) -> dict[str, Any]:
        return {"clientKey": KEY, "task": {"type": TASK_SLIDE, "imageBase64": bg, **task}}

    good = rot([inner, outer])
    two = f"imageBase64s must be a list of two images for {TASK_ROTATE}."
    return {
        "no key": ({"task": good["task"]}, key_code, key_text),
        "wrong key": ({**good, "clientKey": "nope"}, key_code, key_text),
        "key not a string": ({**good, "clientKey": 123}, key_code, key_text),
        "empty key": ({**good, "clientKey": ""}, key_code, key_text),
        "v1 key field": ({"api_token": KEY, "task": good["task"]}, key_code, key_text),
        "json array": ([good], "ERROR_INVALID_REQUEST", "Invalid JSON body."),
        "no task": ({"clientKey": KEY}, "ERROR_TASK_ABSENT", "task is required."),
        "task is a string": ({"clientKey": KEY, "task": TASK_ROTATE}, "ERROR_TASK_ABSENT", "task is required."),
        "v1 data envelope": ({"clientKey": KEY, "data": good["task"]}, "ERROR_TASK_ABSENT", "task is required."),
        "type missing": (
            {"clientKey": KEY, "task": {"imageBase64s": [inner, outer]}},
            "ERROR_TASK_NOT_SUPPORTED",
            "Task type is not supported.",
        ),
        "v1 type id": (
            {"clientKey": KEY, "task": {**good["task"], "type": "23"}},
            "ERROR_TASK_NOT_SUPPORTED",
            "Task type is not supported.",
        ),
        "type in lower case": (
            {"clientKey": KEY, "task": {**good["task"], "type": TASK_ROTATE.lower()}},
            "ERROR_TASK_NOT_SUPPORTED",
            "Task type is not supported.",
        ),
        "type as list": (
            {"clientKey": KEY, "task": {**good["task"], "type": [TASK_ROTATE]}},
            "ERROR_TASK_NOT_SUPPORTED",
            "Task type is not supported.",
        ),
        "rotate without images": (
            {"clientKey": KEY, "task": {"type": TASK_ROTATE}},
            bad,
            "imageBase64s is required.",
        ),
        "rotate with the slide field": (
            {"clientKey": KEY, "task": {"type": TASK_ROTATE, "imageBase64": inner}},
            bad,
            "imageBase64s is required.",
        ),
        "rotate v1 joined string": (rot(inner + "|" + outer), bad, two),
        "rotate one image": (rot([inner]), bad, two),
        "rotate three images": (rot([inner, outer, outer]), bad, two),
        "rotate as object": (rot({"inside": inner, "outside": outer}), bad, two),
        "rotate non-string": (rot([inner, 5]), bad, "imageBase64s must hold two non-empty strings."),
        "rotate empty string": (rot([inner, ""]), bad, "imageBase64s must hold two non-empty strings."),
        "rotate data prefix": (
            rot(["data:image/png;base64," + inner, outer]),
            bad,
            "Images must be plain base64, without a data: prefix.",
        ),
        "rotate data prefix second": (
            rot([inner, "data:image/png;base64," + outer]),
            bad,
            "Images must be plain base64, without a data: prefix.",
        ),
        "rotate not base64": (rot([inner, "@@@@"]), bad, "Image is not valid base64."),
        "rotate bad length": (rot([inner[:-1], outer]), bad, "Image is not valid base64."),
        "rotate newline": (rot([inner[:8] + "\n" + inner[8:], outer]), bad, "Image is not valid base64."),
        "rotate url-safe alphabet": (rot(["A-_A" + inner, outer]), bad, "Image is not valid base64."),
        "rotate not an image": (rot([inner, not_image]), "ERROR_IMAGE_TYPE_NOT_SUPPORTED", "Image is not a valid image."),
        "rotate truncated png": (rot([inner, truncated]), "ERROR_IMAGE_TYPE_NOT_SUPPORTED", "Image is not a valid image."),
        "slide without image": (
            {"clientKey": KEY, "task": {"type": TASK_SLIDE, "widthView": 340}},
            bad,
            "imageBase64 is required.",
        ),
        "slide with the rotate field": (
            {"clientKey": KEY, "task": {"type": TASK_SLIDE, "imageBase64s": [bg], "widthView": 340}},
            bad,
            "imageBase64 is required.",
        ),
        "slide empty image": (sl(imageBase64="", widthView=340), bad, "imageBase64 is required."),
        "slide image as list": (sl(imageBase64=[bg], widthView=340), bad, "imageBase64 is required."),
        "slide no width": (sl(), bad, "widthView is required."),
        "slide width null": (sl(widthView=None), bad, "widthView is required."),
        "slide v1 width field": (sl(width_view=340), bad, "widthView is required."),
        "slide width string": (sl(widthView="340"), bad, "widthView must be an integer."),
        "slide width float": (sl(widthView=340.0), bad, "widthView must be an integer."),
        "slide width bool": (sl(widthView=True), bad, "widthView must be an integer."),
        "slide width zero": (sl(widthView=0), bad, "widthView must be positive."),
        "slide width negative": (sl(widthView=-340), bad, "widthView must be positive."),
        "slide two images joined": (sl(imageBase64=bg + "|" + bg, widthView=340), bad, "Image is not valid base64."),
        "slide data prefix": (
            sl(imageBase64="data:image/jpeg;base64," + bg, widthView=340),
            bad,
            "Images must be plain base64, without a data: prefix.",
        ),
    }


def test_every_validation_rule(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    before = balance(client)
    for name, (body, code, description) in _bad_bodies(kit).items():
        r = client.post("createTask", json=body)
        assert r.status_code == 200, name
        assert r.json() == {"errorId": 1, "errorCode": code, "errorDescription": description}, name
    assert fake.stats()["v2"]["tasks"]["created"] == 0
    assert balance(client) == before
    # fields the contract does not name are ignored, as in v1
    extra = rotate_body(kit)
    extra["softId"] = 7
    extra["task"]["widthView"] = 340
    create(client, extra)


def test_bodies_that_are_not_json(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    good = json.dumps(rotate_body(kit)).encode()
    wrong_type = {"errorId": 1, "errorCode": "ERROR_INVALID_REQUEST", "errorDescription": "Content-Type must be application/json."}
    not_json = {"errorId": 1, "errorCode": "ERROR_INVALID_REQUEST", "errorDescription": "Invalid JSON body."}
    cases: list[tuple[bytes, dict[str, str], dict[str, Any]]] = [
        (b"clientKey=key-one", {"content-type": "application/x-www-form-urlencoded"}, wrong_type),
        (good, {"content-type": "text/plain"}, wrong_type),
        (good, {}, wrong_type),
        (b"{not json", {"content-type": "application/json"}, not_json),
        (b'{"clientKey": NaN}', {"content-type": "application/json"}, not_json),
        (b"", {"content-type": "application/json"}, not_json),
        (b"\xff\xfe", {"content-type": "application/json"}, not_json),
    ]
    for raw, headers, expected in cases:
        for endpoint in ("createTask", "getTaskResult", "getBalance", "report"):
            r = client.post(endpoint, content=raw, headers=headers)
            assert r.status_code == 200
            assert r.json() == expected, (raw, headers, endpoint)
    r = client.post("createTask", content=good, headers={"content-type": "application/json; charset=utf-8"})
    assert r.json()["errorId"] == 0
    assert fake.stats()["v2"]["tasks"]["created"] == 1


def test_get_task_result_rules(kit: Kit, client: httpx.Client) -> None:
    task_id = create(client, rotate_body(kit))
    assert result(client, str(uuid.uuid4())) == NOT_FOUND
    assert result(client, task_id, key=KEY2) == NOT_FOUND
    assert result(client, task_id, key="bad") == BAD_KEY
    for bad in (uuid.UUID(task_id).int, None, True, [task_id], {"id": task_id}):
        r = client.post("getTaskResult", json={"clientKey": KEY, "taskId": bad})
        assert r.json() == {"errorId": 1, "errorCode": "ERROR_BAD_PARAMETERS", "errorDescription": "taskId must be a string."}
    r = client.post("getTaskResult", json={"clientKey": KEY, "task_id": task_id})
    assert r.json()["errorCode"] == "ERROR_BAD_PARAMETERS"
    assert result(client, task_id)["status"] == "ready"


def test_balance_is_a_float_shared_with_v1(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    assert client.post("getBalance", json={"clientKey": KEY}).json() == {
        "errorId": 0,
        "balance": 10.0,
        "quantity": 18181,
        "voucher_balance": 0.0,
    }
    create(client, rotate_body(kit))
    create(client, slide_body(kit))
    assert balance(client) == 9.9989
    # one account: a v1 job is paid from the same balance
    v1 = httpx.post(fake.base_url + "getBalance", json={"api_token": KEY}).json()
    assert v1["balance"] == "9.99890"
    assert balance(client, KEY2) == 10.0
    assert client.post("getBalance", json={"clientKey": "x"}).json() == BAD_KEY
    assert client.post("getBalance", json={}).json() == BAD_KEY
    assert fake.stats()["charged"] == "0.00110"
    fake.control(balance="0.5")
    assert balance(client) == 0.5


def test_empty_balance_refuses_tasks(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(balance="0.00100")
    create(client, rotate_body(kit))
    assert client.post("createTask", json=rotate_body(kit)).json() == {
        "errorId": 1,
        "errorCode": "ERROR_ZERO_BALANCE",
        "errorDescription": "Account has zero balance.",
    }
    assert balance(client) == 0.00045
    assert fake.stats()["v2"]["tasks"]["created"] == 1


def test_balance_flag_applies_to_both(kit: Kit) -> None:
    with FakeOmocaptcha(keys=[KEY], balance="3.25") as f:
        assert httpx.post(f.v2_base_url + "getBalance", json={"clientKey": KEY}).json()["balance"] == 3.25
        assert httpx.post(f.base_url + "getBalance", json={"api_token": KEY}).json()["balance"] == "3.25000"


def test_report_is_recorded(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    a, b = create(client, rotate_body(kit)), create(client, slide_body(kit))
    other = create(client, rotate_body(kit, key=KEY2))
    assert client.post("report", json={"clientKey": KEY, "id": [a], "isSuccess": True}).json() == {"errorId": 0}
    assert client.post("report", json={"clientKey": KEY, "id": [a, b], "isSuccess": False}).json() == {"errorId": 0}
    bad = "ERROR_BAD_PARAMETERS"
    for body, code in [
        ({"clientKey": KEY, "id": a, "isSuccess": True}, bad),
        ({"clientKey": KEY, "id": [], "isSuccess": True}, bad),
        ({"clientKey": KEY, "id": [1], "isSuccess": True}, bad),
        ({"clientKey": KEY, "id": [a]}, bad),
        ({"clientKey": KEY, "id": [a], "isSuccess": "true"}, bad),
        ({"clientKey": KEY, "id": [a], "isSuccess": 1}, bad),
        ({"clientKey": KEY, "taskId": a, "isSuccess": True}, bad),
        ({"clientKey": KEY, "id": [a, str(uuid.uuid4())], "isSuccess": True}, "ERROR_TASK_NOT_FOUND"),
        ({"clientKey": KEY, "id": [other], "isSuccess": True}, "ERROR_TASK_NOT_FOUND"),
        ({"clientKey": "nope", "id": [a], "isSuccess": True}, "ERROR_KEY_DOES_NOT_EXIST"),
    ]:
        answer = client.post("report", json=body).json()
        assert answer["errorId"] == 1 and answer["errorCode"] == code, body
    stats = fake.stats()["v2"]
    assert stats["reports"] == {"accepted": 1, "rejected": 2}
    assert stats["polls"]["per_task"][a]["reports"] == [True, False]
    assert stats["polls"]["per_task"][b]["reports"] == [False]
    assert stats["polls"]["per_task"][other]["reports"] == []
    reports = [e for e in fake.log() if e["path"] == "/v2/report"]
    assert len(reports) == 12 and reports[1]["body"] == {"clientKey": KEY, "id": [a, b], "isSuccess": False}
    assert reports[1]["response"] == {"errorId": 0} and reports[1]["status"] == 200


def test_paths_and_methods(fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client) -> None:
    body = {"clientKey": KEY}
    paths = ("/v2//getBalance", "/v2/getBalance/", "/v2/getbalance", "/v2/nothing", "/v2", "/v2/", "/api/v2/getBalance")
    for path in (*paths, "/api/createTask", "/v2/createJob"):
        r = ctl.post(path, json=body)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
    for endpoint in ("createTask", "getTaskResult", "getBalance", "report"):
        r = client.get(endpoint)
        assert r.status_code == 405 and r.headers["content-type"].startswith("text/html")
    assert client.post("getBalance?x=1", json=body).json()["errorId"] == 0
    requests = fake.stats()["requests"]
    assert requests["other"] == 9 and requests["v2/getBalance"] == 2 and requests["getBalance"] == 0
    assert requests["v2/createTask"] == 1 and requests["v2/report"] == 1


# ------------------------------------------------------------------------------------------------ behaviour controls


def test_fail_share_spread_is_exact(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(fail_share=0.5, draw="spread")
    answers = [result(client, create(client, slide_body(kit))) for _ in range(10)]
    assert answers.count(JOB_FAILED) == 5
    assert fake.stats()["v2"]["tasks"] == {"created": 10, "processing": 0, "ready": 5, "failed": 5}
    per = fake.stats()["v2"]["polls"]["per_task"].values()
    assert {p["reason"] for p in per if p["status"] == "fail"} == {"fail_share"}


def test_invalid_key_mid_run(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=60)
    task_id = create(client, rotate_body(kit))
    fake.control(invalid_keys=[KEY])
    assert result(client, task_id) == BAD_KEY
    assert client.post("createTask", json=rotate_body(kit)).json() == BAD_KEY
    assert client.post("getBalance", json={"clientKey": KEY}).json() == BAD_KEY
    create(client, rotate_body(kit, key=KEY2))
    fake.control(invalid_keys=[])
    assert result(client, task_id) == {"errorId": 0, "status": "processing"}


def test_down_closes_every_v2_connection(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(down=True)
    for endpoint in ("createTask", "getTaskResult", "getBalance", "report", "nothing"):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(endpoint, json=rotate_body(kit))
    assert {e["status"] for e in fake.log()} == {"refused"}
    assert {e["fault"] for e in fake.log()} == {"down"}
    fake.control(down=False)
    create(client, rotate_body(kit))


def test_control_accepts_v2_fault_tables(fake: FakeOmocaptcha, ctl: httpx.Client) -> None:
    table = {"v2/createTask": {"service_unavailable": 0.5}, "v2/getTaskResult": {"empty_solution": 0.1}}
    assert fake.control(faults=table)["faults"] == table
    assert ctl.post("/_control", json={"faults": {"v2/report": {"drop": 1}}}).json()["faults"] == {
        "v2/report": {"drop": 1.0}
    }
    bad: list[dict[str, Any]] = [
        {"createTask": {"http_500": 0.1}},  # v2 endpoints are written v2/NAME
        {"v2/createJob": {"http_500": 0.1}},
        {"v2/createTask": {"error_true": 0.1}},  # a v1 answer shape, not a v2 fault
        {"v2/createTask": {"empty_solution": 0.1}},
        {"v2/getBalance": {"http_500_after_create": 0.1}},
        {"v2/getTaskResult": {"waiting_status": 0.1}},
        {"v2/createTask": {"http_500": 0.6, "redis_job_data": 0.6}},
        {"getJobResult": {"redis_unavailable": 0.1}},  # and v1 endpoints do not take v2 faults
    ]
    before = fake.settings()
    for faults in bad:
        with pytest.raises(ValueError):
            fake.control(faults=faults)
        assert ctl.post("/_control", json={"faults": faults}).status_code == 400, faults
    assert fake.settings() == before


# ------------------------------------------------------------------------------------------------ faults

HTML_FAULTS = {"http_500": 500, "http_502": 502, "http_429": 429, "non_json": 200}
WRONG_SHAPES = {
    "createTask": {"error": False, "job_id": 123456, "message": "Create job success."},
    "getTaskResult": {"error": False, "status": "running", "result": None},
    "getBalance": {"error": False, "balance": "0.00000", "message": "Get balance success."},
    "report": {"error": False, "message": "Success."},
}


@pytest.mark.parametrize("endpoint", ["createTask", "getTaskResult", "getBalance", "report"])
def test_faults_that_replace_the_answer(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, endpoint: str) -> None:
    task_id = create(client, rotate_body(kit))
    body = {
        "createTask": rotate_body(kit),
        "getTaskResult": {"clientKey": KEY, "taskId": task_id},
        "getBalance": {"clientKey": KEY},
        "report": {"clientKey": KEY, "id": [task_id], "isSuccess": True},
    }[endpoint]
    name = "v2/" + endpoint
    for fault, status in HTML_FAULTS.items():
        fake.control(faults={name: {fault: 1.0}})
        r = client.post(endpoint, json=body)
        assert r.status_code == status, fault
        assert r.headers["content-type"].startswith("text/html")
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)
    fake.control(faults={name: {"wrong_shape": 1.0}})
    assert client.post(endpoint, json=body).json() == WRONG_SHAPES[endpoint]
    for fault, code in TEMPORARY.items():
        fake.control(faults={name: {fault: 1.0}})
        answer = client.post(endpoint, json=body).json()
        assert set(answer) == {"errorId", "errorCode", "errorDescription"}
        assert answer["errorId"] == 1 and answer["errorCode"] == code and answer["errorDescription"]
    fake.control(faults={name: {"drop": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(endpoint, json=body)
    fake.control(faults={name: {"hang": 1.0}})
    with pytest.raises(httpx.ReadTimeout):
        client.post(endpoint, json=body, timeout=0.2)
    fake.control(faults=None)
    # none of them created a task or recorded a report
    assert fake.stats()["v2"]["tasks"]["created"] == 1
    assert fake.stats()["v2"]["reports"] == {"accepted": 0, "rejected": 0}
    names = [*HTML_FAULTS, "wrong_shape", *TEMPORARY, "drop", "hang"]
    faulted = [e for e in fake.log() if e["fault"]]
    assert [e["fault"] for e in faulted] == names
    assert [e["status"] for e in faulted] == [*HTML_FAULTS.values(), 200, 200, 200, 200, 200, "dropped", "hang"]
    assert fake.stats()["faults"][name] == dict.fromkeys(names, 1)


def test_faults_after_create_still_create_and_charge(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(faults={"v2/createTask": {"http_500_after_create": 1.0}})
    assert client.post("createTask", json=rotate_body(kit)).status_code == 500
    fake.control(faults={"v2/createTask": {"drop_after_create": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("createTask", json=rotate_body(kit))
    fake.control(faults={"v2/createTask": {"hang_after_create": 1.0}})
    with pytest.raises(httpx.ReadTimeout):
        client.post("createTask", json=rotate_body(kit), timeout=0.2)
    for fault, code in (("redis_unavailable_after_create", "ERROR_REDIS_UNAVAILABLE"),
                        ("redis_job_data_after_create", "ERROR_REDIS_JOB_DATA")):
        fake.control(faults={"v2/createTask": {fault: 1.0}})
        answer = client.post("createTask", json=rotate_body(kit)).json()
        assert answer["errorId"] == 1 and answer["errorCode"] == code and "taskId" not in answer
    # a request that fails validation creates nothing, so the fault does not apply
    fake.control(faults={"v2/createTask": {"http_500_after_create": 1.0}})
    assert client.post("createTask", json={"clientKey": KEY}).json()["errorCode"] == "ERROR_TASK_ABSENT"
    assert fake.stats()["v2"]["tasks"]["created"] == 5
    assert balance(client) == pytest.approx(10 - 5 * 0.00055)
    entries = [e for e in fake.log() if e["path"] == "/v2/createTask"]
    assert [e["fault"] for e in entries] == [
        "http_500_after_create",
        "drop_after_create",
        "hang_after_create",
        "redis_unavailable_after_create",
        "redis_job_data_after_create",
        None,
    ]
    assert all(isinstance(e["job_id"], str) for e in entries[:5]) and entries[5]["job_id"] is None
    # the tasks exist and can be polled by id (which a client learns only from the log, never from the answer)
    assert result(client, entries[0]["job_id"])["solution"] == {"rotate": expected_rotate(kit, 0)}


def test_result_faults(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=60)
    processing = create(client, rotate_body(kit))
    fake.control(solve_seconds=0)
    swapped = rotate_body(kit)
    swapped["task"]["imageBase64s"].reverse()
    failed = create(client, swapped)
    ready = create(client, rotate_body(kit))

    def polls(fault: str) -> list[dict[str, Any]]:
        fake.control(faults={"v2/getTaskResult": {fault: 1.0}})
        return [result(client, t) for t in (processing, failed, ready)]

    assert polls("unknown_status") == [{"errorId": 0, "status": "queued"}] * 3
    assert polls("empty_solution") == [
        {"errorId": 0, "status": "processing"},
        JOB_FAILED,
        {"errorId": 0, "status": "ready", "solution": {}},
    ]
    # an error answer has nothing a result fault could change
    fake.control(faults={"v2/getTaskResult": {"unknown_status": 1.0}})
    assert result(client, ready, key=KEY2) == NOT_FOUND
    faults = [e["fault"] for e in fake.log() if e["path"] == "/v2/getTaskResult"]
    assert faults == ["unknown_status"] * 3 + [None, None, "empty_solution", None]
    # "queued" did not tell the client the task was final, "ready" with an empty solution did: only the poll after
    # that one (of any key, as in v1) counts as after the final answer
    per = fake.stats()["v2"]["polls"]["per_task"][ready]
    assert per["polls"] == 3 and per["polls_after_final"] == 1


def test_fault_shares_spread_exactly(fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(draw="spread", faults={"v2/getBalance": {"http_500": 0.25, "service_unavailable": 0.25}})
    answers = []
    for _ in range(16):
        r = client.post("getBalance", json={"clientKey": KEY})
        answers.append("500" if r.status_code == 500 else "busy" if r.json()["errorId"] else "ok")
    assert answers.count("500") == 4 and answers.count("busy") == 4 and answers.count("ok") == 8


def test_every_v2_fault_is_covered() -> None:
    covered = {
        *HTML_FAULTS,
        "wrong_shape",
        "drop",
        "hang",
        *TEMPORARY,
        "http_500_after_create",
        "drop_after_create",
        "hang_after_create",
        "redis_unavailable_after_create",
        "redis_job_data_after_create",
        "unknown_status",
        "empty_solution",
    }
    assert {f for faults in V2_FAULTS_BY_ENDPOINT.values() for f in faults} == covered
    assert set(ALL_FAULTS_BY_ENDPOINT) == {
        "createJob",
        "getJobResult",
        "getBalance",
        "getService",
        "v2/createTask",
        "v2/getTaskResult",
        "v2/getBalance",
        "v2/report",
    }


# ------------------------------------------------------------------------------------------------ log and stats


def test_log_summarises_images(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client) -> None:
    body = rotate_body(kit)
    task_id = create(client, body)
    prefixed = slide_body(kit, width_view=300)
    prefixed["task"]["imageBase64"] = "data:image/jpeg;base64," + prefixed["task"]["imageBase64"]
    client.post("createTask", json=prefixed)
    raw_log = json.dumps(ctl.get("/_log").json())
    for part in body["task"]["imageBase64s"]:
        assert part[:100] not in raw_log
    entry = fake.log()[0]
    assert entry["path"] == "/v2/createTask" and entry["status"] == 200 and entry["fault"] is None
    assert entry["job_id"] == task_id and entry["response"] == {"errorId": 0, "taskId": task_id}
    assert entry["body"]["clientKey"] == KEY and entry["body"]["task"]["type"] == TASK_ROTATE
    whirl = kit.m.whirls()[0]
    for summary, role in zip(entry["body"]["task"]["imageBase64s"], ("inner", "outer"), strict=True):
        data = kit.raw("whirl", 0, role)
        assert summary == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "format": "png",
            "challenge": whirl.id,
            "role": role,
        }
    slide_entry = fake.log()[1]
    summary = slide_entry["body"]["task"]["imageBase64"]
    assert summary["data_prefix"] is True and summary["role"] == "background" and summary["format"] == "jpeg"
    assert slide_entry["body"]["task"]["widthView"] == 300
    assert slide_entry["response"]["errorCode"] == "ERROR_BAD_PARAMETERS" and slide_entry["job_id"] is None
    assert len(raw_log) < 3000


def test_stats_count_polls(kit: Kit, fake: FakeOmocaptcha, client: httpx.Client, ctl: httpx.Client) -> None:
    task_id = create(client, rotate_body(kit))
    other = create(client, slide_body(kit))
    for _ in range(3):
        assert result(client, task_id)["status"] == "ready"
    result(client, str(uuid.uuid4()))  # not a task: not a poll
    stats = ctl.get("/_stats").json()
    per = stats["v2"]["polls"]["per_task"][task_id]
    assert per["polls"] == 3 and per["polls_after_final"] == 2 and per["type"] == TASK_ROTATE
    assert per["solution"] == {"rotate": expected_rotate(kit, 0)} and per["challenge"] == kit.m.whirls()[0].id
    assert isinstance(per["min_interval_ms"], float)
    assert stats["v2"]["polls"]["per_task"][other]["polls"] == 0
    assert stats["v2"]["polls"]["total"] == 3 and stats["v2"]["polls"]["max"] == 3
    assert stats["requests"]["v2/getTaskResult"] == 4 and stats["requests"]["v2/createTask"] == 2
    assert stats["polls"]["total"] == 0  # v1's poll counters are v1's alone


# ------------------------------------------------------------------------------------------------ in-process fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10,
)
task_data = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([TASK_ROTATE, TASK_SLIDE, "", None, 23]) | json_values,
        "imageBase64s": st.sampled_from([[], ["aGVsbG8=", "aGVsbG8="], "aGVsbG8=|aGVsbG8=", ["", ""]]) | json_values,
        "imageBase64": st.sampled_from(["", "aGVsbG8=", "data:x"]) | json_values,
        "widthView": st.sampled_from([340, 0, -1, "340", 340.0, 10**30]) | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "clientKey": st.sampled_from([KEY, "x", 1]),
            "task": task_data,
            "taskId": st.sampled_from(["", "x"]) | json_values,
            "id": st.lists(st.text(max_size=5), max_size=2) | json_values,
            "isSuccess": st.booleans() | json_values,
        },
    )
    | json_values,
    endpoint=st.sampled_from(["v2/createTask", "v2/getTaskResult", "v2/getBalance", "v2/report"]),
)
def test_fuzz_never_crashes_and_answers_the_error_shape(body: Any, endpoint: str) -> None:
    state = FakeState([KEY])
    outcome = state.api(endpoint, "application/json", json.dumps(body).encode())
    assert outcome.status == 200 and outcome.body is not None
    assert outcome.body["errorId"] in (0, 1)
    if outcome.body["errorId"]:
        assert set(outcome.body) == {"errorId", "errorCode", "errorDescription"}
        assert isinstance(outcome.body["errorCode"], str) and isinstance(outcome.body["errorDescription"], str)
    assert not state.tasks  # no fuzzed body holds a real image
    state.summarize(body)


# ------------------------------------------------------------------------------------------------ the command line


def _cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.kit.fake_omocaptcha", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_command_line_serves_v2(kit: Kit) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.fake_omocaptcha", "--port", "0", "--key", KEY, "--manifest", str(kit.dir),
         "--fault", "v2/getBalance:http_502=1", "--balance", "2.5"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        port = info["port"]
        assert info == {
            "port": port,
            "base_url": f"http://127.0.0.1:{port}/api/",
            "v2_base_url": f"http://127.0.0.1:{port}/v2/",
        }
        with httpx.Client(base_url=info["v2_base_url"]) as c:
            task_id = create(c, rotate_body(kit))
            assert result(c, task_id)["solution"] == {"rotate": expected_rotate(kit, 0)}
            assert c.post("getBalance", json={"clientKey": KEY}).status_code == 502
            v1 = c.post(info["base_url"] + "getBalance", json={"api_token": KEY}).json()
            assert Decimal(v1["balance"]) == Decimal("2.5") - Decimal("0.00055")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_command_line_help_and_bad_faults() -> None:
    r = _cli("--help")
    assert r.returncode == 0
    for word in ("v2/createTask", "v2/getTaskResult", "v2/report", "redis_job_data_after_create", "/_control"):
        assert word in r.stdout
    r = _cli("--key", KEY, "--fault", "createTask:http_500=1")
    assert r.returncode == 2 and "createTask" in r.stderr and r.stdout == ""
    r = _cli("--key", KEY, "--fault", "v2/getBalance:empty_solution=1")
    assert r.returncode == 2 and "empty_solution" in r.stderr and r.stdout == ""
