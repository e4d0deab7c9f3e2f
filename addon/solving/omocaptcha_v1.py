"""omocaptcha's v1 job API (createJob, getJobResult, getBalance), as a solver behind the seam."""

from __future__ import annotations

import asyncio
import base64
import math
from dataclasses import dataclass
from typing import Any, assert_never

from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import Kind
from addon.option_rules import HTTP_URL, Option
from addon.solving import failures
from addon.solving.base import (
    Answer,
    BadPoints,
    Job,
    PointsAnswer,
    RotateAnswer,
    SlideAnswer,
    Solution,
    natural_width,
    object_image_size,
    view_size,
)
from addon.solving.paid import PaidHttpSolver, whole_images
from addon.solving.plugins import KeySpec, SolverSettings, SolverSpec

DEFAULT_URL = "https://omocaptcha.com/api"
TYPE_ROTATE_WEB = "23"
TYPE_SLIDE_WEB = "21"
TYPE_3D_WEB = "22"
SERVICE = "omocaptcha-v1"
KEY = KeySpec("omocaptcha_key", "OMOCAPTCHA_KEY", "omocaptcha_key_file")
"""The key omocaptcha's v1 and v2 share; its two options are the addon's table's (`addon/mitm/option_table.py`)."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: str
    """`running` (not final yet, whatever the service called it), `success` or `fail`."""
    result: str | None


class OmocaptchaV1Solver(PaidHttpSolver):
    """createJob once (retried only when it provably never reached the service), then getJobResult until final."""

    name = SERVICE
    kinds = frozenset({Kind.ROTATE, Kind.SLIDE, Kind.THREE_D})
    """v1 has no job for icon."""

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        type_job_id, payload, sizes = await asyncio.to_thread(job_payload, challenge, job.width_view)
        job_id = await self.create(job, lambda: self.create_job(type_job_id, payload, sizes))
        job.started(job_id)
        status = await self.poll(job, lambda: self._final(job_id))
        if status.state == "fail" or status.result is None:
            raise failures.Unsolvable("omocaptcha could not solve this challenge" if status.state == "fail"
                                      else "omocaptcha reported success without a result")
        return Solution(status.result, answer_of(challenge, status.result, job.width_view))

    async def check(self) -> str | None:
        return await self.balance()

    def refusal(self, call: str, doc: dict[str, Any]) -> failures.SolveFailure | None:
        if doc.get("error") is not True:
            return None
        message = doc.get("message")
        text = self.redact(message)[:200] if isinstance(message, str) else "error without a message"
        if "token" in text.lower() or "key" in text.lower():
            return failures.InvalidKey(f"{call}: {text}")
        return failures.ServiceError(f"{call}: {text}")

    async def _call(self, call: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.post(call, {"api_token": self._key, **payload})

    async def create_job(self, type_job_id: str, image_base64: str, sizes: dict[str, int] | None = None) -> int:
        """`sizes`: `width_view` (21, 22) and `height_view` (22), the pixels the page shows the image in."""
        data: dict[str, Any] = {"type_job_id": type_job_id, "image_base64": image_base64, **(sizes or {})}
        doc = await self._call("createJob", {"data": data})
        job_id = doc.get("job_id")
        if isinstance(job_id, str) and job_id.isdigit():
            job_id = int(job_id)
        if doc.get("error") is not False or not isinstance(job_id, int) or isinstance(job_id, bool):
            keys = ", ".join(sorted(self.redact(str(k))[:40] for k in doc)[:8])
            raise failures.ServiceError(f"createJob: unexpected answer with fields {keys}")
        return job_id

    async def job_result(self, job_id: int) -> JobStatus:
        doc = await self._call("getJobResult", {"job_id": job_id})
        status = doc.get("status")
        result = doc.get("result")
        result = str(result) if isinstance(result, str | int | float) and not isinstance(result, bool) else None
        if status == "success":
            return JobStatus("success", result or None)
        if status == "fail":
            return JobStatus("fail", None)
        return JobStatus("running", None)

    async def _final(self, job_id: int) -> JobStatus | None:
        status = await self.job_result(job_id)
        return None if status.state == "running" else status

    async def balance(self) -> str:
        doc = await self.free_call("getBalance", {"api_token": self._key})
        balance = doc.get("balance")
        return str(balance) if isinstance(balance, str | int | float) else "unknown"


def _build(settings: SolverSettings) -> OmocaptchaV1Solver:
    return OmocaptchaV1Solver(settings.values["omocaptcha_url"].strip(), settings.key, settings.http)


SPEC = SolverSpec(
    SERVICE, paid=True, kinds=OmocaptchaV1Solver.kinds, build=_build, aliases=("omocaptcha",), key=KEY,
    auto=True,
    options=(
        Option(
            'omocaptcha_url', str, DEFAULT_URL, 'solving',
            help="Base URL of omocaptcha's v1 job API.",
            rule=HTTP_URL,
            doc='base URL of the v1 job API, with or without a trailing `/`',
        ),
    ),
)


def job_payload(c: Captured, width_view: int) -> tuple[str, str, dict[str, int]]:
    """Checks the images are whole (a truncated body fails here as BadImage, not at the service) and builds the
    job: (type_job_id, image_base64, the view sizes the job type wants)."""
    parts = whole_images(c)
    match c.kind:
        case Kind.ROTATE:
            return TYPE_ROTATE_WEB, b64(parts[Role.INNER].body) + "|" + b64(parts[Role.OUTER].body), {}
        case Kind.SLIDE:
            return TYPE_SLIDE_WEB, b64(parts[Role.BACKGROUND].body), {"width_view": width_view}
        case Kind.THREE_D:
            view_width, view_height = view_size(c, width_view)
            return TYPE_3D_WEB, b64(parts[Role.IMAGE].body), {"width_view": view_width, "height_view": view_height}
        case Kind.ICON:
            raise failures.NoSolver("omocaptcha v1 has no job for icon challenges")
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
        raise failures.ServiceError("omocaptcha's result is not a number")
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
                raise failures.ServiceError(f"omocaptcha's result {result[:80]!r} is not x|y pairs")
            view_width, view_height = view_size(c, width_view)
            try:
                return PointsAnswer.from_view(list(zip(numbers[::2], numbers[1::2], strict=True)),
                                              object_image_size(c), view_width, view_height)
            except BadPoints as e:
                raise failures.ServiceError(f"omocaptcha's result {result[:80]!r}: {e}") from None
        case _:
            assert_never(c.kind)
