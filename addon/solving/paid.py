"""What every paid HTTP captcha service needs, once: a JSON call with httpx's errors mapped to failures, the
create-at-most-once retry, the poll loop, the free check, and the health it reports to the job.

A service module (omocaptcha_v1, omocaptcha_v2) subclasses `PaidHttpSolver` and keeps only its payloads, how it
reads results and what its error codes mean (`refusal`).

`reached` on a failure: the request may have reached the service (so a job may have been made and charged).
`Unavailable`: an availability fault (refused, timed out, 429, 5xx, not JSON), which the breaker counts; any other
failure means the service answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from addon import kinds
from addon.capture import images
from addon.capture.assemble import Captured, ImagePart
from addon.kinds import Kind, Role
from addon.ratelimit import RateLimitedLog
from addon.solving import failures
from addon.solving.base import Job
from addon.solving.failures import InvalidKey, ServiceError, SolveFailure, Unavailable, Unsolvable

logger = logging.getLogger(__name__)

CREATE_ATTEMPTS = 3
CREATE_BACKOFF = (1.0, 2.0)
"""Seconds before the second and the third create attempt."""
POLL_FAULTS_FINAL = 3
"""Answers about the job itself (not availability faults) that end the poll loop."""

T = TypeVar("T")


class PaidHttpSolver:
    """The common part of a paid service's solver; `name` and `kinds` are the subclass's."""

    name: str
    paid = True
    kinds: frozenset[Kind]

    def __init__(self, base_url: str, key: str, http: httpx.AsyncClient):
        self.base_url = base_url.rstrip("/") + "/"
        self._key = key
        self._http = http
        self.create_backoff: tuple[float, ...] = CREATE_BACKOFF
        self._errors = RateLimitedLog(logger)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.redact(self.base_url)!r}, key='***')"

    async def close(self) -> None:
        """Nothing to close: the HTTP client is shared and owned by the solving addon."""

    async def report(self, job_id: str, accepted: bool) -> bool:
        """Tells the service whether the site accepted a job's answer: True when it took the report. Best effort,
        never raises; a service without a report call keeps this default (False, nothing sent)."""
        return False

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    # --------------------------------------------------------------------------------------------- one call

    def refusal(self, call: str, doc: dict[str, Any]) -> SolveFailure | None:
        """The service's own error in a 200 JSON answer, or None when the answer is no error."""
        return None

    async def post(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` as JSON to `call` under the base URL; the answer's JSON object, or a ServiceError
        (Unavailable for availability faults), or the service's own refusal."""
        content = json.dumps(body).encode()
        try:
            response = await self._http.post(
                self.base_url + call, content=content, headers={"Content-Type": "application/json"}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise Unavailable(f"{call}: cannot connect ({type(e).__name__})", reached=False) from None
        except httpx.TimeoutException as e:
            raise Unavailable(f"{call}: no answer in time ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise Unavailable(f"{call}: {type(e).__name__}: {self.redact(str(e))[:200]}") from None
        if response.status_code == 429:
            raise Unavailable(f"{call}: HTTP 429 (busy)", reached=False)
        if response.status_code >= 500:
            raise Unavailable(f"{call}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise ServiceError(f"{call}: HTTP {response.status_code}")
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise Unavailable(f"{call}: answer is not JSON") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"{call}: answer is not a JSON object")
        failure = self.refusal(call, doc)
        if failure is not None:
            raise failure
        return doc

    # --------------------------------------------------------------------------------------------- a job's life

    async def create(self, job: Job, send: Callable[[], Awaitable[T]]) -> T:
        """Makes the job once: `send` is repeated (up to CREATE_ATTEMPTS times, with backoff, until the scheduler's
        deadline cancels it) only when it provably never reached the service: another could charge twice."""
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            job.job_sent()
            try:
                made = await send()
            except SolveFailure as f:
                if not f.reached:
                    job.job_not_sent()
                if isinstance(f, Unavailable):
                    job.service_fault(f)
                else:
                    job.service_ok()  # the service answered, if only to refuse
                if f.reached or not isinstance(f, Unavailable) or attempt == CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(self.create_backoff[min(attempt, len(self.create_backoff)) - 1])
                continue
            job.service_ok()
            return made
        raise AssertionError("unreachable")

    async def poll(self, job: Job, ask: Callable[[], Awaitable[T | None]]) -> T:
        """Asks for the result every `job.poll_s` until `ask` gives a final one (None: not ready yet). Availability
        faults are ridden out until the scheduler's deadline; the service's answers about the job end the loop after
        POLL_FAULTS_FINAL in a row, at once for InvalidKey and Unsolvable."""
        poll_faults = 0
        while True:
            await asyncio.sleep(job.poll_s)
            try:
                final = await ask()
            except Unavailable as f:
                job.service_fault(f)
                self._errors.warning("poll", f"captcha: polling {self.name} failed ({f.message}); asking again")
                continue
            except SolveFailure as f:
                job.service_ok()
                if isinstance(f, InvalidKey | Unsolvable):
                    raise
                poll_faults += 1
                if poll_faults >= POLL_FAULTS_FINAL:
                    raise
                continue
            job.service_ok()
            poll_faults = 0
            if final is not None:
                return final

    async def free_call(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call that costs nothing (a balance): a transient fault of it never charged anything (reached=False)."""
        try:
            return await self.post(call, body)
        except Unavailable as f:
            raise Unavailable(f.message, reached=False) from None


def whole_images(c: Captured) -> dict[Role, ImagePart]:
    """The images the challenge's kind needs, each checked whole before a job is paid for (an object picture is
    also decoded: call it off the event loop); a missing or cut one raises BadImage."""
    spec = kinds.spec(c.kind)
    found = {role: c.images.get(role) for role in spec.needs}
    missing = sorted(role.value for role, part in found.items() if part is None)
    if missing:
        raise failures.BadImage(f"{c.kind} challenge without its {' and '.join(missing)} image")
    with failures.image_checks():
        for part in found.values():
            assert part is not None
            if spec.answer == "points":
                images.check_object_image(part.body, part.info)
            else:
                images.check_complete(part.body, part.info)
    return {role: part for role, part in found.items() if part is not None}
