"""Async client of omocaptcha's v1 job API (createJob, getJobResult, getBalance)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "https://omocaptcha.com/api"
TYPE_ROTATE_WEB = "23"
TYPE_SLIDE_WEB = "21"
SERVICE = "omocaptcha-v1"


class ServiceFailure(Exception):
    """A call did not give a usable answer.

    `reached` says whether the request may have reached the service (so a createJob may have been charged);
    `transient` whether the fault is one of availability (refused, timed out, 5xx, 429, garbage) rather than an
    answer about the job or the key.
    """

    def __init__(self, reason: str, message: str, *, reached: bool, transient: bool):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.reached = reached
        self.transient = transient


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
            raise ServiceFailure("api_error", f"{call}: cannot connect ({type(e).__name__})",
                                 reached=False, transient=True) from None
        except httpx.TimeoutException as e:
            raise ServiceFailure("api_error", f"{call}: no answer in time ({type(e).__name__})",
                                 reached=True, transient=True) from None
        except httpx.HTTPError as e:
            raise ServiceFailure("api_error", f"{call}: {type(e).__name__}: {self._redact(str(e))[:200]}",
                                 reached=True, transient=True) from None
        if response.status_code == 429:
            raise ServiceFailure("api_error", f"{call}: HTTP 429 (busy)", reached=False, transient=True)
        if response.status_code != 200:
            raise ServiceFailure("api_error", f"{call}: HTTP {response.status_code}",
                                 reached=True, transient=response.status_code >= 500)
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise ServiceFailure("api_error", f"{call}: answer is not JSON", reached=True, transient=True) from None
        if not isinstance(doc, dict):
            raise ServiceFailure("api_error", f"{call}: answer is not a JSON object", reached=True, transient=True)
        if doc.get("error") is True:
            message = doc.get("message")
            text = self._redact(message)[:200] if isinstance(message, str) else "error without a message"
            if "token" in text.lower() or "key" in text.lower():
                raise ServiceFailure("invalid_key", f"{call}: {text}", reached=True, transient=False)
            raise ServiceFailure("api_error", f"{call}: {text}", reached=True, transient=False)
        return doc

    async def create_job(self, type_job_id: str, image_base64: str, width_view: int | None = None) -> int:
        data: dict[str, Any] = {"type_job_id": type_job_id, "image_base64": image_base64}
        if width_view is not None:
            data["width_view"] = width_view
        doc = await self._post("createJob", {"data": data})
        job_id = doc.get("job_id")
        if isinstance(job_id, str) and job_id.isdigit():
            job_id = int(job_id)
        if doc.get("error") is not False or not isinstance(job_id, int) or isinstance(job_id, bool):
            keys = ", ".join(sorted(str(k) for k in doc)[:8])
            raise ServiceFailure("api_error", f"createJob: unexpected answer with fields {keys}",
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
