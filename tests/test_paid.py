"""What every paid HTTP service shares (`addon/solving/paid.py`), on `httpx.MockTransport`: no socket, each fault
made exactly. httpx's errors and the answers' shapes mapped to failures, the create-at-most-once retry, the poll
loop, the free check, and the health each call reports to the job."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from addon.capture.assemble import Captured
from addon.kinds import Kind
from addon.solving import failures
from addon.solving.base import Job, Solution
from addon.solving.paid import CREATE_ATTEMPTS, POLL_FAULTS_FINAL, PaidHttpSolver

KEY = "paid-secret-key-1618"
URL = "http://paid.invalid/api"

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class RecordingJob:
    """A Job that records what the solver tells the scheduler, in order."""

    width_view: int = 340
    poll_s: float = 0.01
    calls: list[str] = field(default_factory=list)

    def started(self, job_id: str | int | None) -> None:
        self.calls.append("started")

    def service_ok(self) -> None:
        self.calls.append("ok")

    def service_fault(self, failure: failures.Unavailable) -> None:
        assert isinstance(failure, failures.Unavailable)
        self.calls.append("fault")

    def job_sent(self) -> None:
        self.calls.append("sent")

    def job_not_sent(self) -> None:
        self.calls.append("not_sent")

    @property
    def net_sent(self) -> int:
        return self.calls.count("sent") - self.calls.count("not_sent")


class Service(PaidHttpSolver):
    """A made-up paid service: `{"error": "..."}` in a 200 answer is its refusal, mapped by `refuse`."""

    name = "paid-test"
    kinds = frozenset({Kind.SLIDE})

    def __init__(self, http: httpx.AsyncClient, refuse: Callable[[str], failures.SolveFailure] | None = None):
        super().__init__(URL, KEY, http)
        self.create_backoff = (0.02, 0.04)
        self._refuse = refuse or failures.ServiceError

    def refusal(self, call: str, doc: dict[str, Any]) -> failures.SolveFailure | None:
        error = doc.get("error")
        return self._refuse(f"{call}: {error}") if isinstance(error, str) else None

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        raise NotImplementedError

    async def check(self) -> str | None:
        return str((await self.free_call("balance", {"key": self._key}))["balance"])


class Script:
    """The service's side: each request gets the next answer (a response, or an exception httpx raises)."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(asyncio.get_running_loop().time())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def ok(doc: Any) -> httpx.Response:
    return httpx.Response(200, json=doc)


@pytest.fixture
async def client() -> AsyncIterator[Callable[[Script], httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []

    def make(script: Script) -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(transport=httpx.MockTransport(script)))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


def service(client: Callable[[Script], httpx.AsyncClient], *answers: Any, **kw: Any) -> tuple[Service, Script]:
    script = Script(*answers)
    return Service(client(script), **kw), script


# ------------------------------------------------------------------------------------------------ one call


async def test_a_call_posts_json_under_the_base_url_and_returns_the_object(client: Any) -> None:
    s, script = service(client, ok({"balance": 3}))
    assert await s.post("createJob", {"a": [1, "é"]}) == {"balance": 3}
    [request] = script.requests
    assert (request.method, str(request.url)) == ("POST", URL + "/createJob")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"a": [1, "é"]}
    assert s.base_url == URL + "/"  # one slash, whichever way the option was written


LOST = [
    (httpx.ReadTimeout("slow"), "call: no answer in time (ReadTimeout)"),
    (httpx.WriteTimeout("slow"), "call: no answer in time (WriteTimeout)"),
    (httpx.ReadError("reset"), "call: ReadError: reset"),
    (httpx.RemoteProtocolError("closed mid-answer"), "call: RemoteProtocolError: closed mid-answer"),
    (httpx.Response(500), "call: HTTP 500"),
    (httpx.Response(502), "call: HTTP 502"),
    (httpx.Response(503), "call: HTTP 503"),
    (httpx.Response(200, content=b"<html>oops</html>"), "call: answer is not JSON"),
    (httpx.Response(200, json=[1, 2]), "call: answer is not a JSON object"),
]
"""Availability faults after the request went out: it may have reached the service."""
REFUSED = [
    (httpx.ConnectError("refused"), "call: cannot connect (ConnectError)"),
    (httpx.ConnectTimeout("no syn-ack"), "call: cannot connect (ConnectTimeout)"),
    (httpx.Response(429), "call: HTTP 429 (busy)"),
]
"""Availability faults that provably never reached the service (a 429 is turned away before any job)."""


@pytest.mark.parametrize(("answer", "message"), LOST)
async def test_faults_after_the_request_left_are_unavailable_and_may_have_reached(
        client: Any, answer: Any, message: str) -> None:
    s, _ = service(client, answer)
    with pytest.raises(failures.Unavailable) as info:
        await s.post("call", {})
    assert (info.value.message, info.value.reached, info.value.reason) == (message, True, "api_error")


@pytest.mark.parametrize(("answer", "message"), REFUSED)
async def test_faults_before_the_service_are_unavailable_and_never_reached(
        client: Any, answer: Any, message: str) -> None:
    s, _ = service(client, answer)
    with pytest.raises(failures.Unavailable) as info:
        await s.post("call", {})
    assert (info.value.message, info.value.reached) == (message, False)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 418, 201])
async def test_other_statuses_are_the_service_answering_not_an_availability_fault(client: Any, status: int) -> None:
    s, _ = service(client, httpx.Response(status, json={}))
    with pytest.raises(failures.ServiceError) as info:
        await s.post("call", {})
    assert not isinstance(info.value, failures.Unavailable)
    assert (info.value.message, info.value.reached) == (f"call: HTTP {status}", True)


async def test_the_services_own_refusal_in_a_200_answer_is_raised(client: Any) -> None:
    s, _ = service(client, ok({"error": "bad token"}), refuse=failures.InvalidKey)
    with pytest.raises(failures.InvalidKey, match="call: bad token"):
        await s.post("call", {})


async def test_the_key_never_shows_in_a_failure_or_the_solvers_repr(client: Any) -> None:
    s, _ = service(client, httpx.ReadError(f"reset while sending {KEY}"))
    with pytest.raises(failures.Unavailable) as info:
        await s.post("call", {"key": KEY})
    assert info.value.message == "call: ReadError: reset while sending ***"
    assert KEY not in repr(s) and "paid.invalid" in repr(s)


# ------------------------------------------------------------------------------------------------ create


def created(request: httpx.Request) -> httpx.Response:
    return ok({"job": 7})


async def create(s: Service, job: RecordingJob) -> Any:
    return await s.create(job, lambda: s.post("create", {}))


async def test_a_create_answered_at_once_is_sent_once(client: Any) -> None:
    s, script = service(client, created)
    job = RecordingJob()
    assert await create(s, job) == {"job": 7}
    assert len(script.requests) == 1 and job.calls == ["sent", "ok"]


@pytest.mark.parametrize(("answer", "message"), LOST)
async def test_a_create_whose_answer_was_lost_is_never_sent_again(client: Any, answer: Any, message: str) -> None:
    s, script = service(client, answer, created)
    job = RecordingJob()
    with pytest.raises(failures.Unavailable, match=message.removeprefix("call: ").split(" (")[0]):
        await create(s, job)
    # It may have made (and charged) a job: counted as sent, never repeated.
    assert len(script.requests) == 1 and job.calls == ["sent", "fault"] and job.net_sent == 1


@pytest.mark.parametrize(("answer", "message"), REFUSED)
async def test_a_create_that_never_reached_the_service_is_sent_again_after_a_pause(
        client: Any, answer: Any, message: str) -> None:
    s, script = service(client, answer, created)
    job = RecordingJob()
    assert await create(s, job) == {"job": 7}
    assert len(script.requests) == 2 and script.times[1] - script.times[0] >= 0.02
    assert job.calls == ["sent", "not_sent", "fault", "sent", "ok"] and job.net_sent == 1


async def test_a_create_refused_every_time_is_tried_three_times_with_growing_pauses(client: Any) -> None:
    s, script = service(client, httpx.ConnectError("refused"))
    job = RecordingJob()
    with pytest.raises(failures.Unavailable) as info:
        await create(s, job)
    assert not info.value.reached and len(script.requests) == CREATE_ATTEMPTS == 3
    gaps = [b - a for a, b in itertools.pairwise(script.times)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04
    assert job.calls == ["sent", "not_sent", "fault"] * 3 and job.net_sent == 0


@pytest.mark.parametrize("refuse", [failures.ServiceError, failures.InvalidKey, failures.Unsolvable])
async def test_a_create_the_service_refused_is_not_repeated_and_counts_as_an_answer(
        client: Any, refuse: type[failures.SolveFailure]) -> None:
    s, script = service(client, ok({"error": "no"}), created, refuse=refuse)
    job = RecordingJob()
    with pytest.raises(refuse):
        await create(s, job)
    assert len(script.requests) == 1 and job.calls == ["sent", "ok"]


async def test_a_refusal_that_says_no_job_was_made_undoes_the_count_but_is_not_repeated(client: Any) -> None:
    s, script = service(client, ok({"error": "malformed"}), created,
                        refuse=lambda m: failures.ServiceError(m, reached=False))
    job = RecordingJob()
    with pytest.raises(failures.ServiceError):
        await create(s, job)
    assert len(script.requests) == 1 and job.calls == ["sent", "not_sent", "ok"] and job.net_sent == 0


async def test_a_busy_refusal_that_made_no_job_is_repeated(client: Any) -> None:
    """A service's own code for "down for maintenance, nothing made" (omocaptcha v2's): as a refused connection."""
    s, script = service(client, ok({"error": "maintenance"}), created,
                        refuse=lambda m: failures.Unavailable(m, reached=False))
    job = RecordingJob()
    assert await create(s, job) == {"job": 7}
    assert len(script.requests) == 2 and job.calls == ["sent", "not_sent", "fault", "sent", "ok"]


# ------------------------------------------------------------------------------------------------ poll


def asks(*outcomes: Any) -> tuple[Callable[[], Any], list[float]]:
    """An `ask` for `poll`: each call gives the next outcome (None: not ready; an exception is raised)."""
    left = list(outcomes)
    times: list[float] = []

    async def ask() -> Any:
        times.append(asyncio.get_running_loop().time())
        outcome = left.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return ask, times


async def test_poll_waits_poll_s_before_each_ask_until_a_final_answer(client: Any) -> None:
    s, _ = service(client, created)
    job = RecordingJob(poll_s=0.03)
    ask, times = asks(None, None, "done")
    start = asyncio.get_running_loop().time()
    assert await s.poll(job, ask) == "done"
    assert len(times) == 3 and times[0] - start >= 0.03
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.03
    assert job.calls == ["ok", "ok", "ok"]


async def test_poll_rides_out_availability_faults_and_logs_them(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    s, _ = service(client, created)
    job = RecordingJob()
    fault = failures.Unavailable("result: HTTP 502")
    ask, _ = asks(*[fault] * 5, "done")
    assert await s.poll(job, ask) == "done"
    assert job.calls == ["fault"] * 5 + ["ok"]
    assert "captcha: polling paid-test failed (result: HTTP 502); asking again" in caplog.messages


@pytest.mark.parametrize("final", [failures.InvalidKey("result: key revoked"), failures.Unsolvable("result: fail")])
async def test_poll_ends_at_once_when_the_key_is_refused_or_the_job_failed(
        client: Any, final: failures.SolveFailure) -> None:
    s, _ = service(client, created)
    job = RecordingJob()
    ask, times = asks(None, final, "never")
    with pytest.raises(type(final)):
        await s.poll(job, ask)
    assert len(times) == 2 and job.calls == ["ok", "ok"]


async def test_poll_ends_after_three_answers_in_a_row_about_the_job(client: Any) -> None:
    s, _ = service(client, created)
    job = RecordingJob()
    odd = failures.ServiceError("result: no such job")
    # A usable answer in between starts the count again.
    ask, times = asks(odd, odd, None, odd, odd, odd, "never")
    with pytest.raises(failures.ServiceError, match="no such job"):
        await s.poll(job, ask)
    assert len(times) == 3 + POLL_FAULTS_FINAL and job.calls == ["ok"] * 6


async def test_poll_is_cancelled_by_the_deadline(client: Any) -> None:
    s, _ = service(client, created)
    ask, times = asks(*[None] * 1000)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await s.poll(RecordingJob(poll_s=0.01), ask)
    assert 3 <= len(times) < 1000


# ------------------------------------------------------------------------------------------------ free calls


@pytest.mark.parametrize(("answer", "message"), LOST + REFUSED)
async def test_a_free_call_that_fails_for_availability_charged_nothing(client: Any, answer: Any, message: str) -> None:
    s, _ = service(client, answer)
    with pytest.raises(failures.Unavailable) as info:
        await s.check()
    assert (info.value.message, info.value.reached) == (message.replace("call:", "balance:"), False)


async def test_a_free_call_passes_the_services_answers_through(client: Any) -> None:
    s, script = service(client, ok({"balance": 2.5}), ok({"error": "bad token"}), httpx.Response(403),
                        refuse=failures.InvalidKey)
    assert await s.check() == "2.5"
    with pytest.raises(failures.InvalidKey):
        await s.check()
    with pytest.raises(failures.ServiceError) as info:
        await s.check()
    assert not isinstance(info.value, failures.Unavailable) and info.value.reached
    assert [json.loads(r.content) for r in script.requests] == [{"key": KEY}] * 3


async def test_the_default_report_sends_nothing(client: Any) -> None:
    s, script = service(client, created)
    assert await s.report("7", True) is False and script.requests == []
    await s.close()
