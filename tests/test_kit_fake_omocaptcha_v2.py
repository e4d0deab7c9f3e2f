"""The fake omocaptcha service's v2 task API holds its own rules as strictly as v1 (what both APIs share is tested
once for each in test_kit_fake_omocaptcha.py)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.kit.fake_calls import KEY, KEY2, V2, b64
from tests.kit.fake_omocaptcha import TASK_ROTATE, TASK_SLIDE, FakeOmocaptcha
from tests.kit.synth import Manifest, generate

BAD = "ERROR_BAD_PARAMETERS"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate(tmp_path_factory.mktemp("kit"), seed=12, count=2)


@pytest.fixture
def fake(kit: Manifest) -> Iterator[FakeOmocaptcha]:
    with FakeOmocaptcha(keys=[KEY, KEY2], manifests=[str(kit.root)]) as f:
        yield f


@pytest.fixture
def client(fake: FakeOmocaptcha) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        yield c


def test_v2_answers_come_from_the_manifest(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    ids = set()
    for n, whirl in enumerate(kit.whirls()):
        ids.add(task := V2.new(client, V2.whirl(kit, n)))
        answer = V2.ask(client, task)
        assert answer == {"errorId": 0, "status": "ready", "solution": {"rotate": round(1 - whirl.angle / 360, 2)}}
        # the documented meaning: the handle goes (1 - rotate) of the track, i.e. the disc turns (1 - r) * 360
        assert abs((1 - answer["solution"]["rotate"]) * 360 - whirl.angle) <= 1.8
    for n, slide in enumerate(kit.slides()):
        for width_view in (340, 300, 552):
            ids.add(task := V2.new(client, V2.slide(b64(kit, "slide", n, "background"), width_view)))
            answer = V2.ask(client, task)
            x = answer["solution"]["end"]["x"]
            assert answer == {"errorId": 0, "status": "ready", "solution": {"end": {"x": x}}}
            assert type(x) is int and x == round(slide.gap_x * width_view / 552)
    assert len(ids) == 8
    assert fake.stats()["v2"]["tasks"] == {"created": 8, "processing": 0, "ready": 8, "failed": 0}
    assert fake.stats()["jobs"]["created"] == 0  # v1 jobs are counted apart


def _v2_bad_bodies(kit: Manifest) -> dict[str, tuple[Any, str, str]]:
    """name -> (body sent as JSON, errorCode, errorDescription): one case or more per rule of CONTRACT.md."""
    inner, outer, bg = b64(kit, "whirl", 0, "inner"), b64(kit, "whirl", 0, "outer"), b64(kit, "slide", 0, "background")
    truncated = base64.b64encode(base64.b64decode(outer)[:40]).decode()
    key_code, key_text = V2.bad_key["errorCode"], V2.bad_key["errorDescription"]
    two, strings, plain, not_b64, not_image = (
        f"imageBase64s must be a list of two images for {TASK_ROTATE}.",
        "imageBase64s must hold two non-empty strings.",
        "Images must be plain base64, without a data: prefix.",
        "Image is not valid base64.",
        "Image is not a valid image.",
    )
    unsupported = ("ERROR_TASK_NOT_SUPPORTED", "Task type is not supported.")

    def rot(images: Any) -> dict[str, Any]:
        return {"clientKey": KEY, "task": {"type": TASK_ROTATE, "imageBase64s": images}}

    def sl(**task: Any) -> dict[str, Any]:
        return {"clientKey": KEY, "task": {"type": TASK_SLIDE, "imageBase64": bg, **task}}

    def typed(type_: Any) -> dict[str, Any]:
        return {"clientKey": KEY, "task": {"type": type_, "imageBase64s": [inner, outer]}}

    return {
        "no key": ({"task": rot([inner, outer])["task"]}, key_code, key_text),
        "key not a string": ({**rot([inner, outer]), "clientKey": 123}, key_code, key_text),
        "v1 key field": ({"api_token": KEY, "task": rot([inner, outer])["task"]}, key_code, key_text),
        "json array": ([rot([inner, outer])], "ERROR_INVALID_REQUEST", "Invalid JSON body."),
        "no task": ({"clientKey": KEY}, "ERROR_TASK_ABSENT", "task is required."),
        "v1 data envelope": ({"clientKey": KEY, "data": rot([inner, outer])["task"]}, "ERROR_TASK_ABSENT", "task is required."),
        "type missing": ({"clientKey": KEY, "task": {"imageBase64s": [inner, outer]}}, *unsupported),
        "v1 type id": (typed("23"), *unsupported),
        "type in lower case": (typed(TASK_ROTATE.lower()), *unsupported),
        "rotate with the slide field": ({"clientKey": KEY, "task": {"type": TASK_ROTATE, "imageBase64": inner}}, BAD,
                                        "imageBase64s is required."),
        "rotate v1 joined string": (rot(inner + "|" + outer), BAD, two),
        "rotate one image": (rot([inner]), BAD, two),
        "rotate three images": (rot([inner, outer, outer]), BAD, two),
        "rotate non-string": (rot([inner, 5]), BAD, strings),
        "rotate empty string": (rot([inner, ""]), BAD, strings),
        "rotate data prefix": (rot([inner, "data:image/png;base64," + outer]), BAD, plain),
        "rotate not base64": (rot([inner, "@@@@"]), BAD, not_b64),
        "rotate bad length": (rot([inner[:-1], outer]), BAD, not_b64),
        "rotate newline": (rot([inner[:8] + "\n" + inner[8:], outer]), BAD, not_b64),
        "rotate url-safe alphabet": (rot(["A-_A" + inner, outer]), BAD, not_b64),
        "rotate not an image": (rot([inner, base64.b64encode(b"not an image").decode()]), "ERROR_IMAGE_TYPE_NOT_SUPPORTED",
                                not_image),
        "rotate truncated png": (rot([inner, truncated]), "ERROR_IMAGE_TYPE_NOT_SUPPORTED", not_image),
        "slide with the rotate field": ({"clientKey": KEY, "task": {"type": TASK_SLIDE, "imageBase64s": [bg],
                                                                    "widthView": 340}}, BAD, "imageBase64 is required."),
        "slide image as list": (sl(imageBase64=[bg], widthView=340), BAD, "imageBase64 is required."),
        "slide no width": (sl(), BAD, "widthView is required."),
        "slide v1 width field": (sl(width_view=340), BAD, "widthView is required."),
        "slide width string": (sl(widthView="340"), BAD, "widthView must be an integer."),
        "slide width float": (sl(widthView=340.0), BAD, "widthView must be an integer."),
        "slide width bool": (sl(widthView=True), BAD, "widthView must be an integer."),
        "slide width zero": (sl(widthView=0), BAD, "widthView must be positive."),
        "slide two images joined": (sl(imageBase64=bg + "|" + bg, widthView=340), BAD, not_b64),
        "slide data prefix": (sl(imageBase64="data:image/jpeg;base64," + bg, widthView=340), BAD, plain),
    }


def test_v2_every_validation_rule(kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client) -> None:
    for name, (body, code, description) in _v2_bad_bodies(kit).items():
        r = client.post("/v2/createTask", json=body)
        assert (r.status_code, r.json()) == (200, V2.refusal(description, code)), name
    assert fake.stats()["v2"]["tasks"]["created"] == 0 and fake.stats()["charged"] == "0.00000"
    # fields the contract does not name are ignored, as in v1
    extra = V2.whirl(kit)
    extra["softId"] = 7
    extra["task"]["widthView"] = 340
    V2.new(client, extra)


def test_v2_balance_is_a_float_of_the_account_v1_pays_from(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client
) -> None:
    def balance(key: str = KEY) -> Any:
        return client.post("/v2/getBalance", json={"clientKey": key}).json()

    assert balance() == {"errorId": 0, "balance": 10.0, "quantity": 18181, "voucher_balance": 0.0}
    V2.new(client, V2.whirl(kit))
    V2.new(client, V2.slide(b64(kit, "slide", 0, "background")))
    assert balance()["balance"] == 9.9989 and balance(KEY2)["balance"] == 10.0
    assert client.post("/api/getBalance", json={"api_token": KEY}).json()["balance"] == "9.99890"
    assert balance("x") == client.post("/v2/getBalance", json={}).json() == V2.bad_key


def test_v2_report_is_recorded_for_the_tasks_of_its_key(
    kit: Manifest, fake: FakeOmocaptcha, client: httpx.Client
) -> None:
    a, b = V2.new(client, V2.whirl(kit)), V2.new(client, V2.slide(b64(kit, "slide", 0, "background")))
    other = V2.new(client, V2.whirl(kit, key=KEY2))
    for ids, verdict in (([a], True), ([a, b], False)):
        assert client.post("/v2/report", json={"clientKey": KEY, "id": ids, "isSuccess": verdict}).json() == {"errorId": 0}
    for body, code in [
        ({"clientKey": KEY, "id": a, "isSuccess": True}, BAD),
        ({"clientKey": KEY, "id": [], "isSuccess": True}, BAD),
        ({"clientKey": KEY, "id": [1], "isSuccess": True}, BAD),
        ({"clientKey": KEY, "id": [a]}, BAD),
        ({"clientKey": KEY, "id": [a], "isSuccess": "true"}, BAD),
        ({"clientKey": KEY, "taskId": a, "isSuccess": True}, BAD),
        ({"clientKey": KEY, "id": [a, str(uuid.uuid4())], "isSuccess": True}, "ERROR_TASK_NOT_FOUND"),
        ({"clientKey": KEY, "id": [other], "isSuccess": True}, "ERROR_TASK_NOT_FOUND"),
        ({"clientKey": "nope", "id": [a], "isSuccess": True}, "ERROR_KEY_DOES_NOT_EXIST"),
    ]:
        answer = client.post("/v2/report", json=body).json()
        assert (answer["errorId"], answer["errorCode"]) == (1, code), body
    stats = fake.stats()
    assert stats["v2"]["reports"] == {"accepted": 1, "rejected": 2}
    assert [V2.per_job(stats, t)["reports"] for t in (a, b, other)] == [[True, False], [False], []]
