"""The fake omocaptcha service (tests/kit/fake_omocaptcha.py) holds the documented contract: what its two APIs share,
v1's own rules, the controls and faults other tests rely on, its log, its stats and its command line. v2's own rules
are in test_kit_fake_omocaptcha_v2.py. What a client does with each answer is the client tests' business."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.kit.fake_calls import JSON, KEY, KEY2, V1, V2, Api, b64
from tests.kit.fake_omocaptcha import ALL_FAULTS_BY_ENDPOINT, FakeOmocaptcha, FakeState
from tests.kit.synth import Manifest, generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate(tmp_path_factory.mktemp("kit"), seed=12, count=2)


@pytest.fixture
def fake(kit: Manifest) -> Iterator[FakeOmocaptcha]:
    with FakeOmocaptcha(keys=[KEY, KEY2], manifests=[str(kit.root)]) as f:
        yield f


@pytest.fixture
def client(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    """Both APIs and the control paths: every path is absolute."""
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        yield c


@pytest.fixture(params=[V1, V2], ids=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> Api:
    out: Api = request.param
    return out


def _png() -> str:
    """A well-formed image that no manifest knows."""
    buf = io.BytesIO()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------------------------ answers


def test_v1_answers_come_from_the_manifest(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    ids = []
    for n, whirl in enumerate(kit.whirls()):
        ids.append(V1.new(client, V1.whirl(kit, n)))
        assert V1.ask(client, ids[-1]) == {"error": False, "status": "success", "result": str(round(whirl.drag_px))}
    for n, slide in enumerate(kit.slides()):
        for width_view in (340, 300.5):
            ids.append(V1.new(client, V1.slide(b64(kit, "slide", n, "background"), width_view)))
            x = str(round(slide.gap_x * width_view / 552))
            assert V1.ask(client, ids[-1]) == {"error": False, "status": "success", "result": x}
    assert ids == list(range(1_000_001, 1_000_007))
    assert fake.stats()["jobs"] == {"created": 6, "running": 0, "succeeded": 6, "failed": 0}
    assert fake.stats()["v2"]["tasks"]["created"] == 0  # v2 tasks are counted apart


def test_a_job_runs_for_its_solve_seconds_then_ends(kit: Manifest, api: Api) -> None:
    """Driven through FakeState with explicit times: no waiting on the clock."""
    state = FakeState([KEY], [str(kit.root)], solve_seconds=5)

    def call(endpoint: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        outcome = state.api(endpoint, "application/json", json.dumps(body).encode(), now=now)
        assert outcome.status == 200 and outcome.body is not None
        return outcome.body

    inner, outer = b64(kit, "whirl", 0, "inner"), b64(kit, "whirl", 0, "outer")
    good = api.job_id(call(api.create, api.rotate(inner, outer), 100.0))
    swapped = api.job_id(call(api.create, api.rotate(outer, inner), 100.0))
    for job in (good, swapped):
        assert call(api.result, api.poll(job), 104.99) == api.running
    assert api.solved(call(api.result, api.poll(good), 105.0))
    assert call(api.result, api.poll(swapped), 105.0) == api.failed  # an unsolvable job runs as long
    # jobs made after a change take the new time; those made before keep theirs
    state.control({"solve_seconds": 0})
    later = api.job_id(call(api.create, api.whirl(kit, 1), 200.0))
    assert api.solved(call(api.result, api.poll(later), 200.0))
    assert call(api.result, api.poll(good), 104.99) == api.running


@pytest.mark.parametrize(
    "case", ["swapped", "mixed", "unknown", "slide_as_rotate", "same_twice", "piece", "3d", "whirl_as_slide"]
)
def test_wrong_images_fail_and_are_charged(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client, api: Api, case: str
) -> None:
    def img(mode: str, n: int, role: str) -> str:
        return b64(kit, mode, n, role)

    rotate = {
        "swapped": (img("whirl", 0, "outer"), img("whirl", 0, "inner")),
        "mixed": (img("whirl", 0, "inner"), img("whirl", 1, "outer")),
        "unknown": (img("whirl", 0, "inner"), _png()),
        "slide_as_rotate": (img("slide", 0, "background"), img("slide", 0, "piece")),
        "same_twice": (img("whirl", 0, "inner"), img("whirl", 0, "inner")),
    }
    slide = {"piece": img("slide", 0, "piece"), "3d": img("3d", 0, "image"), "whirl_as_slide": img("whirl", 0, "outer")}
    job = api.new(client, api.rotate(*rotate[case]) if case in rotate else api.slide(slide[case]))
    assert api.ask(client, job) == api.failed
    assert api.per_job(fake.stats(), job)["reason"] is not None
    assert fake.stats()["charged"] == "0.00055"  # a failed job is paid for too


# ------------------------------------------------------------------------------------------------ refusals


def _v1_bad_bodies(kit: Manifest) -> dict[str, tuple[Any, str]]:
    """name -> (body sent as JSON, the message of the refusal): one case or more per rule of CONTRACT.md."""
    inner, outer, bg = b64(kit, "whirl", 0, "inner"), b64(kit, "whirl", 0, "outer"), b64(kit, "slide", 0, "background")
    truncated = base64.b64encode(base64.b64decode(outer)[:40]).decode()
    unpadded = base64.b64encode(base64.b64decode(outer)[:31]).decode().rstrip("=")  # 31 bytes end in "=="
    two, plain, not_b64 = (
        "image_base64 must be two images joined by '|' for type_job_id 23.",
        "image_base64 must be plain base64, without a data: prefix.",
        "image_base64 is not valid base64.",
    )

    def rot(image: Any, **data: Any) -> dict[str, Any]:
        return {"api_token": KEY, "data": {"type_job_id": "23", "image_base64": image, **data}}

    def sl(**data: Any) -> dict[str, Any]:
        return {"api_token": KEY, "data": {"type_job_id": "21", "image_base64": bg, **data}}

    good = rot(inner + "|" + outer)
    return {
        "no token": ({"data": good["data"]}, "Invalid api token."),
        "token not a string": ({**good, "api_token": 123}, "Invalid api token."),
        "json array": ([good], "Invalid JSON body."),
        "no data": ({"api_token": KEY}, "data is required."),
        "type missing": ({"api_token": KEY, "data": {"image_base64": inner + "|" + outer}}, "type_job_id is required."),
        "type as number": ({"api_token": KEY, "data": {**good["data"], "type_job_id": 23}}, "type_job_id must be a string."),
        "unknown type": ({"api_token": KEY, "data": {**good["data"], "type_job_id": "26"}}, "Job type not found."),
        "image as list": (rot([inner, outer]), "image_base64 is required."),
        "rotate one image": (rot(inner), two),
        "rotate three parts": (rot(inner + "||" + outer), two),
        "rotate empty half": (rot(inner + "|"), not_b64),
        "data prefix": (rot(inner + "|data:image/png;base64," + outer), plain),
        "not base64": (rot(inner + "|@@@@"), not_b64),
        "padding dropped": (rot(inner + "|" + unpadded), not_b64),
        "newlines": (rot(inner[:8] + "\n" + inner[8:] + "|" + outer), not_b64),
        "url-safe alphabet": (rot("A-_A" + inner + "|" + outer), not_b64),
        "not an image": (rot(inner + "|" + base64.b64encode(b"not an image").decode()), "image_base64 is not a valid image."),
        "truncated png": (rot(inner + "|" + truncated), "image_base64 is not a valid image."),
        "slide no width": (sl(), "width_view is required."),
        "slide width string": (sl(width_view="340"), "width_view must be a number."),
        "slide width bool": (sl(width_view=True), "width_view must be a number."),
        "slide width zero": (sl(width_view=0), "width_view must be positive."),
        "slide two images": (sl(image_base64=bg + "|" + bg, width_view=340), "image_base64 must be one image for type_job_id 21."),
    }


def test_v1_every_validation_rule(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    for name, (body, message) in _v1_bad_bodies(kit).items():
        r = client.post("/api/createJob", json=body)
        assert (r.status_code, r.json()) == (200, {"error": True, "message": message}), name
    assert fake.stats()["jobs"]["created"] == 0 and fake.stats()["charged"] == "0.00000"


def test_bodies_that_are_not_json_are_refused_everywhere(kit: Manifest, client: httpx.Client, api: Api) -> None:
    good = json.dumps(api.whirl(kit)).encode()
    wrong_type = api.refusal("Content-Type must be application/json.", "ERROR_INVALID_REQUEST")
    not_json = api.refusal("Invalid JSON body.", "ERROR_INVALID_REQUEST")
    cases: list[tuple[bytes, dict[str, str], dict[str, Any]]] = [
        (b"key=key-one", {"content-type": "application/x-www-form-urlencoded"}, wrong_type),
        (good, {}, wrong_type),
        (b"{not json", JSON, not_json),
        (b'{"key": NaN}', JSON, not_json),
        (b"\xff\xfe", JSON, not_json),
    ]
    for endpoint in api.endpoints:
        for raw, headers, expected in cases:
            r = client.post(api.path(endpoint), content=raw, headers=headers)
            assert (r.status_code, r.json()) == (200, expected), (endpoint, raw)
    r = client.post(api.path(api.create), content=good, headers={"content-type": "application/json; charset=utf-8"})
    api.job_id(r.json())


def test_a_result_is_given_for_the_id_and_the_key_that_made_the_job(
    kit: Manifest, client: httpx.Client, api: Api
) -> None:
    job = api.new(client, api.whirl(kit))
    assert api.ask(client, job + 1000 if api is V1 else str(uuid.uuid4())) == api.not_found
    assert api.ask(client, job, key=KEY2) == api.not_found
    assert api.ask(client, job, key="bad") == api.bad_key
    if api is V1:
        wrong, refusal = [str(job), float(job), None, True, [job]], api.refusal("job_id must be an integer.", "")
    else:
        wrong = [uuid.UUID(job).int, None, True, [job]]
        refusal = api.refusal("taskId must be a string.", "ERROR_BAD_PARAMETERS")
    for job_id in wrong:
        assert client.post(api.path(api.result), json=api.poll(job_id)).json() == refusal, job_id
    assert client.post(api.path(api.result), json=api.keyed()).json() == refusal
    assert api.solved(api.ask(client, job))


def test_v1_balance_and_service(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    def balance(key: str = KEY) -> Any:
        return client.post("/api/getBalance", json={"api_token": key}).json()

    assert balance() == {"error": False, "balance": "10.00000", "message": "Get balance success."}
    V1.new(client, V1.whirl(kit))
    V1.new(client, V1.slide(b64(kit, "slide", 0, "background")))
    assert balance()["balance"] == "9.99890" and balance(KEY2)["balance"] == "10.00000"
    assert balance("x") == client.post("/api/getBalance", json={}).json() == V1.bad_key
    service = client.post("/api/getService", json={"api_token": KEY}).json()
    assert service["error"] is False and [s["id"] for s in service["service"]] == [21, 23]
    assert all(s["price"] == "0.00055" and {"name", "avg_success", "avg_time"} <= s.keys() for s in service["service"])
    assert client.post("/api/getService", json={}).json() == V1.bad_key
    # a job costs 0.00055: with less, the next one is refused and nothing is charged
    fake.control(balance="0.00100")
    V1.new(client, V1.whirl(kit))
    assert client.post("/api/createJob", json=V1.whirl(kit)).json() == {"error": True, "message": "Balance not enough."}
    assert balance()["balance"] == "0.00045" and fake.stats()["charged"] == "0.00165"


def test_paths_are_exact_and_calls_are_posts(fake: FakeOmocaptcha, client: httpx.Client, api: Api) -> None:
    call = api.path(api.balance)
    root = call.rsplit("/", 1)[0]
    wrong = [root + "//getBalance", call + "/", call.lower(), root + "/nothing", root, root + "/"]
    wrong += ["/api/createTask"] if api is V1 else ["/v2/createJob", "/api/v2/getBalance"]
    for path in wrong:
        r = client.post(path, json=api.keyed())
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (404, "text/html"), path
    for endpoint in api.endpoints:
        r = client.get(api.path(endpoint))
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (405, "text/html"), endpoint
    assert "balance" in client.post(call + "?x=1", json=api.keyed()).json()
    requests = fake.stats()["requests"]
    assert requests["other"] == len(wrong) and requests[api.balance] == 2
    assert requests[(V2 if api is V1 else V1).balance] == 0


# ------------------------------------------------------------------------------------------------ controls


def test_spread_draws_are_exact_and_jobs_and_tasks_share_the_unsolvable_share(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client
) -> None:
    fake.control(draw="spread", fail_share=0.5, faults={"getBalance": {"http_500": 0.25, "error_true": 0.25}})
    answers = []
    for _ in range(16):
        r = client.post("/api/getBalance", json={"api_token": KEY})
        answers.append("500" if r.status_code == 500 else "busy" if r.json()["error"] else "ok")
    assert Counter(answers) == {"500": 4, "busy": 4, "ok": 8}
    jobs = [(api, api.new(client, api.slide(b64(kit, "slide", 0, "background")))) for api in (V1, V2) * 5]
    failed = [(api, job) for api, job in jobs if api.ask(client, job) == api.failed]
    assert len(failed) == 5
    assert {api.per_job(fake.stats(), job)["reason"] for api, job in failed} == {"fail_share"}


def test_control_refuses_what_it_cannot_do_and_changes_nothing(fake: FakeOmocaptcha, client: httpx.Client) -> None:
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
        {"add_manifest": "/nonexistent/dir"},
        {"faults": ["http_500"]},
        {"faults": {"nowhere": {"http_500": 0.1}}},
        {"faults": {"createJob": {"no_such_fault": 0.1}}},
        {"faults": {"createJob": {"http_500": 2}}},
        {"faults": {"createJob": {"http_500": 0.7, "drop": 0.4}}},  # more than one fault per request
        {"faults": {"getBalance": {"empty_result": 0.1}}},  # a fault of another endpoint
        {"faults": {"getBalance": {"http_500_after_create": 0.1}}},
        {"faults": {"createTask": {"http_500": 0.1}}},  # v2 endpoints are written v2/NAME
        {"faults": {"v2/createTask": {"error_true": 0.1}}},  # v1's faults are not v2's
        {"faults": {"getJobResult": {"redis_unavailable": 0.1}}},  # nor the other way round
    ]
    before = fake.settings()
    for changes in bad:
        with pytest.raises((ValueError, OSError)):
            fake.control(**changes)
        r = client.post("/_control", json=changes)
        assert r.status_code == 400 and isinstance(r.json()["error"], str), changes
    assert fake.settings() == before
    assert client.post("/_control", content=b"nope").status_code == 400


def test_control_over_http_reset_more_manifests_and_latency(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client, tmp_path: Path
) -> None:
    settings_ = client.get("/_control").json()
    assert (settings_["solve_seconds"], settings_["faults"], settings_["challenges"]) == (0, {}, 5)
    assert settings_["balances"] == {KEY: "10.00000", KEY2: "10.00000"}
    changes = {
        "solve_seconds": 1.5,
        "fail_share": 0.25,
        "seed": 3,
        "draw": "spread",
        "faults": {"v2/getTaskResult": {"http_500": 0.2, "non_json": 0.1}},
        "invalid_keys": [KEY2],
    }
    r = client.post("/_control", json=changes)
    assert r.status_code == 200 and {name: r.json()[name] for name in changes} == changes
    assert client.get("/_control").json() == r.json() == fake.settings()
    assert fake.control(faults={"createJob": {"drop": 0.5}})["faults"] == {"createJob": {"drop": 0.5}}  # replaced
    other = generate(tmp_path / "other", seed=99, count=1)
    assert client.post("/_control", json={"add_manifest": str(other.root)}).json()["challenges"] == 8
    assert fake.add_manifest(str(other.root)) == 3 and fake.settings()["challenges"] == 8  # known ones stay once
    fake.control(reset=True)
    assert fake.settings() == {**settings_, "manifests": fake.settings()["manifests"], "challenges": 8}
    assert V1.ask(client, V1.new(client, V1.whirl(other)))["result"] == str(round(other.whirls()[0].drag_px))
    fake.control(latency_ms=200)
    start = time.monotonic()
    client.post("/api/getBalance", json={"api_token": KEY})
    assert time.monotonic() - start >= 0.2


# ------------------------------------------------------------------------------------------------ faults

HTML_FAULTS = {"http_500": 500, "http_502": 502, "http_429": 429, "non_json": 200}
WRONG_SHAPES = {  # v1 answers in v2's shape (the docs show one such example) and v2 in v1's
    "createJob": {"errorId": 0, "taskId": 123456},
    "getJobResult": {"errorId": 0, "status": "processing"},
    "getBalance": {"errorId": 0, "balance": 345.678, "quantity": 10000, "voucher_balance": 123.211},
    "getService": {"errorId": 0, "services": []},
    "v2/createTask": {"error": False, "job_id": 123456, "message": "Create job success."},
    "v2/getTaskResult": {"error": False, "status": "running", "result": None},
    "v2/getBalance": {"error": False, "balance": "0.00000", "message": "Get balance success."},
    "v2/report": {"error": False, "message": "Success."},
}
TEMPORARY = {
    "task_is_maintenance": "ERROR_TASK_IS_MAINTENANCE",
    "service_unavailable": "ERROR_SERVICE_UNAVAILABLE",
    "redis_unavailable": "ERROR_REDIS_UNAVAILABLE",
    "redis_job_data": "ERROR_REDIS_JOB_DATA",
}
AFTER_CREATE = {
    "v1": ("http_500_after_create", "drop_after_create", "hang_after_create"),
    "v2": ("http_500_after_create", "drop_after_create", "hang_after_create", "redis_unavailable_after_create",
           "redis_job_data_after_create"),
}


@pytest.mark.parametrize("endpoint", list(ALL_FAULTS_BY_ENDPOINT))
def test_faults_that_answer_instead_of_the_service(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client, endpoint: str
) -> None:
    api = V2 if endpoint.startswith("v2/") else V1
    job = api.new(client, api.whirl(kit))
    bodies = {api.create: api.whirl(kit), api.result: api.poll(job), "v2/report": api.keyed(id=[job], isSuccess=True)}
    body = bodies.get(endpoint, api.keyed())

    def answer(fault: str) -> httpx.Response:
        fake.control(faults={endpoint: {fault: 1.0}})
        return client.post(api.path(endpoint), json=body, timeout=0.2)

    for fault, status in HTML_FAULTS.items():
        r = answer(fault)
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (status, "text/html"), fault
        with pytest.raises(json.JSONDecodeError):
            r.json()
    assert answer("wrong_shape").json() == WRONG_SHAPES[endpoint]
    busy = ["error_true"] if api is V1 else list(TEMPORARY)
    for fault in busy:
        got = answer(fault).json()
        if api is V1:
            assert got == {"error": True, "message": "Server busy."}
        else:
            assert set(got) == {"errorId", "errorCode", "errorDescription"} and got["errorCode"] == TEMPORARY[fault]
    with pytest.raises(httpx.RemoteProtocolError):
        answer("drop")
    with pytest.raises(httpx.ReadTimeout):
        answer("hang")
    fake.control(faults=None)
    assert api.jobs(fake.stats())["created"] == 1  # none of them made a job (nor recorded a report)
    assert fake.stats()["v2"]["reports"] == {"accepted": 0, "rejected": 0}
    names = [*HTML_FAULTS, "wrong_shape", *busy, "drop", "hang"]
    faulted = [e for e in fake.log() if e["fault"]]
    assert [(e["fault"], e["status"]) for e in faulted] == list(
        zip(names, [*HTML_FAULTS.values(), *[200] * (1 + len(busy)), "dropped", "hang"], strict=True)
    )
    assert fake.stats()["faults"][endpoint] == dict.fromkeys(names, 1)


def test_faults_after_create_still_create_and_charge(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client, api: Api
) -> None:
    faults = AFTER_CREATE[api.name]
    for fault in faults:
        fake.control(faults={api.create: {fault: 1.0}})
        try:
            r = client.post(api.path(api.create), json=api.whirl(kit), timeout=0.2)
        except (httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
            assert type(exc) is {"drop": httpx.RemoteProtocolError, "hang": httpx.ReadTimeout}[fault.split("_")[0]]
            continue
        if fault == "http_500_after_create":
            assert (r.status_code, r.headers["content-type"].split(";")[0]) == (500, "text/html")
        else:
            assert r.json()["errorCode"] == "ERROR_" + fault.removesuffix("_after_create").upper()
            assert "taskId" not in r.json()
    # a request that fails validation creates nothing, so the fault is not applied
    fake.control(faults={api.create: {"http_500_after_create": 1.0}})
    assert client.post(api.path(api.create), json=api.keyed()).status_code == 200
    assert api.jobs(fake.stats())["created"] == len(faults)
    assert fake.stats()["charged"] == str(len(faults) * Decimal("0.00055"))
    entries = [e for e in fake.log() if e["path"] == api.path(api.create)]
    assert [e["fault"] for e in entries] == [*faults, None] and entries[-1]["job_id"] is None
    # each job exists and can be polled by the id the log names (a client never learns it)
    assert all(api.solved(api.ask(client, e["job_id"])) for e in entries[:-1])


def test_v1_faults_that_change_the_answer(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    fake.control(solve_seconds=60)
    running = V1.new(client, V1.whirl(kit))
    fake.control(solve_seconds=0)
    failed = V1.new(client, V1.rotate(b64(kit, "whirl", 0, "outer"), b64(kit, "whirl", 0, "inner")))
    solved = V1.new(client, V1.whirl(kit))
    answer = str(round(kit.whirls()[0].drag_px))

    def polls(fault: str) -> list[dict[str, Any]]:
        fake.control(faults={"getJobResult": {fault: 1.0}})
        return [V1.ask(client, job) for job in (running, failed, solved)]

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
    assert [p["success"] for p in polls("success_field")] == [False, False, True]
    # where a fault changed nothing, the log says no fault
    faults = [e["fault"] for e in fake.log() if e["path"] == "/api/getJobResult"]
    assert faults == ["empty_result", "empty_result", None, "waiting_status", None, None, *["unknown_status"] * 3,
                      *["success_field"] * 3]
    fake.control(faults={"createJob": {"success_field": 1.0}, "getBalance": {"success_field": 1.0}})
    assert client.post("/api/createJob", json=V1.whirl(kit)).json()["success"] is True
    assert client.post("/api/getBalance", json={"api_token": "bad"}).json() == {**V1.bad_key, "success": False}


def test_every_fault_is_tested_here() -> None:
    tested = {*HTML_FAULTS, "wrong_shape", "error_true", *TEMPORARY, "drop", "hang", *AFTER_CREATE["v2"],
              "empty_result", "waiting_status", "unknown_status", "success_field", "empty_solution"}
    assert {f for faults in ALL_FAULTS_BY_ENDPOINT.values() for f in faults} == tested


# ------------------------------------------------------------------------------------------------ log and stats


def test_the_log_summarises_images(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    body = V1.whirl(kit)
    V1.new(client, body)
    client.post("/api/createJob", json=V1.slide("data:image/jpeg;base64," + b64(kit, "slide", 0, "background")))
    raw_log = json.dumps(client.get("/_log").json())
    assert all(part[:100] not in raw_log for part in body["data"]["image_base64"].split("|"))
    assert len(raw_log) < 3000
    entry, prefixed = fake.log()
    assert (entry["path"], entry["status"], entry["fault"], entry["job_id"]) == ("/api/createJob", 200, None, 1_000_001)
    assert isinstance(entry["time"], float) and entry["body"]["api_token"] == KEY
    whirl = kit.whirls()[0]
    for summary, role in zip(entry["body"]["data"]["image_base64"], ("inner", "outer"), strict=True):
        data = kit.file(whirl.images[role]).read_bytes()
        assert summary == {"sha256": whirl.images[role].sha256, "bytes": len(data), "format": "png",
                           "challenge": whirl.id, "role": role}
    (background,) = prefixed["body"]["data"]["image_base64"]
    assert (background["data_prefix"], background["format"], background["role"]) == (True, "jpeg", "background")
    assert prefixed["response"] == {"error": True, "message": "image_base64 must be plain base64, without a data: prefix."}
    assert client.post("/_log/clear").json() == {"requests": []} and fake.log() == []
    client.post("/api/getService", json={"api_token": KEY})
    fake.clear_log()
    assert client.get("/_log").json() == {"requests": []}


def test_stats_count_polls_and_their_intervals(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client, api: Api
) -> None:
    job = api.new(client, api.whirl(kit))
    other = api.new(client, api.slide(b64(kit, "slide", 0, "background")))
    for _ in range(3):
        assert api.solved(api.ask(client, job))
        time.sleep(0.05)
    api.ask(client, 1 if api is V1 else str(uuid.uuid4()))  # no job: no poll
    stats = client.get("/_stats").json()
    assert stats == fake.stats()
    per = api.per_job(stats, job)
    assert (per["polls"], per["polls_after_final"], per["status"]) == (3, 2, api.final_status)
    assert per["challenge"] == kit.whirls()[0].id and per["min_interval_ms"] >= 50
    assert (api.per_job(stats, other)["polls"], api.per_job(stats, other)["min_interval_ms"]) == (0, None)
    polls = api.polls(stats)
    assert (polls["total"], polls["max"], polls["min_interval_ms"]) == (3, 3, per["min_interval_ms"])
    assert (stats["requests"][api.create], stats["requests"][api.result]) == (2, 4)
    assert (V2 if api is V1 else V1).polls(stats)["total"] == 0  # each API counts its own


# ------------------------------------------------------------------------------------------------ fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10,
)
images = st.sampled_from(["", "|", "aGVsbG8=", "aGVsbG8=|aGVsbG8=", "data:x"]) | json_values
job_data = st.fixed_dictionaries({}, optional={
    "type_job_id": st.sampled_from(["21", "22", "23", 23, ""]) | json_values,
    "image_base64": images,
    "width_view": st.sampled_from([340, 0, -1, "340", 1e308]) | json_values,
})
task_data = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["TiktokRotateWebTask", "TiktokSliderWebTask", "Tiktok3DSelectObjectWebTask", 23])
    | json_values,
    "imageBase64s": st.sampled_from([[], ["aGVsbG8=", "aGVsbG8="], ["", ""]]) | json_values,
    "imageBase64": images,
    "widthView": st.sampled_from([340, 0, "340", 340.0, 10**30]) | json_values,
})
bodies = st.fixed_dictionaries({}, optional={
    "api_token": st.sampled_from([KEY, "x", 1]),
    "clientKey": st.sampled_from([KEY, "x", 1]),
    "data": job_data,
    "task": task_data,
    "job_id": st.sampled_from([1_000_001, "1000001"]) | json_values,
    "taskId": st.sampled_from(["", "x"]) | json_values,
    "id": st.lists(st.text(max_size=5), max_size=2) | json_values,
    "isSuccess": st.booleans() | json_values,
}) | json_values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, endpoint=st.sampled_from(list(ALL_FAULTS_BY_ENDPOINT)))
def test_fuzz_never_crashes_and_answers_the_error_shape(body: Any, endpoint: str) -> None:
    state = FakeState([KEY])
    outcome = state.api(endpoint, "application/json", json.dumps(body).encode())
    assert outcome.status == 200 and outcome.body is not None
    if endpoint.startswith("v2/"):
        assert outcome.body["errorId"] in (0, 1)
        if outcome.body["errorId"]:
            assert set(outcome.body) == {"errorId", "errorCode", "errorDescription"}
            assert isinstance(outcome.body["errorCode"], str) and isinstance(outcome.body["errorDescription"], str)
    else:
        assert isinstance(outcome.body["error"], bool)
        if outcome.body["error"]:
            assert set(outcome.body) == {"error", "message"} and isinstance(outcome.body["message"], str)
    assert not state.jobs and not state.tasks  # no fuzzed body holds a real image
    state.summarize(body)


# ------------------------------------------------------------------------------------------------ the command line


def _fake_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.kit.fake_omocaptcha", *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_command_line_serves_both_apis(kit: Manifest) -> None:
    proc = _fake_process("--port", "0", "--key", KEY, "--key", KEY2, "--manifest", str(kit.root), "--balance", "2.5",
                         "--fault", "v2/getBalance:http_502=1", "--draw", "spread")
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        port = info["port"]
        assert info == {"port": port, "base_url": f"http://127.0.0.1:{port}/api/",
                        "v2_base_url": f"http://127.0.0.1:{port}/v2/"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert V1.ask(c, V1.new(c, V1.whirl(kit)))["result"] == str(round(kit.whirls()[0].drag_px))
            assert V2.solved(V2.ask(c, V2.new(c, V2.whirl(kit))))
            assert c.post("/v2/getBalance", json={"clientKey": KEY}).status_code == 502
            assert c.post("/api/getBalance", json={"api_token": KEY}).json()["balance"] == "2.49890"  # one account
            settings_ = c.get("/_control").json()
            assert settings_["keys"] == [KEY, KEY2] and settings_["draw"] == "spread"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize(("fault", "wrong"), [("getBalance:empty_result=1", "empty_result"),
                                              ("createTask:http_500=1", "createTask")])
def test_command_line_refuses_a_bad_fault(fault: str, wrong: str) -> None:
    proc = _fake_process("--key", KEY, "--fault", fault)
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (2, "") and wrong in err
