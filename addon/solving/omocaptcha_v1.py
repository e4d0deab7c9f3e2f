"""omocaptcha's v1 job API (createJob, getJobResult, getBalance), as a solver behind the seam."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from dataclasses import dataclass
from typing import Any, assert_never

import httpx

from addon.capture import images
from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import Kind
from addon.solving.base import (
    Answer,
    BadPoints,
    Job,
    PointsAnswer,
    RotateAnswer,
    SlideAnswer,
    Solution,
    SolveFailure,
    natural_width,
    object_image_size,
    view_size,
)

DEFAULT_URL = "https://omocaptcha.com/api"
TYPE_ROTATE_WEB = "23"
TYPE_SLIDE_WEB = "21"
TYPE_3D_WEB = "22"
SERVICE = "omocaptcha-v1"
CREATE_ATTEMPTS = 3
POLL_FAULTS_FINAL = 3
"""Answers about the job itself (not availability faults) that end the poll loop."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: str
    """`running` (not final yet, whatever the service called it), `success` or `fail`."""
    result: str | None


class OmocaptchaClient:
    def __init__(self, base_url: str, key: str, http: httpx.AsyncClient):
        self.base_url = base_url.rstrip("/") + "/"
        self._key = key
        self._http = http

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def _post(self, call: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"api_token": self._key, **payload}).encode()
        try:
            response = await self._http.post(
                self.base_url + call, content=body, headers={"Content-Type": "application/json"}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise SolveFailure("api_error", f"{call}: cannot connect ({type(e).__name__})",
                               reached=False, transient=True) from None
        except httpx.TimeoutException as e:
            raise SolveFailure("api_error", f"{call}: no answer in time ({type(e).__name__})",
                               reached=True, transient=True) from None
        except httpx.HTTPError as e:
            raise SolveFailure("api_error", f"{call}: {type(e).__name__}: {self._redact(str(e))[:200]}",
                               reached=True, transient=True) from None
        if response.status_code == 429:
            raise SolveFailure("api_error", f"{call}: HTTP 429 (busy)", reached=False, transient=True)
        if response.status_code != 200:
            raise SolveFailure("api_error", f"{call}: HTTP {response.status_code}",
                               reached=True, transient=response.status_code >= 500)
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise SolveFailure("api_error", f"{call}: answer is not JSON", reached=True, transient=True) from None
        if not isinstance(doc, dict):
            raise SolveFailure("api_error", f"{call}: answer is not a JSON object", reached=True, transient=True)
        if doc.get("error") is True:
            message = doc.get("message")
            text = self._redact(message)[:200] if isinstance(message, str) else "error without a message"
            if "token" in text.lower() or "key" in text.lower():
                raise SolveFailure("invalid_key", f"{call}: {text}", reached=True, transient=False)
            raise SolveFailure("api_error", f"{call}: {text}", reached=True, transient=False)
        return doc

    async def create_job(self, type_job_id: str, image_base64: str, sizes: dict[str, int] | None = None) -> int:
        """`sizes`: `width_view` (21, 22) and `height_view` (22), the pixels the page shows the image in."""
        data: dict[str, Any] = {"type_job_id": type_job_id, "image_base64": image_base64, **(sizes or {})}
        doc = await self._post("createJob", {"data": data})
        job_id = doc.get("job_id")
        if isinstance(job_id, str) and job_id.isdigit():
            job_id = int(job_id)
        if doc.get("error") is not False or not isinstance(job_id, int) or isinstance(job_id, bool):
            keys = ", ".join(sorted(str(k) for k in doc)[:8])
            raise SolveFailure("api_error", f"createJob: unexpected answer with fields {keys}",
                               reached=True, transient=False)
        return job_id

    async def job_result(self, job_id: int) -> JobStatus:
        doc = await self._post("getJobResult", {"job_id": job_id})
        status = doc.get("status")
        result = doc.get("result")
        result = str(result) if isinstance(result, str | int | float) and not isinstance(result, bool) else None
        if status == "success":
            return JobStatus("success", result or None)
        if status == "fail":
            return JobStatus("fail", None)
        return JobStatus("running", None)

    async def balance(self) -> str:
        doc = await self._post("getBalance", {})
        balance = doc.get("balance")
        return str(balance) if isinstance(balance, str | int | float) else "unknown"


class OmocaptchaV1Solver:
    """createJob once (retried only when it provably never reached the service), then getJobResult until final."""

    name = SERVICE
    paid = True
    kinds = frozenset({Kind.ROTATE, Kind.SLIDE, Kind.THREE_D})
    """v1 has no job for icon."""

    def __init__(self, base_url: str, key: str, http: httpx.AsyncClient):
        self.client = OmocaptchaClient(base_url, key, http)

    async def check(self) -> str | None:
        return await self.client.balance()

    async def close(self) -> None:
        pass

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        type_job_id, payload, sizes = await asyncio.to_thread(job_payload, challenge, job.width_view)
        job_id = await self._create(job, type_job_id, payload, sizes)
        job.started(job_id)
        poll_faults = 0
        while True:
            await asyncio.sleep(job.poll_s)
            try:
                status = await self.client.job_result(job_id)
            except SolveFailure as f:
                if f.reason == "invalid_key":
                    raise
                if f.transient:
                    job.service_fault(f)
                else:
                    poll_faults += 1
                    if poll_faults >= POLL_FAULTS_FINAL:
                        raise
                continue
            job.service_ok()
            poll_faults = 0
            if status.state == "running":
                continue
            if status.state == "fail" or status.result is None:
                raise SolveFailure("unsolvable", "omocaptcha could not solve this challenge" if status.state == "fail"
                                   else "omocaptcha reported success without a result")
            return Solution(status.result, answer_of(challenge, status.result, job.width_view))

    async def _create(self, job: Job, type_job_id: str, payload: str, sizes: dict[str, int]) -> int:
        backoff = 1.0
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                job.job_sent()
                job_id = await self.client.create_job(type_job_id, payload, sizes)
            except SolveFailure as f:
                if not f.reached:
                    job.job_not_sent()
                if f.transient:
                    job.service_fault(f)
                # Only a request that provably never reached the service is safe to repeat: another could charge twice.
                if f.reached or not f.transient or attempt == CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(backoff)
                backoff *= 2
                continue
            job.service_ok()
            return job_id
        raise AssertionError("unreachable")


def job_payload(c: Captured, width_view: int) -> tuple[str, str, dict[str, int]]:
    """Checks the images are whole (a truncated body fails here, not at the service) and builds the job:
    (type_job_id, image_base64, the view sizes the job type wants)."""
    match c.kind:
        case Kind.ROTATE:
            inner, outer = c.images.get(Role.INNER), c.images.get(Role.OUTER)
            if inner is None or outer is None:
                raise images.BadImage("rotate challenge without both inner and outer images")
            images.check_complete(inner.body, inner.info)
            images.check_complete(outer.body, outer.info)
            return TYPE_ROTATE_WEB, b64(inner.body) + "|" + b64(outer.body), {}
        case Kind.SLIDE:
            background = c.images.get(Role.BACKGROUND)
            if background is None:
                raise images.BadImage("slide challenge without its background image")
            images.check_complete(background.body, background.info)
            return TYPE_SLIDE_WEB, b64(background.body), {"width_view": width_view}
        case Kind.THREE_D:
            image = c.images.get(Role.IMAGE)
            if image is None:
                raise images.BadImage("3d challenge without its image")
            images.check_object_image(image.body, image.info)
            view_width, view_height = view_size(c, width_view)
            return TYPE_3D_WEB, b64(image.body), {"width_view": view_width, "height_view": view_height}
        case Kind.ICON:
            raise SolveFailure("no_solver", "omocaptcha v1 has no job for icon challenges", reached=False)
        case _:
            assert_never(c.kind)


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise SolveFailure("api_error", "omocaptcha's result is not a number")
    return value


def answer_of(c: Captured, result: str, width_view: int) -> Answer:
    match c.kind:
        case Kind.ROTATE:
            return RotateAnswer.from_value(_float(result))
        case Kind.SLIDE:
            return SlideAnswer.from_view(_float(result), natural_width(c), width_view)
        case Kind.THREE_D | Kind.ICON:
            # "x1|y1|x2|y2" in pixels of the image shown width_view x height_view.
            numbers = [_float(part) for part in result.split("|")] if result.strip() else []
            if len(numbers) % 2:
                raise SolveFailure("api_error", f"omocaptcha's result {result[:80]!r} is not x|y pairs")
            view_width, view_height = view_size(c, width_view)
            try:
                return PointsAnswer.from_view(list(zip(numbers[::2], numbers[1::2], strict=True)),
                                              object_image_size(c), view_width, view_height)
            except BadPoints as e:
                raise SolveFailure("api_error", f"omocaptcha's result {result[:80]!r}: {e}") from None
        case _:
            assert_never(c.kind)
