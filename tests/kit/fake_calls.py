"""Calls to the fake omocaptcha service in either of its APIs, for the fake's own tests.

`V1` and `V2` say how the job API and the task API spell the same request and the same answer, so that a rule
both APIs share is one test, run for each.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.kit.fake_omocaptcha import TASK_ROTATE, TASK_SLIDE
from tests.kit.synth import Manifest

KEY = "key-one"
KEY2 = "key-two"
JSON = {"content-type": "application/json"}


def b64(kit: Manifest, mode: str, n: int, role: str) -> str:
    """One image of the kit's `n`th challenge of `mode`, as the base64 a client sends."""
    challenge = [c for c in kit.challenges if c.mode == mode][n]
    return base64.b64encode(kit.file(challenge.images[role]).read_bytes()).decode()


@dataclass(frozen=True, repr=False)
class Api:
    """One API of the fake: its endpoint names (as fault tables, stats and the log name them) and its shapes."""

    name: str
    create: str
    result: str
    balance: str
    other: str  # getService in v1, report in v2
    key_field: str
    id_field: str
    bad_key: dict[str, Any]
    not_found: dict[str, Any]
    running: dict[str, Any]
    failed: dict[str, Any]
    final_status: str  # a solved job's status in the stats

    def __repr__(self) -> str:
        return f"Api({self.name})"

    @property
    def endpoints(self) -> tuple[str, str, str, str]:
        return self.create, self.result, self.balance, self.other

    def path(self, endpoint: str) -> str:
        return "/" + endpoint if self is V2 else "/api/" + endpoint

    def keyed(self, key: str = KEY, **fields: Any) -> dict[str, Any]:
        return {self.key_field: key, **fields}

    def refusal(self, description: str, code: str) -> dict[str, Any]:
        """The error answer: v1 has only its text, v2 its code and the text."""
        if self is V1:
            return {"error": True, "message": description}
        return {"errorId": 1, "errorCode": code, "errorDescription": description}

    def rotate(self, inner: str, outer: str, key: str = KEY) -> dict[str, Any]:
        if self is V1:
            return self.keyed(key, data={"type_job_id": "23", "image_base64": inner + "|" + outer})
        return self.keyed(key, task={"type": TASK_ROTATE, "imageBase64s": [inner, outer]})

    def slide(self, background: str, width_view: Any = 340, key: str = KEY) -> dict[str, Any]:
        if self is V1:
            return self.keyed(key, data={"type_job_id": "21", "image_base64": background, "width_view": width_view})
        return self.keyed(key, task={"type": TASK_SLIDE, "imageBase64": background, "widthView": width_view})

    def whirl(self, kit: Manifest, n: int = 0, key: str = KEY) -> dict[str, Any]:
        return self.rotate(b64(kit, "whirl", n, "inner"), b64(kit, "whirl", n, "outer"), key)

    def poll(self, job_id: Any, key: str = KEY) -> dict[str, Any]:
        return self.keyed(key, **{self.id_field: job_id})

    def job_id(self, answer: dict[str, Any]) -> Any:
        """The id of a created job, the answer checked field for field."""
        job_id = answer.get(self.id_field)
        if self is V1:
            assert answer == {"error": False, "job_id": job_id, "message": "Create job success."}, answer
            assert type(job_id) is int
        else:
            assert answer == {"errorId": 0, "taskId": job_id}, answer
            assert str(uuid.UUID(job_id)) == job_id
        return job_id

    def solved(self, answer: dict[str, Any]) -> bool:
        if self is V1:
            return answer.get("error") is False and answer.get("status") == "success"
        return answer.get("errorId") == 0 and answer.get("status") == "ready"

    def new(self, client: httpx.Client, body: dict[str, Any]) -> Any:
        r = client.post(self.path(self.create), json=body)
        assert r.status_code == 200, r.text
        return self.job_id(r.json())

    def ask(self, client: httpx.Client, job_id: Any, key: str = KEY) -> dict[str, Any]:
        r = client.post(self.path(self.result), json=self.poll(job_id, key))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        out: dict[str, Any] = r.json()
        return out

    def jobs(self, stats: dict[str, Any]) -> dict[str, int]:
        """This API's job counts in the fake's stats (v1: created/running/succeeded/failed, v2: its own words)."""
        out: dict[str, int] = stats["jobs"] if self is V1 else stats["v2"]["tasks"]
        return out

    def polls(self, stats: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = stats["polls"] if self is V1 else stats["v2"]["polls"]
        return out

    def per_job(self, stats: dict[str, Any], job_id: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.polls(stats)["per_job" if self is V1 else "per_task"][str(job_id)]
        return out


V1 = Api(
    name="v1",
    create="createJob",
    result="getJobResult",
    balance="getBalance",
    other="getService",
    key_field="api_token",
    id_field="job_id",
    bad_key={"error": True, "message": "Invalid api token."},
    not_found={"error": True, "message": "Job not found."},
    running={"error": False, "status": "running", "result": None},
    failed={"error": False, "status": "fail", "result": None},
    final_status="success",
)
V2 = Api(
    name="v2",
    create="v2/createTask",
    result="v2/getTaskResult",
    balance="v2/getBalance",
    other="v2/report",
    key_field="clientKey",
    id_field="taskId",
    bad_key={
        "errorId": 1,
        "errorCode": "ERROR_KEY_DOES_NOT_EXIST",
        "errorDescription": "Account authorization key not found in the system.",
    },
    not_found={"errorId": 1, "errorCode": "ERROR_TASK_NOT_FOUND", "errorDescription": "Task not found."},
    running={"errorId": 0, "status": "processing"},
    failed={
        "errorId": 1,
        "errorCode": "ERROR_JOB_STATUS",
        "errorDescription": "Job failed",
        "status": "fail",
        "solution": {},
    },
    final_status="ready",
)
