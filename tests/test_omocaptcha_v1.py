"""The solver and its omocaptcha client against the fake service, one fault at a time."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from addon.capture.assemble import Captured, make_part
from addon.capture.images import Role, probe
from addon.capture.recognise import Kind
from addon.mitm.solving import make_http_client
from addon.publish.bus import EventBus
from addon.solving import failures
from addon.solving.base import RotateAnswer, Solution
from addon.solving.failures import BadImage
from addon.solving.omocaptcha_v1 import OmocaptchaV1Solver, job_payload
from addon.solving.scheduler import Scheduler, SchedulerConfig
from tests.conftest import tiny_manifest
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.test_paid import RecordingJob

KEY = "test-key-3141"
pytestmark = pytest.mark.usefixtures("eager_tasks")  # the task factory the proxy runs under


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("manifest")
    return d, tiny_manifest(d, whirls=8)  # eight image sets: repeats of one would wait for its answer, unpaid


@pytest.fixture
def fake(manifest_dir: tuple[Path, dict[str, Any]]) -> Iterator[FakeOmocaptcha]:
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(manifest_dir[0]),)) as f:
        yield f


def captured_from(
    manifest_dir: tuple[Path, dict[str, Any]], mode: str, n: int = 0, client: str = "c1", suffix: str = ""
) -> Captured:
    d, manifest = manifest_dir
    ch = [c for c in manifest["challenges"] if c["mode"] == mode][n]
    parts = {}
    for role, img in ch["images"].items():
        body = (d / img["file"]).read_bytes()
        parts[Role(role)] = make_part(Role(role), "https://cdn" + img["path"], body, probe(body))
    return Captured(ch["id"] + suffix, client, Kind.ROTATE if mode == "whirl" else Kind.SLIDE, "get", parts, None, None)


def cut(c: Captured, role: Role, keep: float = 0.6) -> Captured:
    """The challenge with one image cut short, as a download that broke off (its header still probes)."""
    part = c.images[role]
    images = {**c.images, role: dataclasses.replace(part, body=part.body[: int(len(part.body) * keep)])}
    return dataclasses.replace(c, images=images)


def without(c: Captured, role: Role) -> Captured:
    return dataclasses.replace(c, images={r: p for r, p in c.images.items() if r is not role})


class Harness:
    """A scheduler with omocaptcha v1 as its only solver, the events it emits kept as their JSON."""

    def __init__(self, url: str, key: str = KEY, **config: Any):
        self.bus = EventBus()
        self.events: list[dict[str, Any]] = []
        self.bus.subscribe("test", lambda e: self.events.append(e.to_json()))
        self.solver = Scheduler(self.bus)
        settings = {"poll_s": 0.05, "timeout_s": 5} | config
        self.http = make_http_client(settings.get("max_jobs", 32))
        self.v1 = OmocaptchaV1Solver(url, key, self.http)
        self.solver.configure(SchedulerConfig(solvers=(self.v1,), **settings))
        self.health = self.solver.services["omocaptcha-v1"].health

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in ("solved", "failed")]

    async def until(self, done: Callable[[], bool], limit: float = 10) -> None:
        """A bounded poll on a condition (the events come from the scheduler's own tasks)."""
        async with asyncio.timeout(limit):
            while not done():
                await asyncio.sleep(0.01)

    async def settle(self, n: int = 1, limit: float = 10) -> list[dict[str, Any]]:
        await self.until(lambda: len(self.finals()) >= n, limit)
        return self.finals()


async def test_rotate_sends_inner_then_outer_and_gets_the_slider_distance(
    fake: FakeOmocaptcha, manifest_dir: Any
) -> None:
    h = Harness(fake.base_url)
    c = captured_from(manifest_dir, "whirl")
    h.solver.submit(c)
    [final] = await h.settle()
    [truth] = [x for x in manifest_dir[1]["challenges"] if x["id"] == c.challenge_id]
    assert final["event"] == "solved" and final["result"] == str(round(truth["drag_px"]))
    value = float(round(truth["drag_px"]))
    assert final["answer"] == {"value": value, "fraction": value / 271, "angle": value / 271 * 360}
    assert final["service"] == "omocaptcha-v1" and final["tried"] == ["omocaptcha-v1"]
    assert abs((final["answer"]["angle"] - truth["angle"] + 180) % 360 - 180) < 1.0
    assert [e["event"] for e in h.events] == ["solving", "solved"]
    create = next(r for r in fake.log() if r["path"].endswith("createJob"))
    assert create["body"]["data"]["type_job_id"] == "23"
    assert [p.get("role") for p in create["body"]["data"]["image_base64"]] == ["inner", "outer"]
    assert create["body"]["api_token"] == KEY
    await h.solver.shutdown()


async def test_slide_sends_background_and_width_view(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    h = Harness(fake.base_url.rstrip("/"), width_view=348)
    c = captured_from(manifest_dir, "slide")
    h.solver.submit(c)
    [final] = await h.settle()
    [truth] = [x for x in manifest_dir[1]["challenges"] if x["id"] == c.challenge_id]
    answer = final["answer"]
    assert answer["width_view"] == 348 and abs(answer["x_natural"] - truth["gap_x"]) <= 1.0
    assert answer["fraction"] == pytest.approx(answer["x"] / 348)
    create = next(r for r in fake.log() if r["path"].endswith("createJob"))
    assert create["body"]["data"]["width_view"] == 348 and create["body"]["data"]["type_job_id"] == "21"
    await h.solver.shutdown()


async def test_polls_wait_poll_ms_before_the_first_and_between(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    fake.control(solve_seconds=0.5)
    h = Harness(fake.base_url, poll_s=0.2)
    h.solver.submit(captured_from(manifest_dir, "whirl"))
    [final] = await h.settle()
    assert final["event"] == "solved"
    log = fake.log()
    [created] = [r["time"] for r in log if r["path"].endswith("createJob")]
    polls = [r["time"] for r in log if r["path"].endswith("getJobResult")]
    # captcha_poll_ms is also the pause before the first poll: a job is never done the moment it is made.
    assert polls[0] - created >= 0.195, polls[0] - created
    assert fake.stats()["polls"]["min_interval_ms"] >= 195
    assert len(polls) == fake.stats()["polls"]["total"] >= 2
    await h.solver.shutdown()


@pytest.mark.parametrize(
    "fault",
    [
        "http_500",
        "http_502",
        "http_429",
        "non_json",
        "wrong_shape",
        "error_true",
        "drop",
        "success_field",
        "empty_result",
        "waiting_status",
        "unknown_status",
    ],
)
async def test_poll_faults_are_ridden_out(fake: FakeOmocaptcha, manifest_dir: Any, fault: str) -> None:
    fake.control(faults={"getJobResult": {fault: 0.5}}, solve_seconds=0.2, draw="spread")
    h = Harness(fake.base_url)
    h.solver.submit(captured_from(manifest_dir, "whirl"))
    [final] = await h.settle()
    assert final["event"] == "solved", final
    await h.solver.shutdown()


async def test_unsolvable_and_invalid_key(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    fake.control(fail_share=1.0)
    h = Harness(fake.base_url)
    h.solver.submit(captured_from(manifest_dir, "whirl"))
    [final] = await h.settle()
    assert final["reason"] == "unsolvable"
    fake.control(invalid_keys=[KEY], fail_share=0)
    h.solver.submit(captured_from(manifest_dir, "whirl", 1))
    await h.settle(2)
    h.solver.submit(captured_from(manifest_dir, "slide", 0))
    finals = await h.settle(3)
    assert [f["reason"] for f in finals[1:]] == ["invalid_key", "invalid_key"]
    assert len([r for r in fake.log() if r["path"].endswith("createJob")]) == 2
    assert all(KEY not in str(e) for e in h.events)
    await h.solver.shutdown()


@pytest.mark.parametrize("fault", ["http_500_after_create", "drop_after_create", "wrong_shape", "http_500"])
async def test_create_job_that_may_have_been_charged_is_not_repeated(
    fake: FakeOmocaptcha, manifest_dir: Any, fault: str
) -> None:
    fake.control(faults={"createJob": {fault: 1.0}})
    h = Harness(fake.base_url)
    h.solver.submit(captured_from(manifest_dir, "whirl"))
    [final] = await h.settle()
    assert final["reason"] == "api_error"
    assert len([r for r in fake.log() if r["path"].endswith("createJob")]) == 1
    await h.solver.shutdown()


async def test_create_job_refused_with_429_is_retried(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    fake.control(faults={"createJob": {"http_429": 0.5}}, draw="spread", seed=0)
    h = Harness(fake.base_url)
    for n in range(2):
        h.solver.submit(captured_from(manifest_dir, "whirl", n))
    finals = await h.settle(2)
    assert [f["event"] for f in finals] == ["solved", "solved"]
    creates = [r["status"] for r in fake.log() if r["path"].endswith("createJob")]
    # Spread draws with seed 0 refuse the second create of three: that one alone is sent again.
    assert creates == [200, 429, 200] and fake.stats()["faults"]["createJob"] == {"http_429": 1}
    assert fake.stats()["jobs"]["created"] == 2 and h.solver.jobs_sent == 2
    await h.solver.shutdown()


async def test_a_job_the_service_never_finishes_ends_at_its_deadline(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    # The slot wait counted in the deadline is pinned in test_scheduler.py; this is the same rule on a real job.
    fake.control(solve_seconds=30)
    h = Harness(fake.base_url, timeout_s=0.6)
    loop = asyncio.get_running_loop()
    start = loop.time()
    h.solver.submit(captured_from(manifest_dir, "slide"))
    [final] = await h.settle()
    took = loop.time() - start
    assert (final["reason"], final["service"], final["tried"]) == ("timeout", "omocaptcha-v1", ["omocaptcha-v1"])
    [create] = [r for r in fake.log() if r["path"].endswith("createJob")]
    assert final["job_id"] == create["job_id"] and isinstance(create["job_id"], int)
    assert 0.6 <= took < 0.6 + 5, took  # the deadline, not settle()'s own limit of 10 s
    await h.solver.shutdown()


async def test_service_down_fails_fast_then_recovers(manifest_dir: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = Harness(f"http://127.0.0.1:{port}/api", timeout_s=20)
    h.health.probe_s = 0.2
    for n in range(2):
        h.solver.submit(captured_from(manifest_dir, "whirl", n))
    finals = await h.settle(2, limit=15)
    assert [f["reason"] for f in finals] == ["api_error", "api_error"]
    assert h.health.is_down(h.solver.clock())
    # Down and no other solver: a new challenge waits only for the next probe's verdict, then fails.
    h.solver.submit(captured_from(manifest_dir, "slide", 0))
    finals = await h.settle(3)
    assert finals[-1]["message"] == "omocaptcha-v1 is unreachable; failing fast until it answers again"
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(manifest_dir[0]),), port=port):
        h.solver.submit(captured_from(manifest_dir, "slide", 1))
        finals = await h.settle(4)
        assert finals[-1]["event"] == "solved"
        assert not h.health.is_down(h.solver.clock())
    await h.solver.shutdown()


async def test_jobs_in_flight_are_bounded_and_overflow_fails_as_overloaded(
    fake: FakeOmocaptcha, manifest_dir: Any
) -> None:
    fake.control(solve_seconds=0.3)
    h = Harness(fake.base_url, max_jobs=2, max_waiting=3)
    for n in range(8):
        h.solver.submit(captured_from(manifest_dir, "whirl", n, client=f"c{n}", suffix=f"-{n}"))
    assert h.solver.in_flight == 5
    finals = await h.settle(8)
    assert [f.get("reason", "solved") for f in finals[:3]] == ["overloaded"] * 3
    assert [f["event"] for f in finals[3:]] == ["solved"] * 5
    assert fake.stats()["jobs"]["created"] == 5
    assert fake.stats()["jobs"]["running"] == 0
    await h.solver.shutdown()


async def test_shutdown_fails_everything_in_flight(fake: FakeOmocaptcha, manifest_dir: Any) -> None:
    fake.control(solve_seconds=30)
    h = Harness(fake.base_url, timeout_s=60)
    for n in range(3):
        h.solver.submit(captured_from(manifest_dir, "whirl", n, client=f"c{n}", suffix=f"-{n}"))
    await h.until(lambda: len([e for e in h.events if e["event"] == "solving"]) == 3)
    await h.solver.shutdown()
    assert sorted(f["reason"] for f in h.finals()) == ["shutdown"] * 3
    assert h.solver.in_flight == 0


@pytest.mark.parametrize(("endpoint", "fault"), [("getJobResult", "hang"), ("createJob", "hang"),
                                                 ("createJob", "hang_after_create")])
async def test_a_hanging_service_ends_every_challenge_at_its_deadline(
    fake: FakeOmocaptcha, manifest_dir: Any, endpoint: str, fault: str
) -> None:
    fake.control(faults={endpoint: {fault: 1.0}})
    h = Harness(fake.base_url, timeout_s=1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(2):
        h.solver.submit(captured_from(manifest_dir, "whirl", n, suffix=f"-{n}"))
    finals = await h.settle(2)
    took = loop.time() - start
    assert [f["reason"] for f in finals] == ["timeout", "timeout"]
    assert 1.0 <= took < 1.0 + 5, took  # the deadline, not settle()'s own limit of 10 s
    assert len([r for r in fake.log() if r["path"].endswith("createJob")]) == 2
    await h.solver.shutdown()


def test_job_payload_of_whole_images(manifest_dir: Any) -> None:
    whirl, slide = captured_from(manifest_dir, "whirl"), captured_from(manifest_dir, "slide")
    b64 = {r: base64.b64encode(p.body).decode() for r, p in (whirl.images | slide.images).items()}
    assert job_payload(whirl, 340) == ("23", b64[Role.INNER] + "|" + b64[Role.OUTER], {})
    assert job_payload(slide, 276) == ("21", b64[Role.BACKGROUND], {"width_view": 276})
    # The piece is never sent, so a piece cut short does not matter.
    assert job_payload(cut(slide, Role.PIECE), 340) == ("21", b64[Role.BACKGROUND], {"width_view": 340})


@pytest.mark.parametrize(("mode", "role"), [("whirl", Role.INNER), ("whirl", Role.OUTER), ("slide", Role.BACKGROUND)])
def test_job_payload_refuses_an_image_cut_short(manifest_dir: Any, mode: str, role: Role) -> None:
    c = captured_from(manifest_dir, mode)
    assert c.images[role].info.format == ("jpeg" if role is Role.BACKGROUND else "png")
    with pytest.raises(BadImage, match=f"{c.images[role].info.format} ends before its end marker"):
        job_payload(cut(c, role), 340)
    # One byte short is as cut as a third short.
    with pytest.raises(BadImage, match="truncated"):
        job_payload(cut(c, role, keep=(len(c.images[role].body) - 1) / len(c.images[role].body)), 340)


@pytest.mark.parametrize(("mode", "role", "message"), [
    ("whirl", Role.INNER, "without its inner image"), ("whirl", Role.OUTER, "without its outer image"),
    ("slide", Role.BACKGROUND, "without its background"),
])
def test_job_payload_refuses_a_challenge_missing_an_image(manifest_dir: Any, mode: str, role: Role,
                                                          message: str) -> None:
    with pytest.raises(BadImage, match=message):
        job_payload(without(captured_from(manifest_dir, mode), role), 340)


@pytest.mark.parametrize(("mode", "role"), [("whirl", Role.OUTER), ("slide", Role.BACKGROUND)])
async def test_an_image_cut_short_fails_as_bad_image_without_a_job(fake: FakeOmocaptcha, manifest_dir: Any,
                                                                    mode: str, role: Role) -> None:
    h = Harness(fake.base_url)
    h.solver.submit(cut(captured_from(manifest_dir, mode), role))
    [final] = await h.settle()
    assert (final["event"], final["reason"], final["tried"]) == ("failed", "bad_image", ["omocaptcha-v1"])
    assert "truncated" in final["message"]
    assert [e["event"] for e in h.events] == ["failed"]
    assert not [r for r in fake.log() if r["path"].endswith("createJob")] and h.solver.jobs_sent == 0
    # The whole challenge is solved as usual afterwards.
    h.solver.submit(captured_from(manifest_dir, mode, suffix="-whole"))
    finals = await h.settle(2)
    assert finals[1]["event"] == "solved"
    await h.solver.shutdown()


# ------------------------------------------------------------------------------------------------ on MockTransport


def v1_service(answers: dict[str, Any]) -> tuple[OmocaptchaV1Solver, list[httpx.Request], httpx.AsyncClient]:
    """v1 against a script: each call's path ends in a key of `answers`, whose value is its JSON answer."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=answers[request.url.path.rsplit("/", 1)[1]])

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    solver = OmocaptchaV1Solver("http://v1.invalid/api", KEY, http)
    solver.create_backoff = (0.01, 0.02)
    return solver, requests, http


async def test_v1_calls_carry_the_key_and_read_the_job_and_its_result(manifest_dir: Any) -> None:
    solver, requests, http = v1_service({"createJob": {"error": False, "job_id": "42"},
                                         "getJobResult": {"status": "success", "result": 123},
                                         "getBalance": {"balance": 1.5}})
    whirl = captured_from(manifest_dir, "whirl")
    job = RecordingJob()
    async with http:
        solution = await solver.solve(whirl, job)
        assert await solver.check() == "1.5"
    assert solution == Solution("123", RotateAnswer.from_value(123.0))
    b64 = {r: base64.b64encode(p.body).decode() for r, p in whirl.images.items()}
    assert [(r.url.path, json.loads(r.content)) for r in requests] == [
        ("/api/createJob", {"api_token": KEY, "data": {"type_job_id": "23",
                                                       "image_base64": b64[Role.INNER] + "|" + b64[Role.OUTER]}}),
        ("/api/getJobResult", {"api_token": KEY, "job_id": 42}),  # the job id as the number it names
        ("/api/getBalance", {"api_token": KEY}),
    ]
    assert job.calls == ["sent", "ok", "started", "ok"]


@pytest.mark.parametrize(("create", "result", "failure", "message"), [
    ({"error": False}, None, failures.ServiceError, "createJob: unexpected answer with fields error"),
    ({"error": False, "job_id": True}, None, failures.ServiceError, "createJob: unexpected answer"),
    ({"error": True, "message": "Invalid api_token"}, None, failures.InvalidKey, "createJob: Invalid api_token"),
    ({"error": True, "message": "Not enough balance"}, None, failures.ServiceError, "createJob: Not enough balance"),
    ({"error": True}, None, failures.ServiceError, "createJob: error without a message"),
    (None, {"status": "fail"}, failures.Unsolvable, "omocaptcha could not solve this challenge"),
    (None, {"status": "success", "result": ""}, failures.Unsolvable, "omocaptcha reported success without a result"),
    (None, {"status": "success", "result": True}, failures.Unsolvable, "omocaptcha reported success without a result"),
    (None, {"status": "success", "result": "abc"}, failures.ServiceError, "omocaptcha's result is not a number"),
])
async def test_v1_answers_that_are_no_job_or_no_result(
        manifest_dir: Any, create: Any, result: Any, failure: type[failures.SolveFailure], message: str) -> None:
    solver, requests, http = v1_service({"createJob": create or {"error": False, "job_id": 5},
                                         "getJobResult": result or {}})
    async with http:
        with pytest.raises(failure) as info:
            await solver.solve(captured_from(manifest_dir, "whirl"), RecordingJob())
    assert info.value.message.startswith(message) and not isinstance(info.value, failures.Unavailable)
    assert len([r for r in requests if r.url.path.endswith("createJob")]) == 1


async def test_v1_a_bad_image_is_refused_before_any_request(manifest_dir: Any) -> None:
    solver, requests, http = v1_service({})
    job = RecordingJob()
    async with http:
        for c in (cut(captured_from(manifest_dir, "whirl"), Role.OUTER),
                  without(captured_from(manifest_dir, "slide"), Role.BACKGROUND)):
            with pytest.raises(failures.BadImage) as info:
                await solver.solve(c, job)
            assert not info.value.reached
    assert requests == [] and job.calls == []


async def test_v1_a_balance_that_is_not_a_number_reads_unknown() -> None:
    solver, _, http = v1_service({"getBalance": {"balance": None}})
    async with http:
        assert await solver.check() == "unknown"
