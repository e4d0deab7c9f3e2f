from __future__ import annotations

import json

import pytest

from addon.capture import edata
from addon.capture.images import Role
from addon.capture.recognise import (
    Kind,
    NotRecognised,
    parse_get,
    parse_verify_request,
    parse_verify_response,
    url_key,
)
from tests.conftest import seal

OUTER = "https://p16-rc-captcha-va.ibyteimg.com/tos-maliva-i-b4yrtqhy5a-us/aa~tplv-b4yrtqhy5a-1.png"
INNER = "https://p16-rc-captcha-va.ibyteimg.com/tos-maliva-i-b4yrtqhy5a-us/bb~tplv-b4yrtqhy5a-1.png"
BACKUP_OUTER = OUTER.replace("p16-", "p19-")


def whirl_question() -> dict[str, object]:
    return {"url1": OUTER, "url2": INNER, "tip_y": 0, "backup_url1": [BACKUP_OUTER], "backup_url2": []}


def shape_a(mode: str = "whirl", **extra: object) -> dict[str, object]:
    return {
        "code": 200,
        "message": "ok",
        "data": {
            "id": "a" * 40,
            "mode": mode,
            "challenge_code": 99996,
            "version": 2,
            "question": whirl_question(),
            "verify_id": "Verify_1",
            **extra,
        },
    }


def test_shape_a_single_whirl() -> None:
    [c] = parse_get(json.dumps(shape_a()).encode())
    assert c.id == "a" * 40 and c.mode == "whirl" and c.kind is Kind.ROTATE
    assert c.urls[Role.OUTER] == (OUTER, BACKUP_OUTER)
    assert c.urls[Role.INNER] == (INNER,)
    assert c.verify_id == "Verify_1"


def test_shape_b_list_with_slide_and_3d() -> None:
    body = {
        "code": 200,
        "data": {
            "verify_id": "Verify_2",
            "challenges": [
                {
                    "id": "s1",
                    "mode": "slide",
                    "challenge_code": 99999,
                    "question": {"url1": "https://x/bg.jpeg", "url2": "https://x/piece.png", "tip_y": 87},
                },
                {"id": "d1", "mode": "3d", "challenge_code": 99997, "question": {"url1": "https://x/3d.jpeg"}},
            ],
        },
    }
    slide, three_d = parse_get(json.dumps(body).encode())
    assert slide.kind is Kind.SLIDE and slide.tip_y == 87 and slide.verify_id == "Verify_2"
    assert slide.urls == {Role.BACKGROUND: ("https://x/bg.jpeg",), Role.PIECE: ("https://x/piece.png",)}
    assert three_d.kind is Kind.THREE_D and three_d.mode == "3d"
    assert three_d.urls == {Role.IMAGE: ("https://x/3d.jpeg",)}


def test_mode_from_challenge_code_when_missing() -> None:
    body = shape_a()
    del body["data"]["mode"]  # type: ignore[index]
    [c] = parse_get(json.dumps(body).encode())
    assert c.mode == "whirl" and c.kind is Kind.ROTATE


@pytest.mark.parametrize("wrap", ["top", "data"])
def test_shape_c_edata(wrap: str) -> None:
    inner = {
        "code": 200,
        "data": {"challenges": [{"id": "e1", "mode": "whirl", "question": whirl_question()}], "verify_id": "Verify_3"},
    }
    body = {"edata": seal(inner)} if wrap == "top" else {"data": {"edata": seal(inner)}}
    [c] = parse_get(json.dumps(body).encode())
    assert c.id == "e1" and c.kind is Kind.ROTATE and c.verify_id == "Verify_3"


def test_inline_images_are_taken() -> None:
    import base64

    q = whirl_question() | {
        "object1": base64.b64encode(b"\x89PNG-outer").decode(),
        "object2": "data:image/png;base64," + base64.b64encode(b"inner").decode(),
    }
    body = shape_a()
    body["data"]["question"] = q  # type: ignore[index]
    [c] = parse_get(json.dumps(body).encode())
    assert c.inline == {Role.OUTER: b"\x89PNG-outer", Role.INNER: b"inner"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"code": 200}',
        b'{"data": {"question": 5}}',
        b'{"edata": "@@@"}',
        json.dumps({"edata": seal({"x": 1}, version=2)}).encode(),
        b'{"data": {"challenges": [1, "x", {"id": 5}]}}',
    ],
)
def test_unreadable_get_bodies_raise_not_recognised(body: bytes) -> None:
    with pytest.raises(NotRecognised):
        parse_get(body)


def test_edata_errors_are_specific() -> None:
    with pytest.raises(edata.EdataError, match="too short"):
        edata.decrypt("AQID")
    with pytest.raises(edata.EdataError, match="version"):
        edata.decode(seal({"a": 1}, version=7))
    assert edata.decode(seal({"a": [1, 2]})) == {"a": [1, 2]}


def test_url_key_ignores_host_and_query() -> None:
    assert url_key(OUTER) == url_key(BACKUP_OUTER + "?x-expires=1")


def test_verify_request_plain_edata_and_form() -> None:
    plain = {"modified_img_width": 340, "id": "abc", "mode": "slide", "reply": []}
    assert parse_verify_request(json.dumps(plain).encode()).challenge_id == "abc"
    assert parse_verify_request(json.dumps({"edata": seal(plain)}).encode()).mode == "slide"
    assert parse_verify_request(b"id=xyz&mode=whirl").challenge_id == "xyz"
    assert parse_verify_request(b"\xff\xfe garbage").challenge_id is None


def test_verify_response_bodies() -> None:
    ok = {"code": 200, "data": None, "message": "Verification complete", "msg_code": "200", "msg_sub_code": "success"}
    fail = {
        "code": 500,
        "data": {"msg": "VerifyErr"},
        "message": "Unable to verify. Please try again.",
        "msg_code": "500",
        "msg_sub_code": "verify_err",
    }
    old_fail = {"code": 500, "data": None, "message": "Verification failed. Please try again."}
    assert parse_verify_response(json.dumps(ok).encode()) is True
    assert parse_verify_response(json.dumps(fail).encode()) is False
    assert parse_verify_response(json.dumps(old_fail).encode()) is False
    assert parse_verify_response(json.dumps({"edata": seal(ok)}).encode()) is True
    with pytest.raises(NotRecognised):
        parse_verify_response(b'{"hello": 1}')
