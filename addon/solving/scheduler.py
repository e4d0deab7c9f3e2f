"""One async job per captured challenge against omocaptcha: bounded, deadlined, and always ending in one final event."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from addon.capture import images
from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.capture.recognise import Kind
from addon.publish.events import Event, EventLog
from addon.ratelimit import RateLimitedLog
from addon.solving.omocaptcha_v1 import SERVICE, TYPE_ROTATE_WEB, TYPE_SLIDE_WEB, OmocaptchaClient, ServiceFailure

logger = logging.getLogger(__name__)

BREAKER_THRESHOLD = 5
"""Consecutive availability faults after which the service counts as down."""
BREAKER_COOLDOWN = 10.0
"""Seconds new challenges fail fast while the service is down, before one is let through to probe it."""
CREATE_ATTEMPTS = 3
KEY_RECHECK = 30.0


@dataclass(frozen=True, slots=True)
class SolverConfig:
    key: str
    url: str
    width_view: int = 340
    poll_s: float = 2.0
    timeout_s: float = 120.0
    max_jobs: int = 32
    max_waiting: int = 512


@dataclass(slots=True)
class _Job:
    captured: Captured
    started: float
    deadline: float
    task: asyncio.Task[None] | None = None
    job_id: int | None = None


class Breaker:
    """Counts availability faults in a row; while open, new work fails fast instead of piling up."""

    def __init__(self, threshold: int = BREAKER_THRESHOLD, cooldown: float = BREAKER_COOLDOWN):
        self.threshold = threshold
        self.cooldown = cooldown
        self.faults = 0
        self.open_until = 0.0

    def is_open(self, now: float) -> bool:
        return self.faults >= self.threshold and now < self.open_until

    def fault(self, now: float) -> None:
        self.faults += 1
        if self.faults >= self.threshold:
            self.open_until = now + self.cooldown

    def ok(self) -> None:
        self.faults = 0
        self.open_until = 0.0


class Solver:
    def __init__(self, log: EventLog, clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.clock = clock
        self.config: SolverConfig | None = None
        self.key_state = "none"
        self.jobs_sent = 0
        self.breaker = Breaker()
        self._jobs: dict[str, _Job] = {}
        self._slots: asyncio.Semaphore | None = None
        self._http: httpx.AsyncClient | None = None
        self._client: OmocaptchaClient | None = None
        self._key_checked_at = 0.0
        self._key_task: asyncio.Task[None] | None = None
        self._errors = RateLimitedLog(logger)
        self._final_listeners: list[Callable[[Event], None]] = []

    @property
    def enabled(self) -> bool:
        return self.config is not None and bool(self.config.key)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        """Challenges beyond the job slots: what captcha_max_waiting bounds."""
        slots = self.config.max_jobs if self.config else 0
        return max(0, len(self._jobs) - slots)

    def in_flight_of(self, client: str) -> int:
        return sum(1 for job in self._jobs.values() if job.captured.client == client)

    def configure(self, config: SolverConfig) -> None:
        old = self.config
        self.config = config
        if old is None or old.max_jobs != config.max_jobs or self._slots is None:
            self._slots = asyncio.Semaphore(config.max_jobs)
        if old is None or (old.key, old.url) != (config.key, config.url):
            self._client = None
            self.key_state = "unchecked" if config.key else "none"
            self.breaker.ok()
            if config.key:
                self._schedule_key_check(announce=True)
            else:
                logger.info("captcha: no omocaptcha key set (omocaptcha_key / OMOCAPTCHA_KEY): capturing only")

    def _ensure_client(self) -> OmocaptchaClient:
        assert self.config is not None
        if self._http is None:
            slots = self.config.max_jobs
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5.0, read=20.0, write=20.0, pool=10.0),
                # A job has at most one request out, so one connection per job slot; few are kept idle because
                # httpcore checks every idle connection each time it places a request.
                limits=httpx.Limits(max_connections=slots, max_keepalive_connections=min(slots, 8)),
                trust_env=False,
            )
        if self._client is None:
            self._client = OmocaptchaClient(self.config.url, self.config.key, self._http)
        return self._client

    def _schedule_key_check(self, announce: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._key_task is None or self._key_task.done():
            self._key_task = loop.create_task(self._check_key(announce))

    async def _check_key(self, announce: bool) -> None:
        self._key_checked_at = self.clock()
        try:
            balance = await self._ensure_client().balance()
        except ServiceFailure as f:
            if f.reason == "invalid_key":
                if self.key_state != "invalid" or announce:
                    logger.error("captcha: the omocaptcha key was refused (%s); capturing only, captured "
                                 "challenges fail as invalid_key", f.message)
                self.key_state = "invalid"
            else:
                logger.warning("captcha: could not check the omocaptcha key (%s); solving anyway", f.message)
                if self.key_state != "invalid":
                    self.key_state = "unchecked"
            return
        except Exception as e:  # never let a start-up check kill the proxy
            logger.warning("captcha: key check failed: %s", type(e).__name__)
            return
        if self.key_state == "invalid":
            logger.info("captcha: the omocaptcha key is accepted again; solving resumes")
        self.key_state = "valid"
        if announce:
            logger.info("captcha: omocaptcha key accepted, balance %s USD; solving captured challenges", balance)

    def add_final_listener(self, listener: Callable[[Event], None]) -> None:
        self._final_listeners.append(listener)

    def submit(self, captured: Captured) -> None:
        """Starts solving a challenge that has just been captured; returns at once."""
        config = self.config
        if config is None or not config.key or captured.challenge_id in self._jobs:
            return
        now = self.clock()
        job = _Job(captured, now, now + config.timeout_s)
        self._jobs[captured.challenge_id] = job
        if self.key_state == "invalid":
            if now - self._key_checked_at > KEY_RECHECK:
                self._schedule_key_check(announce=False)
            self._finish(job, "failed", reason="invalid_key", message="the omocaptcha key was refused")
            return
        if self.breaker.is_open(now):
            self._finish(job, "failed", reason="api_error",
                         message="omocaptcha is unreachable; failing fast until it answers again")
            return
        if len(self._jobs) > config.max_jobs + config.max_waiting:
            self._finish(job, "failed", reason="overloaded",
                         message=f"more than {config.max_waiting} challenges already wait for a job slot")
            return
        job.task = asyncio.get_running_loop().create_task(self._run(job, config))

    def _finish(self, job: _Job, event: str, **fields: Any) -> Event | None:
        if self._jobs.pop(job.captured.challenge_id, None) is None:
            return None
        c = job.captured
        if job.job_id is not None:
            fields = {"service": SERVICE, "job_id": job.job_id, **fields}
        record = self.log.emit(event, c.client, c.challenge_id, str(c.kind), **fields)
        for listener in self._final_listeners:
            listener(record)
        return record

    async def _run(self, job: _Job, config: SolverConfig) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (job.deadline - self.clock())
        try:
            async with asyncio.timeout_at(deadline):
                assert self._slots is not None
                async with self._slots:
                    if self.breaker.is_open(self.clock()):
                        raise ServiceFailure("api_error", "omocaptcha is unreachable; failing fast",
                                             reached=False, transient=False)
                    await self._solve(job, config)
        except TimeoutError:
            self._finish(job, "failed", reason="timeout",
                         message=f"no final answer within captcha_timeout ({config.timeout_s:g}s)")
        except ServiceFailure as f:
            if f.reason == "invalid_key":
                self.key_state = "invalid"
                self._key_checked_at = self.clock()
            self._finish(job, "failed", reason=f.reason, message=f.message)
        except images.BadImage as e:
            self._finish(job, "failed", reason="bad_image", message=str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("captcha: solving %s failed unexpectedly", job.captured.challenge_id)
            self._finish(job, "failed", reason="api_error", message=f"internal error: {type(e).__name__}")

    async def _solve(self, job: _Job, config: SolverConfig) -> None:
        c = job.captured
        type_job_id, payload, width_view = await asyncio.to_thread(_job_payload, c, config.width_view)
        client = self._ensure_client()
        job.job_id = await self._create(client, type_job_id, payload, width_view)
        self.log.emit("solving", c.client, c.challenge_id, str(c.kind), service=SERVICE, job_id=job.job_id)
        poll_faults = 0
        while True:
            await asyncio.sleep(config.poll_s)
            try:
                status = await client.job_result(job.job_id)
            except ServiceFailure as f:
                if f.reason == "invalid_key":
                    raise
                if f.transient:
                    self.breaker.fault(self.clock())
                poll_faults += 1
                self._errors.warning("poll", f"captcha: polling omocaptcha failed ({f.message}); asking again")
                if not f.transient and poll_faults >= 3:
                    raise
                continue
            self.breaker.ok()
            poll_faults = 0
            if status.state == "running":
                continue
            if status.state == "fail" or status.result is None:
                raise ServiceFailure("unsolvable", "omocaptcha could not solve this challenge" if status.state == "fail"
                                     else "omocaptcha reported success without a result",
                                     reached=True, transient=False)
            answer = _answer(c, status.result, config.width_view)
            elapsed_ms = round((self.clock() - job.started) * 1000)
            self._finish(job, "solved", result=status.result, answer=answer, elapsed_ms=elapsed_ms)
            return

    async def _create(self, client: OmocaptchaClient, type_job_id: str, payload: str, width_view: int | None) -> int:
        backoff = 1.0
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                self.jobs_sent += 1
                job_id = await client.create_job(type_job_id, payload, width_view)
            except ServiceFailure as f:
                if not f.reached:
                    self.jobs_sent -= 1
                if f.transient:
                    self.breaker.fault(self.clock())
                # Only a request that provably never reached the service is safe to repeat: another could charge twice.
                if f.reached or not f.transient or attempt == CREATE_ATTEMPTS or self.breaker.is_open(self.clock()):
                    raise
                await asyncio.sleep(backoff)
                backoff *= 2
                continue
            self.breaker.ok()
            return job_id
        raise AssertionError("unreachable")

    async def shutdown(self) -> None:
        """Ends every challenge still in flight as failed/shutdown, then closes the HTTP client."""
        for job in list(self._jobs.values()):
            self._finish(job, "failed", reason="shutdown", message="the proxy stopped before an answer came")
            if job.task is not None:
                job.task.cancel()
        if self._key_task is not None:
            self._key_task.cancel()
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            with contextlib.suppress(Exception):
                await http.aclose()



def _job_payload(c: Captured, width_view: int) -> tuple[str, str, int | None]:
    """Checks the images are whole (a truncated body fails here, not at the service) and builds the job."""
    if c.kind is Kind.ROTATE:
        inner, outer = c.images.get(Role.INNER), c.images.get(Role.OUTER)
        if inner is None or outer is None:
            raise images.BadImage("rotate challenge without both inner and outer images")
        images.check_complete(inner.body, inner.info)
        images.check_complete(outer.body, outer.info)
        return TYPE_ROTATE_WEB, _b64(inner.body) + "|" + _b64(outer.body), None
    background = c.images.get(Role.BACKGROUND)
    if background is None:
        raise images.BadImage("slide challenge without its background image")
    images.check_complete(background.body, background.info)
    return TYPE_SLIDE_WEB, _b64(background.body), width_view


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def _answer(c: Captured, result: str, width_view: int) -> dict[str, Any]:
    try:
        value = float(result.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ServiceFailure("api_error", "omocaptcha's result is not a number", reached=True, transient=False)
    if c.kind is Kind.ROTATE:
        return {"value": value}
    natural = c.images[Role.BACKGROUND].info.width if Role.BACKGROUND in c.images else 552
    return {
        "x": value, "width_view": width_view, "fraction": value / width_view, "x_natural": value * natural / width_view,
    }
