"""Object captchas (3d, icon) stage by stage: recognition, assembly, image checks, the solvers' jobs and answers,
the failures before solving, delivery at the caller's width, and the drawn answer."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from addon.capture import images
from addon.capture.assemble import Assembler, Captured, make_part
from addon.capture.recognise import MAX_QUESTION_CHARS, parse_get
from addon.kinds import Kind, Role, kind_by_path
from addon.publish.answer_picture import draw_answer
from addon.publish.http_api import drag_for
from addon.solving import omocaptcha_v1, omocaptcha_v2
from addon.solving.base import PointsAnswer, Solution
from addon.solving.failures import BadImage, SolveFailure
from addon.solving.local import LocalSolver
from addon.solving.omocaptcha_v1 import OmocaptchaV1Solver
from addon.solving.omocaptcha_v2 import OmocaptchaV2Solver
from addon.solving.scheduler import refusal_before_solving
from addon.solving.sharing import from_shared_json, shared_json

URL = "https://p19-rc-captcha-va.ibyteimg.com/tos-maliva-i-b4yrtqhy5a-us/3d_2385_" + "a" * 40 + "_1.jpg~tplv-b4yrtqhy5a-2.jpeg"


def picture(size: tuple[int, int] = (552, 344), fmt: str = "JPEG", blank: bool = False) -> bytes:
    img = Image.new("RGB", size, (230, 230, 225))
    if not blank:
        img.paste((20, 90, 160), (100, 100, 160, 170))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def captured(kind: Kind, body: bytes | None = None, question: str | None = None,
             malformed: str | None = None) -> Captured:
    body = body if body is not None else picture()
    part = make_part(Role.IMAGE, URL, body, images.probe(body))
    return Captured("c1", "dev", kind, "get", {Role.IMAGE: part}, None, None, question=question, malformed=malformed)


def get_body(mode: str, question: dict[str, Any]) -> bytes:
    return json.dumps({"data": {"id": "x1", "mode": mode, "question": question}}).encode()


def test_a_3d_or_icon_get_is_a_challenge_of_one_image_with_its_prompt() -> None:
    (three_d,) = parse_get(get_body("3d", {"url1": URL, "tip_y": 0}))
    assert (three_d.kind, list(three_d.urls), three_d.question, three_d.malformed) == (Kind.THREE_D, [Role.IMAGE],
                                                                                      None, None)
    inline = "data:image/webp;base64," + base64.b64encode(picture(fmt="WEBP")).decode()
    (icon,) = parse_get(get_body("icon", {"object1": inline, "tip": "Which of these objects are used in hoops?"}))
    assert icon.kind is Kind.ICON and icon.inline[Role.IMAGE][:4] == b"RIFF"
    assert icon.question == "Which of these objects are used in hoops?"
    # Any other string field that is not an image, when none of the usual names is there.
    (other,) = parse_get(get_body("icon", {"url1": URL, "backup_url1": [URL], "words": "  Pick   the  balls "}))
    assert other.question == "Pick the balls"


def test_a_prompt_that_is_too_long_or_an_image_is_not_a_prompt() -> None:
    long = "x " * (MAX_QUESTION_CHARS + 1)
    (icon,) = parse_get(get_body("icon", {"url1": URL, "tip": long, "blob": "blob:https://x/1", "b": "A" * 200}))
    assert icon.question is None
    (ten_kb,) = parse_get(get_body("icon", {"url1": URL, "question": "y" * 10_000}))
    assert ten_kb.question is None


def test_a_3d_get_naming_two_images_is_malformed_and_fails_at_once_unpaid() -> None:
    (three_d,) = parse_get(get_body("3d", {"url1": URL, "url2": URL + "2"}))
    assert three_d.malformed is not None and "two images" in three_d.malformed
    refusal = refusal_before_solving(captured(Kind.THREE_D, malformed=three_d.malformed), (OmocaptchaV2Solver(
        "http://x", "k", None),))  # type: ignore[arg-type]
    assert refusal is not None and (refusal.reason, refusal.reached) == ("bad_image", False)


def test_kinds_no_solver_takes_fail_no_solver_and_an_icon_without_prompt_no_question() -> None:
    v1, v2, local = OmocaptchaV1Solver("http://x", "k", None), OmocaptchaV2Solver("http://x", "k", None), LocalSolver  # type: ignore[arg-type]
    assert Kind.ICON not in v1.kinds and Kind.THREE_D in v1.kinds and local.kinds == {Kind.ROTATE, Kind.SLIDE, Kind.THREE_D}
    refusal = refusal_before_solving(captured(Kind.ICON, question="Which?"), (v1,))
    assert refusal is not None and refusal.reason == "no_solver"
    refusal = refusal_before_solving(captured(Kind.ICON), (v1, v2))
    assert refusal is not None and refusal.reason == "no_question"
    assert refusal_before_solving(captured(Kind.ICON, question="Which?"), (v1, v2)) is None


def test_a_lone_552x344_image_stays_a_background_unless_its_path_names_its_kind() -> None:
    info = images.probe(picture())
    assert images.role_by_geometry(info) is Role.BACKGROUND
    assert kind_by_path("/tos-maliva-i-b4yrtqhy5a-us/" + "b" * 32 + "~tplv-b4yrtqhy5a-2.jpeg") is None
    assert kind_by_path("/img/security-captcha-oversea-usa/3d_" + "c" * 40 + "_1_1.png~tplv-obj.image") is Kind.THREE_D
    assert kind_by_path("/tos-x/icon_2385_" + "d" * 40 + "_1.jpg") is Kind.ICON
    a = Assembler()
    body = picture()
    part = make_part(Role.IMAGE, URL, body, info)
    (out,) = a.add_signed_image("dev", Kind.THREE_D, part, 0.0)
    assert isinstance(out, Captured) and out.kind is Kind.THREE_D and out.source == "geometry"
    assert a.add_signed_image("dev", Kind.THREE_D, part, 1.0) == []  # the same image again: once


@pytest.mark.parametrize("body, why", [
    (picture()[:-300], "truncated"), (picture(blank=True), "blank"), (picture((344, 344)), "size"),
])
def test_a_bad_object_image_fails_before_any_job(body: bytes, why: str) -> None:
    c = captured(Kind.THREE_D, body)
    # v1 and v2 refuse it the same way: the BadImage failure, nothing sent.
    for build in (omocaptcha_v1.job_payload, omocaptcha_v2.task_of):
        with pytest.raises(BadImage) as failure:
            build(c, 340)
        assert (failure.value.reason, failure.value.reached) == ("bad_image", False), why


def test_the_jobs_carry_view_sizes_from_the_images_aspect() -> None:
    type_job_id, _, sizes = omocaptcha_v1.job_payload(captured(Kind.THREE_D), 340)
    assert (type_job_id, sizes) == ("22", {"width_view": 340, "height_view": 212})
    task = omocaptcha_v2.task_of(captured(Kind.ICON, question="Which?"), 348)
    assert (task["type"], task["widthView"], task["heightView"], task["question"]) == (
        "TiktokSelectObjectWebTask", 348, 217, "Which?")
    assert omocaptcha_v2.task_of(captured(Kind.THREE_D), 340)["type"] == "Tiktok3DSelectObjectWebTask"


def test_v1_points_are_read_in_view_pixels_and_bad_results_fail() -> None:
    c = captured(Kind.THREE_D)
    answer = omocaptcha_v1.answer_of(c, "98.6|75.4|181.5|147.8", 340)
    assert isinstance(answer, PointsAnswer) and (answer.width_view, answer.height_view) == (340, 212)
    first = answer.points[0]
    assert (first.x, first.y) == (98.6, 75.4)
    assert first.x_natural == pytest.approx(98.6 * 552 / 340) and first.y_natural == pytest.approx(75.4 * 344 / 212)
    for bad in ("1|2|3|4|5|6", "", "1|2|3", "1|2|900|4", "a|b|c|d", "nan|1|2|3", "-1|2|3|4"):
        with pytest.raises(SolveFailure) as failure:
            omocaptcha_v1.answer_of(c, bad, 340)
        assert failure.value.reason == "api_error", bad


def test_v2_points_and_bad_solutions() -> None:
    c = captured(Kind.ICON, question="Which?")
    solution = omocaptcha_v2.solution_of(c, {"pointA": {"x": 50, "y": 30}, "pointB": {"x": 100, "y": 70}}, 340)
    assert isinstance(solution.answer, PointsAnswer) and len(solution.answer.points) == 2
    for bad in ({"pointA": {"x": 50, "y": 30}}, {"pointA": {"x": "50", "y": 30}, "pointB": {"x": 1, "y": 1}},
                {"pointA": {"x": 50, "y": 300}, "pointB": {"x": 1, "y": 1}}):
        with pytest.raises(SolveFailure) as failure:
            omocaptcha_v2.solution_of(c, bad, 340)
        assert failure.value.reason == "api_error", bad


def test_points_scale_to_the_callers_width_and_survive_the_fleet() -> None:
    answer = omocaptcha_v1.answer_of(captured(Kind.THREE_D), "170|106|34|21.2", 340)
    event = {"event": "solved", "kind": "3d", "answer": answer.to_json()}
    drag = drag_for(event, {"width": "680"})
    assert drag is not None and drag["points"][0] == {"x": 340.0, "y": 212.0} and drag["height"] == 424.0
    assert drag_for(event, {}) is None
    service, back = from_shared_json(shared_json("omocaptcha-v1", Solution("170|106|34|21.2", answer)))
    assert (service, back.answer) == ("omocaptcha-v1", answer)


def test_the_drawn_answer_marks_each_point() -> None:
    body = picture(blank=True)
    answer = omocaptcha_v1.answer_of(captured(Kind.THREE_D), "170|106|34|21.2", 340).to_json()
    png = draw_answer("3d", {"image": body}, answer)
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
        assert rgb.getpixel((276 - 6, 172)) == (255, 0, 200)  # the first marker, at (276, 172) natural
        assert max(abs(a - b) for a, b in zip(rgb.getpixel((10, 10)), (230, 230, 225), strict=True)) <= 3
