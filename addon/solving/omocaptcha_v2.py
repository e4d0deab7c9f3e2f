"""omocaptcha's v2 task API (createTask, getTaskResult, getBalance, report), as a solver behind the seam.

The shapes are in `../shared/omocaptcha-api.md` (v2). Its rotate answer is a ratio r: the handle's target is
(track - handle) * (1 - r) from the start, so the share of the slider's travel is 1 - r. Its slide answer
`end.x` is in pixels of `widthView`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any, assert_never

from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import Kind
from addon.option_rules import HTTP_URL, Option
from addon.solving import failures
from addon.solving.base import (
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
from addon.solving.omocaptcha_v1 import KEY
from addon.solving.paid import PaidHttpSolver, whole_images
from addon.solving.plugins import SolverSettings, SolverSpec

DEFAULT_URL = "https://api.omocaptcha.com/v2"
SERVICE = "omocaptcha-v2"
TASK_ROTATE_WEB = "TiktokRotateWebTask"
TASK_SLIDE_WEB = "TiktokSliderWebTask"
TASK_3D_WEB = "Tiktok3DSelectObjectWebTask"
TASK_ICON_WEB = "TiktokSelectObjectWebTask"
JOB_FAILED = "ERROR_JOB_STATUS"
TEMPORARY_CODES = frozenset(
    {"ERROR_TASK_IS_MAINTENANCE", "ERROR_SERVICE_UNAVAILABLE", "ERROR_REDIS_UNAVAILABLE", "ERROR_REDIS_JOB_DATA"}
)
"""Error codes public clients retry: availability faults."""
NOT_CREATED_CODES = frozenset({"ERROR_TASK_IS_MAINTENANCE", "ERROR_SERVICE_UNAVAILABLE"})
"""Temporary codes that say the service turned the request away before making a task, so a createTask answered
with one is safe to send again. The two Redis codes come from storing or reading the job's data, which may happen
after the task was made and charged: a createTask answered with those is never repeated."""


class OmocaptchaV2Solver(PaidHttpSolver):
    """createTask once (repeated only when it provably never made a task), then getTaskResult until final."""

    name = SERVICE
    kinds = frozenset({Kind.ROTATE, Kind.SLIDE, Kind.THREE_D, Kind.ICON})

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        task = await asyncio.to_thread(task_of, challenge, job.width_view)
        task_id = await self.create(job, lambda: self._create_task(task))
        job.started(task_id)
        doc = await self.poll(job, lambda: self._final(task_id))
        if doc.get("status") == "fail":
            raise failures.Unsolvable(f"{SERVICE} could not solve this challenge")
        return solution_of(challenge, doc.get("solution"), job.width_view)

    async def check(self) -> str | None:
        """getBalance: the balance as the service wrote it (a number, USD), None when the answer has none."""
        doc = await self.free_call("getBalance", {"clientKey": self._key})
        balance = doc.get("balance")
        if isinstance(balance, bool) or not isinstance(balance, int | float | str):
            return None
        return str(balance)

    async def report(self, job_id: str, accepted: bool) -> bool:
        """Tells the service whether the site accepted a task's answer (the undocumented `report` call the vendor's
        extension makes). Best effort: True when the service took it, False otherwise; never raises."""
        try:
            await self._call("report", {"id": [job_id], "isSuccess": accepted})
        except failures.SolveFailure as f:
            self._errors.warning("report", f"captcha: reporting to {SERVICE} failed ({f.message})")
            return False
        except Exception as e:
            self._errors.warning("report", f"captcha: reporting to {SERVICE} failed ({type(e).__name__})")
            return False
        return True

    # ------------------------------------------------------------------------------------------------ calls

    async def _call(self, call: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One call; a JSON object with errorId 0, or a failure. `reached` False means provably no task was made
        (refused, 429, or a code in NOT_CREATED_CODES)."""
        return await self.post(call, {"clientKey": self._key, **payload})

    async def _create_task(self, task: dict[str, Any]) -> str:
        doc = await self._call("createTask", {"task": task})
        task_id = doc.get("taskId")
        if not isinstance(task_id, str) or not task_id:
            fields = ", ".join(sorted(self.redact(str(k))[:40] for k in doc)[:8])
            raise failures.ServiceError(f"createTask: unexpected answer with fields {fields}")
        return task_id

    async def _final(self, task_id: str) -> dict[str, Any] | None:
        """The task's answer once final (`ready` or `fail`); None for "processing" or a status this client does not
        know: not final yet, the scheduler's deadline decides."""
        doc = await self._call("getTaskResult", {"taskId": task_id})
        return doc if doc.get("status") in ("ready", "fail") else None

    def refusal(self, call: str, doc: dict[str, Any]) -> failures.SolveFailure | None:
        if doc.get("errorId") in (0, None):
            return None
        code = doc.get("errorCode")
        code = self.redact(code)[:80] if isinstance(code, str) else ""
        description = doc.get("errorDescription")
        description = self.redact(description)[:200] if isinstance(description, str) else ""
        text = f"{call}: {code or 'error ' + self.redact(str(doc.get('errorId')))[:20]}"
        text += f" ({description})" if description else ""
        if code == JOB_FAILED or doc.get("status") == "fail":
            return failures.Unsolvable(f"{SERVICE} could not solve this challenge ({text})")
        if code in TEMPORARY_CODES:
            return failures.Unavailable(text, reached=code not in NOT_CREATED_CODES)
        if "KEY" in code.upper():
            return failures.InvalidKey(text)
        return failures.ServiceError(text)


def _build(settings: SolverSettings) -> OmocaptchaV2Solver:
    return OmocaptchaV2Solver(settings.values["omocaptcha_v2_url"].strip(), settings.key, settings.http)


SPEC = SolverSpec(
    SERVICE, paid=True, kinds=OmocaptchaV2Solver.kinds, build=_build, key=KEY,
    options=(
        Option(
            'omocaptcha_v2_url', str, DEFAULT_URL, 'solving',
            help="Base URL of omocaptcha's v2 task API.",
            rule=HTTP_URL,
            doc='base URL of the v2 task API',
        ),
    ),
)


# ---------------------------------------------------------------------------------------------------- payloads


def task_of(c: Captured, width_view: int) -> dict[str, Any]:
    """Checks the images are whole (a truncated body fails here as BadImage, not at the service) and builds the
    task."""
    parts = whole_images(c)
    match c.kind:
        case Kind.ROTATE:
            pair = [_b64(parts[Role.INNER].body), _b64(parts[Role.OUTER].body)]
            return {"type": TASK_ROTATE_WEB, "imageBase64s": pair}
        case Kind.SLIDE:
            return {"type": TASK_SLIDE_WEB, "imageBase64": _b64(parts[Role.BACKGROUND].body), "widthView": width_view}
        case Kind.THREE_D | Kind.ICON:
            view_width, view_height = view_size(c, width_view)
            task: dict[str, Any] = {"type": TASK_3D_WEB if c.kind is Kind.THREE_D else TASK_ICON_WEB,
                                    "imageBase64": _b64(parts[Role.IMAGE].body), "widthView": view_width,
                                    "heightView": view_height}
            if c.kind is Kind.ICON:
                if not c.question:
                    raise failures.NoQuestion("icon challenge without its prompt: the traffic did not carry a "
                                              "usable one (none, or over 500 characters)")
                task["question"] = c.question
            return task
        case _:
            assert_never(c.kind)


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def solution_of(c: Captured, solution: Any, width_view: int) -> Solution:
    """A ready task's `solution` as a Solution; its raw JSON (compact) is kept as the result."""
    if not isinstance(solution, dict) or not solution:
        raise failures.Unsolvable(f"{SERVICE} reported the task ready without a solution")
    raw = json.dumps(solution, separators=(",", ":"))
    match c.kind:
        case Kind.ROTATE:
            r = _number(solution.get("rotate"))
            if r is None:
                raise failures.ServiceError(f"{SERVICE}'s solution has no numeric rotate: {raw[:200]}")
            return Solution(raw, RotateAnswer.from_fraction(1.0 - r))
        case Kind.SLIDE:
            end = solution.get("end")
            x = _number(end.get("x")) if isinstance(end, dict) else None
            if x is None:
                raise failures.ServiceError(f"{SERVICE}'s solution has no numeric end.x: {raw[:200]}")
            return Solution(raw, SlideAnswer.from_view(x, natural_width(c), width_view))
        case Kind.THREE_D | Kind.ICON:
            points = []
            for name in ("pointA", "pointB"):
                point = solution.get(name)
                x = _number(point.get("x")) if isinstance(point, dict) else None
                y = _number(point.get("y")) if isinstance(point, dict) else None
                if x is None or y is None:
                    raise failures.ServiceError(f"{SERVICE}'s solution has no numeric {name}: {raw[:200]}")
                points.append((x, y))
            view_width, view_height = view_size(c, width_view)
            try:
                return Solution(raw, PointsAnswer.from_view(points, object_image_size(c), view_width, view_height))
            except BadPoints as e:
                raise failures.ServiceError(f"{SERVICE}'s solution {raw[:200]}: {e}") from None
        case _:
            assert_never(c.kind)
