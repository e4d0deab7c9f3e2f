"""OmocaptchaV2Solver against the fake service's v2 task API, one fault at a time."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from addon.capture.assemble import Captured, make_part
from addon.capture.images import Role, probe
from addon.capture.recognise import Kind
from addon.solving import failures
from addon.solving.base import RotateAnswer, SlideAnswer, Solution
from addon.solving.failures import SolveFailure, Unavailable
from addon.solving.omocaptcha_v2 import DEFAULT_URL, OmocaptchaV2Solver
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.synth import Manifest, SlideChallenge, WhirlChallenge, generate

KEY = "v2-secret-key-2718"
READ_TIMEOUT = 0.25


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate(tmp_path_factory.mktemp("kit"), seed=33, count=2)


@pytest.fixture
def fake(manifest: Manifest) -> Iterator[FakeOmocaptcha]:
    assert manifest.root is not None
    with FakeOmocaptcha(keys=(KEY,), manifests=(str(manifest.root),)) as f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(connect=2.0, read=READ_TIMEOUT, write=2.0, pool=2.0)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        yield client


@pytest.fixture
def solver(fake: FakeOmocaptcha, http: httpx.AsyncClient) -> OmocaptchaV2Solver:
    s = OmocaptchaV2Solver(fake.v2_base_url, KEY, http)
    s.create_backoff = (0.05, 0.1)
    return s


def captured(manifest: Manifest, challenge: WhirlChallenge | SlideChallenge, cut: int = 0) -> Captured:
    parts = {}
    for role, img in challenge.images.items():
        body = manifest.file(img).read_bytes()
        info = probe(body)
        if cut:
            body = body[:-cut]
        parts[Role(role)] = make_part(Role(role), "https://cdn" + img.path, body, info)
    kind = Kind.ROTATE if challenge.mode == "whirl" else Kind.SLIDE
    return Captured(challenge.id, "c1", kind, "get", parts, None, None)


@dataclass
class RecordingJob:
    """A Job that records what the solver tells the scheduler; hooks let a test act at a given moment."""

    width_view: int = 340
    poll_s: float = 0.01
    calls: list[tuple[str, Any]] = field(default_factory=list)
    on_sent: Callable[[int], None] | None = None
    on_started: Callable[[], None] | None = None
    on_poll: Callable[[int], None] | None = None
    """Called with the number of poll outcomes (ok or fault after `started`) so far."""

    def started(self, job_id: str | int | None) -> None:
        self.calls.append(("started", job_id))
        if self.on_started:
            self.on_started()

    def service_ok(self) -> None:
        self.calls.append(("ok", None))
        self._polled()

    def service_fault(self, failure: Unavailable) -> None:
        assert isinstance(failure, Unavailable)
        self.calls.append(("fault", failure.message))
        self._polled()

    def _polled(self) -> None:
        names = [n for n, _ in self.calls]
        if self.on_poll and "started" in names:
            self.on_poll(len(names) - names.index("started") - 1)

    def job_sent(self) -> None:
        self.calls.append(("sent", None))
        if self.on_sent:
            self.on_sent(self.count("sent"))

    def job_not_sent(self) -> None:
        self.calls.append(("not_sent", None))

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    @property
    def net_sent(self) -> int:
        return self.count("sent") - self.count("not_sent")


def creates(fake: FakeOmocaptcha) -> list[dict[str, Any]]:
    return [e for e in fake.log() if e["path"] == "/v2/createTask"]


def rotate_truth(whirl: WhirlChallenge) -> RotateAnswer:
    return RotateAnswer.from_fraction(1 - round(1 - whirl.angle / 360, 2))


async def failure_of(solver: OmocaptchaV2Solver, c: Captured, job: RecordingJob) -> SolveFailure:
    with pytest.raises(SolveFailure) as info:
        await solver.solve(c, job)
    assert KEY not in str(info.value) and KEY not in info.value.message
    return info.value


# ------------------------------------------------------------------------------------------------ answers


async def test_rotate_answers_equal_the_truth(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    for whirl in manifest.whirls():
        job = RecordingJob()
        solution = await solver.solve(captured(manifest, whirl), job)
        r = round(1 - whirl.angle / 360, 2)
        assert solution == Solution(f'{{"rotate":{r}}}', rotate_truth(whirl))
        assert isinstance(solution.answer, RotateAnswer)
        assert abs(solution.answer.angle - whirl.angle) <= 1.8  # r has two decimals: 3.6 degrees a step
        assert solution.confidence is None
        task_id = job.calls[2][1]
        assert job.calls[:3] == [("sent", None), ("ok", None), ("started", task_id)]
        assert job.net_sent == 1 and job.count("fault") == 0
    for entry in creates(fake):
        assert entry["body"]["clientKey"] == KEY and entry["body"]["task"]["type"] == "TiktokRotateWebTask"
        assert [p["role"] for p in entry["body"]["task"]["imageBase64s"]] == ["inner", "outer"]
    assert fake.stats()["v2"]["tasks"]["created"] == 2


@pytest.mark.parametrize("width_view", [340, 300])
async def test_slide_answers_equal_the_truth(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver, width_view: int
) -> None:
    for slide in manifest.slides():
        solution = await solver.solve(captured(manifest, slide), RecordingJob(width_view=width_view))
        x = round(slide.gap_x * width_view / 552)
        assert solution == Solution(f'{{"end":{{"x":{x}}}}}', SlideAnswer.from_view(x, 552, width_view))
        assert isinstance(solution.answer, SlideAnswer)
        assert abs(solution.answer.x_natural - slide.gap_x) <= 0.5 * 552 / width_view
    for entry in creates(fake):
        task = entry["body"]["task"]
        assert task["type"] == "TiktokSliderWebTask" and task["widthView"] == width_view
        assert task["imageBase64"]["role"] == "background"


async def test_polls_after_poll_s_until_ready(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    # The task stays processing until the test has seen three polls (the fake's hold), whatever the machine's load.
    fake.control(solve_seconds=0, hold=True)
    job = RecordingJob(poll_s=0.05)
    solving = asyncio.create_task(solver.solve(captured(manifest, manifest.whirls()[0]), job))
    async with asyncio.timeout(30):
        while len([e for e in fake.log() if e["path"] == "/v2/getTaskResult"]) < 3:
            await asyncio.sleep(0.01)
    fake.control(hold=False)
    await solving
    log = fake.log()
    times = [e["time"] for e in log if e["path"] == "/v2/getTaskResult"]
    assert len(times) >= 3
    assert times[0] - log[0]["time"] >= 0.045
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.045
    per = next(iter(fake.stats()["v2"]["polls"]["per_task"].values()))
    assert per["status"] == "ready" and per["polls_after_final"] == 0


async def test_deadline_cancels_the_poll_loop(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    fake.control(solve_seconds=60)
    started = asyncio.Event()
    job = RecordingJob(on_started=started.set)
    task = asyncio.create_task(solver.solve(captured(manifest, manifest.slides()[0]), job))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.net_sent == 1


def test_defaults(http: httpx.AsyncClient) -> None:
    assert DEFAULT_URL == "https://api.omocaptcha.com/v2"
    s = OmocaptchaV2Solver(DEFAULT_URL + "/", KEY, http)
    assert (s.name, s.paid, s.base_url, s.create_backoff) == (
        "omocaptcha-v2",
        True,
        "https://api.omocaptcha.com/v2/",
        (1.0, 2.0),
    )
    assert KEY not in repr(s) and KEY not in str(vars(s).get("base_url"))


# ------------------------------------------------------------------------------------------------ poll faults

AVAILABILITY = ["http_500", "http_502", "http_429", "non_json", "drop", "hang",
                "task_is_maintenance", "service_unavailable", "redis_unavailable", "redis_job_data"]


@pytest.mark.parametrize("fault", [*AVAILABILITY, "wrong_shape", "unknown_status"])
async def test_poll_faults_are_ridden_out(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver, fault: str
) -> None:
    fake.control(faults={"v2/getTaskResult": {fault: 1.0}})

    def heal(polls: int) -> None:
        if polls == 3:
            fake.control(faults=None)

    whirl = manifest.whirls()[1]
    job = RecordingJob(on_poll=heal)
    solution = await solver.solve(captured(manifest, whirl), job)
    assert solution.answer == rotate_truth(whirl)
    assert fake.stats()["faults"]["v2/getTaskResult"] == {fault: 3}
    assert len(creates(fake)) == 1 and job.net_sent == 1
    # an answer in the wrong shape or with an unknown status is no availability fault, just "not ready yet"
    assert job.count("fault") == (3 if fault in AVAILABILITY else 0)


async def test_poll_answers_about_the_task_end_it_after_three(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    fake.control(solve_seconds=60)

    def forget() -> None:  # the service loses the task: every poll is answered ERROR_TASK_NOT_FOUND
        with fake.state.lock:
            fake.state.tasks.clear()

    job = RecordingJob(on_started=forget)
    failure = await failure_of(solver, captured(manifest, manifest.slides()[1]), job)
    assert failure.reason == "api_error" and "ERROR_TASK_NOT_FOUND" in failure.message
    polls = [e for e in fake.log() if e["path"] == "/v2/getTaskResult"]
    assert len(polls) == 3 and job.count("fault") == 0


# ------------------------------------------------------------------------------------------------ createTask


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_create_is_tried_three_times(manifest: Manifest, http: httpx.AsyncClient) -> None:
    solver = OmocaptchaV2Solver(f"http://127.0.0.1:{_free_port()}/v2", KEY, http)
    solver.create_backoff = (0.01, 0.02)
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), job)
    assert failure.reason == "api_error" and isinstance(failure, Unavailable) and not failure.reached
    assert job.count("sent") == 3 and job.net_sent == 0 and job.count("fault") == 3


@pytest.mark.parametrize("fault", ["http_429", "task_is_maintenance", "service_unavailable"])
async def test_create_turned_away_is_retried_with_backoff(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver, fault: str
) -> None:
    fake.control(faults={"v2/createTask": {fault: 1.0}})
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), job)
    assert isinstance(failure, Unavailable) and not failure.reached
    times = [e["time"] for e in creates(fake)]
    assert len(times) == 3 and times[1] - times[0] >= 0.045 and times[2] - times[1] >= 0.095
    assert job.net_sent == 0 and job.count("fault") == 3
    assert fake.stats()["v2"]["tasks"]["created"] == 0


async def test_create_retry_then_success(manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver) -> None:
    fake.control(faults={"v2/createTask": {"service_unavailable": 1.0}})

    def heal(attempt: int) -> None:
        if attempt == 2:
            fake.control(faults=None)

    job = RecordingJob(on_sent=heal)
    whirl = manifest.whirls()[0]
    solution = await solver.solve(captured(manifest, whirl), job)
    assert solution.answer == rotate_truth(whirl)
    assert [e["fault"] for e in creates(fake)] == ["service_unavailable", None]
    assert job.net_sent == 1 and job.count("fault") == 1


@pytest.mark.parametrize(
    "fault",
    ["http_500_after_create", "drop_after_create", "hang_after_create", "redis_unavailable_after_create",
     "redis_job_data_after_create", "redis_unavailable", "redis_job_data", "http_500", "http_502", "non_json",
     "drop", "hang", "wrong_shape"],
)
async def test_create_that_may_have_been_charged_is_never_repeated(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver, fault: str
) -> None:
    fake.control(faults={"v2/createTask": {fault: 1.0}})
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.slides()[0]), job)
    assert failure.reason == "api_error" and failure.reached
    assert len(creates(fake)) == 1 and job.net_sent == 1 and job.count("started") == 0
    assert job.count("fault") == (0 if fault == "wrong_shape" else 1)
    if fault.endswith("_after_create"):
        assert fake.stats()["v2"]["tasks"]["created"] == 1  # the fake did make (and charge) it


# ------------------------------------------------------------------------------------------------ final errors


async def test_bad_key(manifest: Manifest, fake: FakeOmocaptcha, http: httpx.AsyncClient) -> None:
    solver = OmocaptchaV2Solver(fake.v2_base_url, KEY + "-wrong", http)
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), job)
    assert failure.reason == "invalid_key" and "ERROR_KEY_DOES_NOT_EXIST" in failure.message
    assert len(creates(fake)) == 1 and job.calls[-1] == ("ok", None)
    with pytest.raises(SolveFailure) as info:
        await solver.check()
    assert info.value.reason == "invalid_key"


async def test_key_refused_while_polling(manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver) -> None:
    fake.control(solve_seconds=60)

    def refuse() -> None:
        fake.control(invalid_keys=[KEY])

    job = RecordingJob(on_started=refuse)
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), job)
    assert failure.reason == "invalid_key"
    assert len([e for e in fake.log() if e["path"] == "/v2/getTaskResult"]) == 1


async def test_failed_task_is_unsolvable(manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver) -> None:
    fake.control(fail_share=1.0)
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), RecordingJob())
    assert failure.reason == "unsolvable" and "ERROR_JOB_STATUS" in failure.message and not isinstance(failure, Unavailable)


async def test_empty_solution_is_unsolvable(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    fake.control(faults={"v2/getTaskResult": {"empty_solution": 1.0}})
    failure = await failure_of(solver, captured(manifest, manifest.slides()[0]), RecordingJob())
    assert failure.reason == "unsolvable" and "without a solution" in failure.message


async def test_zero_balance_is_an_api_error(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    fake.control(balance="0")
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), job)
    assert failure.reason == "api_error" and not isinstance(failure, Unavailable)
    assert failure.message == "createTask: ERROR_ZERO_BALANCE (Account has zero balance.)"
    assert len(creates(fake)) == 1 and job.count("fault") == 0


async def test_truncated_image_is_never_sent(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver
) -> None:
    job = RecordingJob()
    failure = await failure_of(solver, captured(manifest, manifest.whirls()[0], cut=20), job)
    assert failure.reason == "bad_image" and not failure.reached
    assert fake.log() == [] and job.calls == []


# ------------------------------------------------------------------------------------------------ check, report


async def test_check_reads_the_balance(fake: FakeOmocaptcha, solver: OmocaptchaV2Solver) -> None:
    assert await solver.check() == "10.0"
    fake.control(balance="3.14159")
    assert await solver.check() == "3.14159"
    for fault in ("http_502", "hang", "service_unavailable", "non_json"):
        fake.control(faults={"v2/getBalance": {fault: 1.0}})
        with pytest.raises(SolveFailure) as info:
            await solver.check()
        assert (type(info.value), info.value.reached) == (Unavailable, False)
    fake.control(faults={"v2/getBalance": {"wrong_shape": 1.0}})
    assert await solver.check() == "0.00000"  # v1's shape still carries a balance


async def test_check_when_unreachable(http: httpx.AsyncClient) -> None:
    solver = OmocaptchaV2Solver(f"http://127.0.0.1:{_free_port()}/v2", KEY, http)
    with pytest.raises(SolveFailure) as info:
        await solver.check()
    assert (type(info.value), info.value.reached) == (Unavailable, False)


async def test_report_is_best_effort(manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver) -> None:
    job = RecordingJob()
    await solver.solve(captured(manifest, manifest.whirls()[0]), job)
    task_id = str(job.calls[2][1])
    assert await solver.report(task_id, False) is True
    assert await solver.report(task_id, True) is True
    assert fake.stats()["v2"]["polls"]["per_task"][task_id]["reports"] == [False, True]
    entry = next(e for e in fake.log() if e["path"] == "/v2/report")
    assert entry["body"] == {"clientKey": KEY, "id": [task_id], "isSuccess": False}
    assert await solver.report("00000000-0000-4000-8000-000000000000", True) is False
    for fault in ("drop", "http_500", "hang"):
        fake.control(faults={"v2/report": {fault: 1.0}})
        assert await solver.report(task_id, True) is False
    fake.control(faults=None, down=True)
    assert await solver.report(task_id, True) is False
    fake.control(down=False)
    await solver.close()
    assert await solver.report(task_id, True) is True  # close() leaves the shared client alone
    assert fake.stats()["v2"]["reports"] == {"accepted": 2, "rejected": 1}


# ------------------------------------------------------------------------------------------------ the key


async def test_the_key_never_shows(
    manifest: Manifest, fake: FakeOmocaptcha, solver: OmocaptchaV2Solver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    fake.control(draw="spread", faults={"v2/getTaskResult": {"http_500": 0.5, "drop": 0.25}})
    job = RecordingJob()
    await solver.solve(captured(manifest, manifest.whirls()[0]), job)
    messages += [str(m) for _, m in job.calls]
    for faults in ({"v2/createTask": {"drop": 1.0}}, {"v2/createTask": {"non_json": 1.0}}):
        fake.control(faults=faults)
        messages.append(str(await failure_of(solver, captured(manifest, manifest.whirls()[0]), RecordingJob())))
    await solver.report("nope", True)
    text = "\n".join([*messages, caplog.text, repr(solver), str(vars(solver).get("base_url"))])
    assert "polling omocaptcha-v2 failed" in caplog.text
    assert KEY not in text


async def test_a_service_that_echoes_the_key_is_redacted(manifest: Manifest) -> None:
    """The fake never echoes a key; a service that does (in an error text, or in an exception) must not leak it."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("getBalance"):
            raise httpx.ReadError(f"connection reset while sending {json.loads(request.content)['clientKey']}")
        return httpx.Response(200, json={"errorId": 1, "errorCode": "ERROR_KEY_DOES_NOT_EXIST",
                                         "errorDescription": f"Key {KEY} does not exist"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        solver = OmocaptchaV2Solver("http://omocaptcha.invalid/v2", KEY, client)
        failure = await failure_of(solver, captured(manifest, manifest.whirls()[0]), RecordingJob())
        assert failure.reason == "invalid_key" and "Key *** does not exist" in failure.message
        with pytest.raises(SolveFailure) as info:
            await solver.check()
        assert "ReadError" in info.value.message and KEY not in info.value.message


# ------------------------------------------------------------------------------------------------ on MockTransport


def v2_service(answers: dict[str, Any]) -> tuple[OmocaptchaV2Solver, list[httpx.Request], httpx.AsyncClient]:
    """v2 against a script: each call's last path segment names its JSON answer in `answers`."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=answers[request.url.path.rsplit("/", 1)[1]])

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    solver = OmocaptchaV2Solver("http://v2.invalid/v2", KEY, http)
    solver.create_backoff = (0.01, 0.02)
    return solver, requests, http


async def test_v2_calls_carry_the_key_and_read_the_task_and_its_solution(manifest: Manifest) -> None:
    solver, requests, http = v2_service({"createTask": {"errorId": 0, "taskId": "t-1"},
                                         "getTaskResult": {"errorId": 0, "status": "ready",
                                                           "solution": {"rotate": 0.25}},
                                         "report": {"errorId": 0}})
    whirl = captured(manifest, manifest.whirls()[0])
    async with http:
        solution = await solver.solve(whirl, RecordingJob())
        assert await solver.report("t-1", False) is True
    assert solution == Solution('{"rotate":0.25}', RotateAnswer.from_fraction(0.75))
    b64 = [base64.b64encode(whirl.images[r].body).decode() for r in (Role.INNER, Role.OUTER)]
    assert [(r.url.path, json.loads(r.content)) for r in requests] == [
        ("/v2/createTask", {"clientKey": KEY, "task": {"type": "TiktokRotateWebTask", "imageBase64s": b64}}),
        ("/v2/getTaskResult", {"clientKey": KEY, "taskId": "t-1"}),
        ("/v2/report", {"clientKey": KEY, "id": ["t-1"], "isSuccess": False}),
    ]


@pytest.mark.parametrize(("doc", "failure", "reached", "creates"), [
    ({"errorId": 1, "errorCode": "ERROR_JOB_STATUS"}, failures.Unsolvable, True, 1),
    ({"errorId": 1, "errorCode": "ERROR_KEY_DOES_NOT_EXIST"}, failures.InvalidKey, True, 1),
    ({"errorId": 1, "errorCode": "ERROR_ZERO_BALANCE"}, failures.ServiceError, True, 1),
    ({"errorId": 7}, failures.ServiceError, True, 1),
    ({"errorId": 0}, failures.ServiceError, True, 1),  # no taskId
    # Turned away before a task was made: sent again, up to three times.
    ({"errorId": 1, "errorCode": "ERROR_TASK_IS_MAINTENANCE"}, failures.Unavailable, False, 3),
    ({"errorId": 1, "errorCode": "ERROR_SERVICE_UNAVAILABLE"}, failures.Unavailable, False, 3),
    # Storing the task's data failed, perhaps after it was made and charged: never sent again.
    ({"errorId": 1, "errorCode": "ERROR_REDIS_UNAVAILABLE"}, failures.Unavailable, True, 1),
    ({"errorId": 1, "errorCode": "ERROR_REDIS_JOB_DATA"}, failures.Unavailable, True, 1),
])
async def test_v2_create_refusals_by_their_code(
        manifest: Manifest, doc: dict[str, Any], failure: type[failures.SolveFailure], reached: bool,
        creates: int) -> None:
    solver, requests, http = v2_service({"createTask": doc})
    async with http:
        with pytest.raises(failures.SolveFailure) as info:
            await solver.solve(captured(manifest, manifest.slides()[0]), RecordingJob())
    assert (type(info.value), info.value.reached, len(requests)) == (failure, reached, creates)


async def test_v2_refusal_texts_name_the_code_and_the_description() -> None:
    solver, _, http = v2_service({"getBalance": {"errorId": 1, "errorCode": "ERROR_ZERO_BALANCE",
                                                 "errorDescription": "Account has zero balance."}})
    async with http:
        with pytest.raises(failures.ServiceError) as info:
            await solver.check()
    assert info.value.message == "getBalance: ERROR_ZERO_BALANCE (Account has zero balance.)"
    assert solver.refusal("createTask", {"errorId": 7}) is not None
    assert str(solver.refusal("createTask", {"errorId": 7})) == "createTask: error 7"


async def test_v2_a_bad_image_is_refused_before_any_request(manifest: Manifest) -> None:
    solver, requests, http = v2_service({})
    job = RecordingJob()
    async with http:
        with pytest.raises(failures.BadImage) as info:
            await solver.solve(captured(manifest, manifest.whirls()[0], cut=20), job)
    assert not info.value.reached and requests == [] and job.calls == []
