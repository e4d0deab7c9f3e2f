"""A strict fake of omocaptcha.com's v1 "job" API and v2 "task" API, for the test kit.

The real service cannot be reached from here, so this stands in for it. It holds the v1 and v2 contracts of
``../shared/omocaptcha-api.md`` strictly (what passes against the fake should pass against the real service)
and adds controls, fault injection, a request log and statistics for tests. v1 is served under ``/api/``, v2
under ``/v2/``, on one port. Run it as a process::

    uv run python -m tests.kit.fake_omocaptcha --port 0 --key KEY [--manifest DIR] ...

which prints one JSON line ``{"port": N, "base_url": "http://127.0.0.1:N/api/", "v2_base_url":
"http://127.0.0.1:N/v2/"}`` and serves until killed, or in-process::

    with FakeOmocaptcha(keys=["KEY"], manifests=[tmp_path]) as fake:
        httpx.post(fake.base_url + "createJob", json={...})
        httpx.post(fake.v2_base_url + "createTask", json={...})
        fake.control(fail_share=0.5)
        fake.log(); fake.stats()

``tests/kit/CONTRACT.md`` (section "Fake omocaptcha") documents the control schema, the faults and the
choices the fake makes where the real service's behaviour is unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import signal
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

from PIL import Image

from tests.kit.origin import listen

# --------------------------------------------------------------------------------------------------------------
# Constants of the contract

ENDPOINTS: tuple[str, ...] = ("createJob", "getJobResult", "getBalance", "getService")
PRICE = Decimal("0.00055")
CENT5 = Decimal("0.00001")
JOB_TYPES: tuple[str, ...] = ("21", "22", "23")
SLIDE_NATURAL_WIDTH = 552
FIRST_JOB_ID = 1_000_001
MAX_BODY = 32 * 1024 * 1024
HANG_SECONDS = 300.0

INVALID_TOKEN = "Invalid api token."  # the only error text the real service is documented to send

SERVICES: list[dict[str, Any]] = [
    {"id": 21, "name": "Tiktok Slide Web", "price": "0.00055", "avg_success": "98%", "avg_time": "15s"},
    {"id": 23, "name": "Tiktok Rotate Web", "price": "0.00055", "avg_success": "98%", "avg_time": "15s"},
]

# Faults that answer instead of the normal logic (no job is created).
PRE_FAULTS: tuple[str, ...] = (
    "http_500",
    "http_502",
    "http_429",
    "non_json",
    "wrong_shape",
    "error_true",
    "hang",
    "drop",
)
# createJob only: the job is created (and charged), then the answer is lost this way.
AFTER_CREATE_FAULTS: tuple[str, ...] = ("http_500_after_create", "hang_after_create", "drop_after_create")
# Faults that change the normal answer.
RESULT_FAULTS: tuple[str, ...] = ("empty_result", "waiting_status", "unknown_status")
COMMON_FAULTS: tuple[str, ...] = (*PRE_FAULTS, "success_field")
FAULTS_BY_ENDPOINT: dict[str, tuple[str, ...]] = {
    "createJob": (*COMMON_FAULTS, *AFTER_CREATE_FAULTS),
    "getJobResult": (*COMMON_FAULTS, *RESULT_FAULTS),
    "getBalance": COMMON_FAULTS,
    "getService": COMMON_FAULTS,
}

WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "createJob": {"errorId": 0, "taskId": 123456},
    "getJobResult": {"errorId": 0, "status": "processing"},
    "getBalance": {"errorId": 0, "balance": 345.678, "quantity": 10000, "voucher_balance": 123.211},
    "getService": {"errorId": 0, "services": []},
}
UNKNOWN_STATUS = "queued"
SERVER_BUSY = {"error": True, "message": "Server busy."}

# v2, the "task" API under /v2/. Its endpoints are named "v2/<call>" in fault tables, stats and the log (v1 and
# v2 both have a getBalance).
V2 = "v2/"
V2_CALLS: tuple[str, ...] = ("createTask", "getTaskResult", "getBalance", "report")
V2_ENDPOINTS: tuple[str, ...] = tuple(V2 + call for call in V2_CALLS)
TASK_ROTATE = "TiktokRotateWebTask"
TASK_SLIDE = "TiktokSliderWebTask"
TASK_3D = "Tiktok3DSelectObjectWebTask"
TASK_ICON = "TiktokSelectObjectWebTask"
TASK_TYPES: tuple[str, ...] = (TASK_ROTATE, TASK_SLIDE, TASK_3D, TASK_ICON)
OBJECT_MODES = {"22": "3d", TASK_3D: "3d", TASK_ICON: "icon"}
"""Job and task types of the object captchas -> the manifest mode they solve."""
ROTATE_DECIMALS = 2  # the docs' example answer is {"rotate": 0.76}

# The temporary error codes public clients retry; each can be injected by a fault of the same name in lower case.
TEMPORARY_ERRORS: dict[str, tuple[str, str]] = {
    "task_is_maintenance": ("ERROR_TASK_IS_MAINTENANCE", "This task type is under maintenance, try again later."),
    "service_unavailable": ("ERROR_SERVICE_UNAVAILABLE", "Service is unavailable, try again later."),
    "redis_unavailable": ("ERROR_REDIS_UNAVAILABLE", "Redis is unavailable, try again later."),
    "redis_job_data": ("ERROR_REDIS_JOB_DATA", "Could not read the job data, try again later."),
}
V2_PRE_FAULTS: tuple[str, ...] = (
    "http_500",
    "http_502",
    "http_429",
    "non_json",
    "wrong_shape",
    "hang",
    "drop",
    *TEMPORARY_ERRORS,
)
# createTask only: the task is created (and charged), then the answer is lost or is a temporary error.
V2_AFTER_CREATE_FAULTS: tuple[str, ...] = (
    "http_500_after_create",
    "hang_after_create",
    "drop_after_create",
    "redis_unavailable_after_create",
    "redis_job_data_after_create",
)
V2_RESULT_FAULTS: tuple[str, ...] = ("unknown_status", "empty_solution")
V2_FAULTS_BY_ENDPOINT: dict[str, tuple[str, ...]] = {
    "v2/createTask": (*V2_PRE_FAULTS, *V2_AFTER_CREATE_FAULTS),
    "v2/getTaskResult": (*V2_PRE_FAULTS, *V2_RESULT_FAULTS),
    "v2/getBalance": V2_PRE_FAULTS,
    "v2/report": V2_PRE_FAULTS,
}
ALL_FAULTS_BY_ENDPOINT: dict[str, tuple[str, ...]] = {**FAULTS_BY_ENDPOINT, **V2_FAULTS_BY_ENDPOINT}
# v2 endpoints answered in v1's shape
V2_WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "v2/createTask": {"error": False, "job_id": 123456, "message": "Create job success."},
    "v2/getTaskResult": {"error": False, "status": "running", "result": None},
    "v2/getBalance": {"error": False, "balance": "0.00000", "message": "Get balance success."},
    "v2/report": {"error": False, "message": "Success."},
}
JOB_FAILED = {
    "errorId": 1,
    "errorCode": "ERROR_JOB_STATUS",
    "errorDescription": "Job failed",
    "status": "fail",
    "solution": {},
}


def endpoint_of(path: str) -> str | None:
    """The endpoint a request path names (``createJob``, ``v2/createTask``), None for any other path."""
    if path.startswith("/api/") and path[5:] in ENDPOINTS:
        return path[5:]
    if path.startswith("/v2/") and path[4:] in V2_CALLS:
        return V2 + path[4:]
    return None


def _view_points(ch: Challenge, width_view: float, height_view: float) -> list[tuple[float, float]]:
    """The targets' centres in pixels of the image shown width_view x height_view, to one decimal."""
    assert ch.targets is not None
    w, h = ch.natural_size
    return [(round(x * width_view / w, 1), round(y * height_view / h, 1)) for x, y in ch.targets]


def _nginx_page(status: int, reason: str) -> str:
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


NON_JSON_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>'
    "<body><h1>omocaptcha.com</h1><p>Checking your browser before accessing omocaptcha.com.</p></body></html>"
)

Json = Any
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Draw = Literal["random", "spread"]

# --------------------------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class ImageRef:
    challenge: str
    mode: str
    role: str


@dataclass(frozen=True)
class Challenge:
    id: str
    mode: str
    drag_px: float | None
    gap_x: float | None
    background_width: float
    angle: float | None = None
    """Clockwise turn (degrees) that lines the disc up with the ring; falls back to drag_px / travel * 360."""
    targets: tuple[tuple[float, float], ...] | None = None
    """Object captchas: the centres (natural pixels) of the objects to click."""
    natural_size: tuple[float, float] = (552.0, 344.0)


def load_manifest(directory: Path) -> tuple[dict[str, ImageRef], dict[str, Challenge]]:
    """Read ``<directory>/manifest.json`` (or the file itself) and index its images by sha256 of their bytes.

    Strict: every image file must exist and hash to the manifest's ``sha256``.
    """
    manifest_file = directory if directory.is_file() else directory / "manifest.json"
    base = manifest_file.parent
    data = json.loads(manifest_file.read_text(encoding="utf-8"))
    widget = data.get("widget") or {}
    travel = float(widget.get("travel", 271))
    index: dict[str, ImageRef] = {}
    challenges: dict[str, Challenge] = {}
    for raw in data.get("challenges", []):
        cid = str(raw["id"])
        mode = str(raw["mode"])
        images: Mapping[str, Any] = raw.get("images") or {}
        bg_width = float(SLIDE_NATURAL_WIDTH)
        natural = (float(SLIDE_NATURAL_WIDTH), 344.0)
        for role, img in images.items():
            blob = (base / str(img["file"])).read_bytes()
            digest = hashlib.sha256(blob).hexdigest()
            declared = img.get("sha256")
            if declared is not None and str(declared).lower() != digest:
                raise ValueError(f"{manifest_file}: {cid}/{role}: file sha256 {digest} != manifest {declared}")
            index.setdefault(digest, ImageRef(cid, mode, str(role)))
            if role in ("background", "image") and img.get("width"):
                bg_width = float(img["width"])
            if role == "image" and img.get("height"):
                natural = (float(img.get("width") or SLIDE_NATURAL_WIDTH), float(img["height"]))
        drag = raw.get("drag_px")
        if drag is None and raw.get("angle") is not None:
            drag = float(raw["angle"]) / 360.0 * travel
        angle = raw.get("angle")
        if angle is None and drag is not None:
            angle = float(drag) / travel * 360.0
        gap = raw.get("gap_x")
        challenges[cid] = Challenge(
            id=cid,
            mode=mode,
            drag_px=None if drag is None else float(drag),
            gap_x=None if gap is None else float(gap),
            background_width=bg_width,
            angle=None if angle is None else float(angle),
            targets=tuple((float(t[0]), float(t[1])) for t in raw["targets"]) if raw.get("targets") else None,
            natural_size=natural,
        )
    return index, challenges


# --------------------------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class DecodedPart:
    text: str
    data: bytes | None  # None when the text is not strict, plain base64
    data_prefix: bool


def _split_prefix(part: str) -> tuple[str, bool]:
    if part.startswith("data:") and "," in part:
        return part.split(",", 1)[1], True
    return part, False


def decode_part(part: str) -> DecodedPart:
    """Strict: standard alphabet, correct padding, no whitespace, not empty, no ``data:`` prefix."""
    if part.startswith("data:"):
        return DecodedPart(part, None, True)
    if not part:
        return DecodedPart(part, None, False)
    try:
        return DecodedPart(part, base64.b64decode(part, validate=True), False)
    except (binascii.Error, ValueError):
        return DecodedPart(part, None, False)


def image_format(data: bytes) -> str | None:
    """The lower-case Pillow format name if Pillow can open and decode the bytes, else None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
        return fmt.lower() if fmt else None
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------------------
# State


@dataclass
class Settings:
    keys: list[str]
    invalid_keys: list[str] = field(default_factory=list)
    solve_seconds: float = 0.0
    fail_share: float = 0.0
    latency_ms: float = 0.0
    faults: dict[str, dict[str, float]] = field(default_factory=dict)
    down: bool = False
    hold: bool = False
    seed: int = 1
    draw: Draw = "random"

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "invalid_keys": list(self.invalid_keys),
            "solve_seconds": self.solve_seconds,
            "fail_share": self.fail_share,
            "latency_ms": self.latency_ms,
            "faults": copy.deepcopy(self.faults),
            "down": self.down,
            "hold": self.hold,
            "seed": self.seed,
            "draw": self.draw,
        }


@dataclass
class Job:
    id: int
    key: str
    type_job_id: str
    created: float  # monotonic
    created_time: float  # wall clock
    ready_at: float  # monotonic
    outcome: Literal["success", "fail"]
    result: str | None
    challenge: str | None
    reason: str | None  # why it fails: unknown_image, swapped, mismatched, wrong_role, fail_share
    polls: list[float] = field(default_factory=list)
    final_answered: bool = False
    polls_after_final: int = 0

    def status(self, now: float) -> str:
        return self.outcome if now >= self.ready_at else "running"


@dataclass
class Task:
    """A v2 task."""

    id: str  # a UUID
    key: str
    type: str  # TASK_ROTATE or TASK_SLIDE
    created: float  # monotonic
    ready_at: float  # monotonic
    outcome: Literal["ready", "fail"]
    solution: dict[str, Any] | None
    challenge: str | None
    reason: str | None  # why it fails: unknown_image, swapped, mismatched, wrong_role, fail_share
    polls: list[float] = field(default_factory=list)
    final_answered: bool = False
    polls_after_final: int = 0
    reports: list[bool] = field(default_factory=list)

    def status(self, now: float) -> str:
        return self.outcome if now >= self.ready_at else "processing"


@dataclass
class LogEntry:
    time: float
    method: str
    path: str
    body: Json
    status: int | str | None = None
    fault: str | None = None
    response: Json = None
    job_id: int | str | None = None  # a v1 job id, or a v2 taskId

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "body": copy.deepcopy(self.body),
            "status": self.status,
            "fault": self.fault,
            "response": copy.deepcopy(self.response),
            "job_id": self.job_id,
        }


@dataclass
class Drawer:
    """Seeded choices. ``random``: a seeded stream per purpose, one draw per event. ``spread``: after n events
    an option of share s has been chosen floor(n*s + phase) times (phase in [0, 1) from the seed), so counts
    are exact to within one."""

    seed: int
    draw: Draw
    rngs: dict[str, random.Random] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    applied: dict[tuple[str, str], int] = field(default_factory=dict)

    def reset(self, stream: str | None = None) -> None:
        if stream is None:
            self.rngs.clear()
            self.seen.clear()
            self.applied.clear()
            return
        self.rngs.pop(stream, None)
        self.seen.pop(stream, None)
        for k in [k for k in self.applied if k[0] == stream]:
            del self.applied[k]

    def _phase(self, stream: str, name: str) -> float:
        return random.Random(f"{self.seed}:{stream}:{name}:phase").random()

    def pick(self, stream: str, shares: Mapping[str, float]) -> str | None:
        if not shares:
            return None
        if self.draw == "random":
            rng = self.rngs.setdefault(stream, random.Random(f"{self.seed}:{stream}"))
            u = rng.random()
            acc = 0.0
            for name, share in shares.items():
                acc += share
                if u < acc:
                    return name
            return None
        n = self.seen.get(stream, 0) + 1
        self.seen[stream] = n
        best: str | None = None
        best_deficit = 0
        for name, share in shares.items():
            target = math.floor(n * share + self._phase(stream, name))
            deficit = target - self.applied.get((stream, name), 0)
            if deficit > best_deficit:
                best, best_deficit = name, deficit
        return best

    def confirm(self, stream: str, name: str) -> None:
        self.applied[(stream, name)] = self.applied.get((stream, name), 0) + 1


@dataclass
class Outcome:
    """What one /api request is answered with."""

    status: int = 200
    body: dict[str, Any] | None = None
    html: str | None = None
    action: Literal["answer", "drop", "hang"] = "answer"
    fault: str | None = None
    job: Job | None = None
    task: Task | None = None


def _html(status: int) -> Outcome:
    reasons = {
        404: "Not Found",
        405: "Method Not Allowed",
        413: "Request Entity Too Large",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }
    return Outcome(status=status, html=_nginx_page(status, reasons[status]))


def _error(message: str) -> Outcome:
    return Outcome(body={"error": True, "message": message})


def _v2_error(code: str, description: str) -> Outcome:
    return Outcome(body={"errorId": 1, "errorCode": code, "errorDescription": description})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(raw: bytes) -> tuple[bool, Json]:
    """(True, value) for a strict JSON document (no NaN/Infinity), else (False, None)."""
    try:
        return True, json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return False, None


class FakeState:
    """Everything the fake knows; safe to use from the server's loop and from other threads at once."""

    def __init__(
        self,
        keys: Sequence[str],
        manifests: Iterable[str | os.PathLike[str]] = (),
        *,
        solve_seconds: float = 0.0,
        fail_share: float = 0.0,
        latency_ms: float = 0.0,
        balance: str | Decimal = "10.00000",
        seed: int = 1,
        draw: Draw = "random",
        faults: Mapping[str, Mapping[str, float]] | None = None,
        invalid_keys: Sequence[str] = (),
        down: bool = False,
    ) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self.lock = threading.RLock()
        self.settings = Settings(keys=list(keys))
        self.default_balance = Decimal(str(balance))
        self.balances: dict[str, Decimal] = {}
        self.index: dict[str, ImageRef] = {}
        self.challenges: dict[str, Challenge] = {}
        self.manifests: list[str] = []
        self.jobs: dict[int, Job] = {}
        self.next_job_id = FIRST_JOB_ID
        self.tasks: dict[str, Task] = {}
        self.entries: list[LogEntry] = []
        self.requests: dict[str, int] = {name: 0 for name in (*ENDPOINTS, *V2_ENDPOINTS, "other")}
        self.fault_counts: dict[str, dict[str, int]] = {}
        self.charged = Decimal(0)
        self.drawer = Drawer(seed=seed, draw=draw)
        self.control(
            {
                "solve_seconds": solve_seconds,
                "fail_share": fail_share,
                "latency_ms": latency_ms,
                "seed": seed,
                "draw": draw,
                "faults": {k: dict(v) for k, v in (faults or {}).items()},
                "invalid_keys": list(invalid_keys),
                "down": down,
            }
        )
        self.initial = copy.deepcopy(self.settings)
        for m in manifests:
            self.add_manifest(m)

    # ---------------------------------------------------------------- manifests, balances

    def add_manifest(self, directory: str | os.PathLike[str]) -> int:
        """Load one manifest directory; returns the number of challenges it holds."""
        path = Path(directory)
        index, challenges = load_manifest(path)
        with self.lock:
            for digest, ref in index.items():
                self.index.setdefault(digest, ref)
            for cid, ch in challenges.items():
                self.challenges.setdefault(cid, ch)
            self.manifests.append(str(path))
        return len(challenges)

    def balance_of(self, key: str) -> Decimal:
        return self.balances.setdefault(key, self.default_balance)

    # ---------------------------------------------------------------- controls

    def control(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``/_control`` changes (validated first, then applied all at once); returns the settings.

        Raises ValueError for anything malformed.
        """
        known = {
            "solve_seconds",
            "fail_share",
            "latency_ms",
            "faults",
            "invalid_keys",
            "keys",
            "down",
            "hold",
            "seed",
            "draw",
            "balance",
            "add_manifest",
            "reset",
        }
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown control field(s): {', '.join(unknown)}")

        def number(name: str, lo: float, hi: float = math.inf) -> float | None:
            if name not in changes:
                return None
            value = changes[name]
            if not _is_number(value) or not math.isfinite(value) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}]")
            return float(value)

        def strings(name: str) -> list[str] | None:
            if name not in changes:
                return None
            value = changes[name]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings")
            return list(value)

        solve_seconds = number("solve_seconds", 0.0)
        fail_share = number("fail_share", 0.0, 1.0)
        latency_ms = number("latency_ms", 0.0)
        invalid_keys = strings("invalid_keys")
        keys = strings("keys")
        if keys is not None and not keys:
            raise ValueError("keys must not be empty")
        down = changes.get("down")
        if down is not None and not isinstance(down, bool):
            raise ValueError("down must be true or false")
        hold = changes.get("hold")
        if hold is not None and not isinstance(hold, bool):
            raise ValueError("hold must be true or false")
        seed = changes.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("seed must be an integer")
        draw = changes.get("draw")
        if draw is not None and draw not in ("random", "spread"):
            raise ValueError('draw must be "random" or "spread"')
        reset = changes.get("reset", False)
        if not isinstance(reset, bool):
            raise ValueError("reset must be true or false")
        faults = self._check_faults(changes["faults"]) if "faults" in changes else None
        balance: Decimal | dict[str, Decimal] | None = None
        if "balance" in changes:
            balance = self._check_balance(changes["balance"])
        manifests: list[str] = []
        if "add_manifest" in changes:
            value = changes["add_manifest"]
            manifests = [value] if isinstance(value, str) else strings("add_manifest") or []

        loaded = [load_manifest(Path(m)) for m in manifests]  # fail before changing anything

        with self.lock:
            s = self.settings
            if reset:
                self.settings = s = copy.deepcopy(self.initial)
                self.drawer = Drawer(seed=s.seed, draw=s.draw)
            if solve_seconds is not None:
                s.solve_seconds = solve_seconds
            if fail_share is not None:
                s.fail_share = fail_share
                self.drawer.reset("fail")
            if latency_ms is not None:
                s.latency_ms = latency_ms
            if invalid_keys is not None:
                s.invalid_keys = invalid_keys
            if keys is not None:
                s.keys = keys
            if down is not None:
                s.down = down
            if hold is not None:
                s.hold = hold
            if seed is not None or draw is not None:
                s.seed = seed if seed is not None else s.seed
                s.draw = cast(Draw, draw) if draw is not None else s.draw
                self.drawer = Drawer(seed=s.seed, draw=s.draw)
            if faults is not None:
                s.faults = faults
                for endpoint in ALL_FAULTS_BY_ENDPOINT:
                    self.drawer.reset(f"fault:{endpoint}")
            if isinstance(balance, Decimal):
                self.default_balance = balance
                for key in set(self.balances) | set(s.keys):
                    self.balances[key] = balance
            elif balance is not None:
                self.balances.update(balance)
            for m, (index, challenges) in zip(manifests, loaded, strict=True):
                for digest, ref in index.items():
                    self.index.setdefault(digest, ref)
                for cid, ch in challenges.items():
                    self.challenges.setdefault(cid, ch)
                self.manifests.append(m)
            return self.settings_json()

    @staticmethod
    def _check_faults(value: Any) -> dict[str, dict[str, float]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("faults must be an object {endpoint: {fault: share}}")
        out: dict[str, dict[str, float]] = {}
        for endpoint, table in value.items():
            if endpoint not in ALL_FAULTS_BY_ENDPOINT:
                raise ValueError(
                    f"faults: unknown endpoint {endpoint!r} (one of {', '.join(ALL_FAULTS_BY_ENDPOINT)})"
                )
            if not isinstance(table, dict):
                raise ValueError(f"faults.{endpoint} must be an object {{fault: share}}")
            clean: dict[str, float] = {}
            allowed = ALL_FAULTS_BY_ENDPOINT[endpoint]
            for name, share in table.items():
                if name not in allowed:
                    raise ValueError(f"faults.{endpoint}: unknown fault {name!r} (one of {', '.join(allowed)})")
                if not _is_number(share) or not 0.0 <= share <= 1.0:
                    raise ValueError(f"faults.{endpoint}.{name}: share must be a number in [0, 1]")
                if share > 0:
                    clean[name] = float(share)
            if sum(clean.values()) > 1.0 + 1e-9:
                raise ValueError(f"faults.{endpoint}: shares add up to more than 1")
            if clean:
                out[endpoint] = clean
        return out

    @staticmethod
    def _check_balance(value: Any) -> Decimal | dict[str, Decimal]:
        def one(v: Any) -> Decimal:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValueError("balance must be a decimal string or a number")
            try:
                d = Decimal(str(v))
            except InvalidOperation as exc:
                raise ValueError("balance must be a decimal string or a number") from exc
            if not d.is_finite() or d < 0:
                raise ValueError("balance must be a finite number >= 0")
            return d

        if isinstance(value, dict):
            return {str(k): one(v) for k, v in value.items()}
        return one(value)

    def settings_json(self) -> dict[str, Any]:
        with self.lock:
            out = self.settings.to_json()
            keys = set(self.settings.keys) | set(self.balances)
            out["balances"] = {k: str(self.balance_of(k).quantize(CENT5)) for k in sorted(keys)}
            out["manifests"] = list(self.manifests)
            out["challenges"] = len(self.challenges)
            return out

    # ---------------------------------------------------------------- log and stats

    def log_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.to_json() for e in self.entries]

    def clear_log(self) -> None:
        with self.lock:
            self.entries.clear()

    def stats_json(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            statuses = [j.status(now) for j in self.jobs.values()]
            per_job: dict[str, Any] = {}
            all_intervals: list[float] = []
            for job in self.jobs.values():
                gaps = [(b - a) * 1000.0 for a, b in zip(job.polls, job.polls[1:], strict=False)]
                all_intervals.extend(gaps)
                per_job[str(job.id)] = {
                    "type_job_id": job.type_job_id,
                    "status": job.status(now),
                    "result": job.result if job.status(now) == "success" else None,
                    "challenge": job.challenge,
                    "reason": job.reason if job.outcome == "fail" else None,
                    "polls": len(job.polls),
                    "min_interval_ms": round(min(gaps), 3) if gaps else None,
                    "polls_after_final": job.polls_after_final,
                }
            return {
                "jobs": {
                    "created": len(self.jobs),
                    "running": statuses.count("running"),
                    "succeeded": statuses.count("success"),
                    "failed": statuses.count("fail"),
                },
                "requests": dict(self.requests),
                "faults": copy.deepcopy(self.fault_counts),
                "polls": {
                    "total": sum(len(j.polls) for j in self.jobs.values()),
                    "max": max((len(j.polls) for j in self.jobs.values()), default=0),
                    "min_interval_ms": round(min(all_intervals), 3) if all_intervals else None,
                    "per_job": per_job,
                },
                "charged": str(self.charged.quantize(CENT5)),
                "v2": self._v2_stats(now),
            }

    def _v2_stats(self, now: float) -> dict[str, Any]:
        statuses = [t.status(now) for t in self.tasks.values()]
        per_task: dict[str, Any] = {}
        all_intervals: list[float] = []
        reports = [r for t in self.tasks.values() for r in t.reports]
        for task in self.tasks.values():
            gaps = [(b - a) * 1000.0 for a, b in zip(task.polls, task.polls[1:], strict=False)]
            all_intervals.extend(gaps)
            status = task.status(now)
            per_task[task.id] = {
                "type": task.type,
                "status": status,
                "solution": copy.deepcopy(task.solution) if status == "ready" else None,
                "challenge": task.challenge,
                "reason": task.reason if task.outcome == "fail" else None,
                "polls": len(task.polls),
                "min_interval_ms": round(min(gaps), 3) if gaps else None,
                "polls_after_final": task.polls_after_final,
                "reports": list(task.reports),
            }
        return {
            "tasks": {
                "created": len(self.tasks),
                "processing": statuses.count("processing"),
                "ready": statuses.count("ready"),
                "failed": statuses.count("fail"),
            },
            "polls": {
                "total": sum(len(t.polls) for t in self.tasks.values()),
                "max": max((len(t.polls) for t in self.tasks.values()), default=0),
                "min_interval_ms": round(min(all_intervals), 3) if all_intervals else None,
                "per_task": per_task,
            },
            "reports": {"accepted": reports.count(True), "rejected": reports.count(False)},
        }

    def summarize(self, value: Json, key: str | None = None) -> Json:
        """A copy of a request body with images (and any other long string) replaced by summaries."""
        if isinstance(value, dict):
            return {k: self.summarize(v, str(k)) for k, v in value.items()}
        if key == "imageBase64s" and isinstance(value, list):
            return [self._summarize_image(v) if isinstance(v, str) else self.summarize(v) for v in value]
        if isinstance(value, list):
            return [self.summarize(v) for v in value]
        if key == "imageBase64" and isinstance(value, str):
            return self._summarize_image(value)
        if isinstance(value, str) and (key == "image_base64" or len(value) > 200):
            return [self._summarize_image(part) for part in value.split("|")]
        return value

    def _summarize_image(self, part: str) -> dict[str, Any]:
        text, prefixed = _split_prefix(part)
        try:
            data: bytes | None = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            data = None
        if data is None or not data:
            return {"sha256": None, "bytes": None, "format": None, "chars": len(part)}
        digest = hashlib.sha256(data).hexdigest()
        out: dict[str, Any] = {"sha256": digest, "bytes": len(data), "format": image_format(data)}
        if prefixed:
            out["data_prefix"] = True
        if decode_part(part).data is None:
            out["strict_base64"] = False
        ref = self.index.get(digest)
        if ref is not None:
            out["challenge"] = ref.challenge
            out["role"] = ref.role
        return out

    def begin(self, method: str, path: str, raw: bytes) -> LogEntry:
        ok, parsed = parse_json_body(raw)
        if ok:
            body = self.summarize(parsed)
        else:
            text = raw.decode("utf-8", "replace")
            body = text if len(text) <= 500 else f"{text[:200]}... ({len(text)} chars)"
        entry = LogEntry(time=round(time.time(), 6), method=method, path=path, body=body)
        with self.lock:
            self.entries.append(entry)
            self.requests[endpoint_of(path) or "other"] += 1
        return entry

    def record_poll(self, raw: bytes, now: float) -> None:
        ok, parsed = parse_json_body(raw)
        if not ok or not isinstance(parsed, dict):
            return
        job_id = parsed.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            return
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            job.polls.append(now)
            if job.final_answered:
                job.polls_after_final += 1

    def record_task_poll(self, raw: bytes, now: float) -> None:
        ok, parsed = parse_json_body(raw)
        if not ok or not isinstance(parsed, dict):
            return
        task_id = parsed.get("taskId")
        if not isinstance(task_id, str):
            return
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return
            task.polls.append(now)
            if task.final_answered:
                task.polls_after_final += 1

    def finish(self, entry: LogEntry, outcome: Outcome, status: int | str) -> None:
        with self.lock:
            entry.status = status
            entry.fault = outcome.fault
            entry.response = copy.deepcopy(outcome.body) if outcome.body is not None else None
            if outcome.job is not None:
                entry.job_id = outcome.job.id
            elif outcome.task is not None:
                entry.job_id = outcome.task.id

    # ---------------------------------------------------------------- the API

    def pick_fault(self, endpoint: str) -> str | None:
        with self.lock:
            return self.drawer.pick(f"fault:{endpoint}", self.settings.faults.get(endpoint, {}))

    def confirm_fault(self, endpoint: str, name: str) -> None:
        with self.lock:
            self.drawer.confirm(f"fault:{endpoint}", name)
            counts = self.fault_counts.setdefault(endpoint, {})
            counts[name] = counts.get(name, 0) + 1

    def api(self, endpoint: str, content_type: str, raw: bytes, now: float | None = None) -> Outcome:
        """The normal logic of one endpoint (no faults): validation, jobs, balances."""
        now = time.monotonic() if now is None else now
        if endpoint in V2_ENDPOINTS:
            return self._api_v2(endpoint, content_type, raw, now)
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return _error("Content-Type must be application/json.")
        ok, body = parse_json_body(raw)
        if not ok or not isinstance(body, dict):
            return _error("Invalid JSON body.")
        key = body.get("api_token")
        with self.lock:
            if not isinstance(key, str) or key not in self.settings.keys or key in self.settings.invalid_keys:
                return _error(INVALID_TOKEN)
        if endpoint == "createJob":
            return self._create_job(key, body, now)
        if endpoint == "getJobResult":
            return self._job_result(key, body, now)
        if endpoint == "getBalance":
            with self.lock:
                balance = self.balance_of(key)
            return Outcome(
                body={"error": False, "balance": str(balance.quantize(CENT5)), "message": "Get balance success."}
            )
        if endpoint == "getService":
            return Outcome(body={"error": False, "service": copy.deepcopy(SERVICES), "message": "Get service success."})
        raise ValueError(f"unknown endpoint {endpoint}")

    def _create_job(self, key: str, body: dict[str, Any], now: float) -> Outcome:
        data = body.get("data")
        if not isinstance(data, dict):
            return _error("data is required.")
        type_job_id = data.get("type_job_id")
        if type_job_id is None:
            return _error("type_job_id is required.")
        if not isinstance(type_job_id, str):
            return _error("type_job_id must be a string.")
        if type_job_id not in JOB_TYPES:
            return _error("Job type not found.")
        image_base64 = data.get("image_base64")
        if not isinstance(image_base64, str) or not image_base64:
            return _error("image_base64 is required.")
        parts = image_base64.split("|")
        if type_job_id == "23" and len(parts) != 2:
            return _error("image_base64 must be two images joined by '|' for type_job_id 23.")
        if type_job_id in ("21", "22") and len(parts) != 1:
            return _error(f"image_base64 must be one image for type_job_id {type_job_id}.")
        width_view: float | None = None
        height_view: float | None = None
        if type_job_id == "22":
            for name in ("width_view", "height_view"):
                value = data.get(name)
                if value is None:
                    return _error(f"{name} is required.")
                if not _is_number(value) or not math.isfinite(value) or value <= 0:
                    return _error(f"{name} must be a positive number.")
            width_view, height_view = float(data["width_view"]), float(data["height_view"])
        if type_job_id == "21":
            wv = data.get("width_view")
            if wv is None:
                return _error("width_view is required.")
            if not _is_number(wv):
                return _error("width_view must be a number.")
            if not math.isfinite(wv) or wv <= 0:
                return _error("width_view must be positive.")
            width_view = float(wv)
        images: list[bytes] = []
        for part in parts:
            decoded = decode_part(part)
            if decoded.data_prefix:
                return _error("image_base64 must be plain base64, without a data: prefix.")
            if decoded.data is None:
                return _error("image_base64 is not valid base64.")
            if image_format(decoded.data) is None:
                return _error("image_base64 is not a valid image.")
            images.append(decoded.data)
        digests = [hashlib.sha256(b).hexdigest() for b in images]
        with self.lock:
            balance = self.balance_of(key)
            if balance < PRICE:
                return _error("Balance not enough.")
            result, challenge, reason = self._solve(type_job_id, digests, width_view, height_view)
            share = self.settings.fail_share
            if result is not None and share > 0 and self.drawer.pick("fail", {"fail": share}) == "fail":
                self.drawer.confirm("fail", "fail")
                result, reason = None, "fail_share"
            job = Job(
                id=self.next_job_id,
                key=key,
                type_job_id=type_job_id,
                created=now,
                created_time=time.time(),
                ready_at=now + self.settings.solve_seconds,
                outcome="success" if result is not None else "fail",
                result=result,
                challenge=challenge,
                reason=reason,
            )
            self.next_job_id += 1
            self.jobs[job.id] = job
            self.balances[key] = balance - PRICE
            self.charged += PRICE
        return Outcome(body={"error": False, "job_id": job.id, "message": "Create job success."}, job=job)

    def _solve(
        self, type_job_id: str, digests: list[str], width_view: float | None, height_view: float | None = None
    ) -> tuple[str | None, str | None, str | None]:
        """(result, challenge id, reason for failing). 22: "x1|y1|x2|y2" in width_view x height_view pixels."""
        if type_job_id == "22":
            assert width_view is not None and height_view is not None
            och, ocid, oreason = self._match_object("3d", digests)
            if och is None:
                return None, ocid, oreason
            points = _view_points(och, width_view, height_view)
            return "|".join(f"{v:g}" for p in points for v in p), och.id, None
        ch, cid, reason = self._match(type_job_id == "23", digests)
        if ch is None:
            return None, cid, reason
        if type_job_id == "23":
            assert ch.drag_px is not None
            return str(round(ch.drag_px)), ch.id, None
        assert width_view is not None and ch.gap_x is not None
        return str(round(ch.gap_x * width_view / ch.background_width)), ch.id, None

    def _match(self, rotate: bool, digests: list[str]) -> tuple[Challenge | None, str | None, str | None]:
        """(challenge with its truth, challenge id, reason for failing) for [inner, outer] or [background]."""
        refs = [self.index.get(d) for d in digests]
        if rotate:
            inner, outer = refs
            if inner is None or outer is None:
                known = inner or outer
                return None, known.challenge if known is not None else None, "unknown_image"
            if inner.challenge != outer.challenge:
                return None, None, "mismatched"
            if (inner.role, outer.role) == ("outer", "inner"):
                return None, inner.challenge, "swapped"
            ch = self.challenges.get(inner.challenge)
            if (inner.role, outer.role) != ("inner", "outer") or ch is None or ch.drag_px is None or ch.angle is None:
                return None, inner.challenge, "wrong_role"
            return ch, ch.id, None
        (ref,) = refs
        if ref is None:
            return None, None, "unknown_image"
        ch = self.challenges.get(ref.challenge)
        if ref.role != "background" or ch is None or ch.mode != "slide" or ch.gap_x is None:
            return None, ref.challenge, "wrong_role"
        return ch, ch.id, None

    def _match_object(self, mode: str, digests: list[str]) -> tuple[Challenge | None, str | None, str | None]:
        ref = self.index.get(digests[0]) if len(digests) == 1 else None
        if ref is None:
            return None, None, "unknown_image"
        ch = self.challenges.get(ref.challenge)
        if ref.role != "image" or ch is None or ch.mode != mode or not ch.targets:
            return None, ref.challenge, "wrong_role"
        return ch, ch.id, None

    # ---------------------------------------------------------------- the v2 API

    def _api_v2(self, endpoint: str, content_type: str, raw: bytes, now: float) -> Outcome:
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return _v2_error("ERROR_INVALID_REQUEST", "Content-Type must be application/json.")
        ok, body = parse_json_body(raw)
        if not ok or not isinstance(body, dict):
            return _v2_error("ERROR_INVALID_REQUEST", "Invalid JSON body.")
        key = body.get("clientKey")
        with self.lock:
            if not isinstance(key, str) or key not in self.settings.keys or key in self.settings.invalid_keys:
                return _v2_error("ERROR_KEY_DOES_NOT_EXIST", "Account authorization key not found in the system.")
        if endpoint == "v2/createTask":
            return self._create_task(key, body, now)
        if endpoint == "v2/getTaskResult":
            return self._task_result(key, body, now)
        if endpoint == "v2/getBalance":
            with self.lock:
                balance = self.balance_of(key).quantize(CENT5)
            return Outcome(
                body={
                    "errorId": 0,
                    "balance": float(balance),
                    "quantity": int(balance / PRICE),
                    "voucher_balance": 0.0,
                }
            )
        if endpoint == "v2/report":
            return self._report(key, body)
        raise ValueError(f"unknown endpoint {endpoint}")

    def _create_task(self, key: str, body: dict[str, Any], now: float) -> Outcome:
        task = body.get("task")
        if not isinstance(task, dict):
            return _v2_error("ERROR_TASK_ABSENT", "task is required.")
        task_type = task.get("type")
        if not isinstance(task_type, str) or task_type not in TASK_TYPES:
            return _v2_error("ERROR_TASK_NOT_SUPPORTED", "Task type is not supported.")
        parts: list[str] = []
        width_view: int | None = None
        height_view: int | None = None
        if task_type == TASK_ROTATE:
            images = task.get("imageBase64s")
            if images is None:
                return _v2_error("ERROR_BAD_PARAMETERS", "imageBase64s is required.")
            if not isinstance(images, list) or len(images) != 2:
                return _v2_error(
                    "ERROR_BAD_PARAMETERS", f"imageBase64s must be a list of two images for {TASK_ROTATE}."
                )
            if not all(isinstance(p, str) and p for p in images):
                return _v2_error("ERROR_BAD_PARAMETERS", "imageBase64s must hold two non-empty strings.")
            parts = list(images)
        elif task_type in (TASK_3D, TASK_ICON):
            image = task.get("imageBase64")
            if not isinstance(image, str) or not image:
                return _v2_error("ERROR_BAD_PARAMETERS", "imageBase64 is required.")
            for name in ("widthView", "heightView"):
                value = task.get(name)
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    return _v2_error("ERROR_BAD_PARAMETERS", f"{name} must be a positive integer.")
            question = task.get("question")
            if task_type == TASK_ICON and (not isinstance(question, str) or not question.strip()):
                return _v2_error("ERROR_BAD_PARAMETERS", f"question is required for {TASK_ICON}.")
            parts, width_view, height_view = [image], task["widthView"], task["heightView"]
        else:
            image = task.get("imageBase64")
            if not isinstance(image, str) or not image:
                return _v2_error("ERROR_BAD_PARAMETERS", "imageBase64 is required.")
            wv = task.get("widthView")
            if wv is None:
                return _v2_error("ERROR_BAD_PARAMETERS", "widthView is required.")
            if not isinstance(wv, int) or isinstance(wv, bool):
                return _v2_error("ERROR_BAD_PARAMETERS", "widthView must be an integer.")
            if wv <= 0:
                return _v2_error("ERROR_BAD_PARAMETERS", "widthView must be positive.")
            parts, width_view = [image], wv
        blobs: list[bytes] = []
        for part in parts:
            decoded = decode_part(part)
            if decoded.data_prefix:
                return _v2_error("ERROR_BAD_PARAMETERS", "Images must be plain base64, without a data: prefix.")
            if decoded.data is None:
                return _v2_error("ERROR_BAD_PARAMETERS", "Image is not valid base64.")
            if image_format(decoded.data) is None:
                return _v2_error("ERROR_IMAGE_TYPE_NOT_SUPPORTED", "Image is not a valid image.")
            blobs.append(decoded.data)
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        with self.lock:
            balance = self.balance_of(key)
            if balance < PRICE:
                return _v2_error("ERROR_ZERO_BALANCE", "Account has zero balance.")
            solution, challenge, reason = self._solve_v2(task_type, digests, width_view, height_view)
            share = self.settings.fail_share
            if solution is not None and share > 0 and self.drawer.pick("fail", {"fail": share}) == "fail":
                self.drawer.confirm("fail", "fail")
                solution, reason = None, "fail_share"
            created = Task(
                id=str(uuid.uuid4()),
                key=key,
                type=task_type,
                created=now,
                ready_at=now + self.settings.solve_seconds,
                outcome="ready" if solution is not None else "fail",
                solution=solution,
                challenge=challenge,
                reason=reason,
            )
            self.tasks[created.id] = created
            self.balances[key] = balance - PRICE
            self.charged += PRICE
        return Outcome(body={"errorId": 0, "taskId": created.id}, task=created)

    def _solve_v2(
        self, task_type: str, digests: list[str], width_view: int | None, height_view: int | None = None
    ) -> tuple[dict[str, Any] | None, str | None, str | None]:
        """(solution, challenge id, reason for failing). Rotate: r = 1 - angle / 360 (the handle's target is
        (track - handle) * (1 - r)), to ROTATE_DECIMALS; slide: end.x in widthView pixels, a whole number;
        objects: pointA, pointB in widthView x heightView pixels."""
        if task_type in OBJECT_MODES:
            assert width_view is not None and height_view is not None
            och, ocid, oreason = self._match_object(OBJECT_MODES[task_type], digests)
            if och is None:
                return None, ocid, oreason
            (ax, ay), (bx, by) = _view_points(och, width_view, height_view)[:2]
            return {"pointA": {"x": ax, "y": ay}, "pointB": {"x": bx, "y": by}}, och.id, None
        ch, cid, reason = self._match(task_type == TASK_ROTATE, digests)
        if ch is None:
            return None, cid, reason
        if task_type == TASK_ROTATE:
            assert ch.angle is not None
            return {"rotate": round(1.0 - (ch.angle % 360.0) / 360.0, ROTATE_DECIMALS)}, ch.id, None
        assert width_view is not None and ch.gap_x is not None
        return {"end": {"x": round(ch.gap_x * width_view / ch.background_width)}}, ch.id, None

    def _task_result(self, key: str, body: dict[str, Any], now: float) -> Outcome:
        task_id = body.get("taskId")
        if not isinstance(task_id, str):
            return _v2_error("ERROR_BAD_PARAMETERS", "taskId must be a string.")
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.key != key:
                return _v2_error("ERROR_TASK_NOT_FOUND", "Task not found.")
            status = "processing" if self.settings.hold else task.status(now)
        if status == "processing":
            return Outcome(body={"errorId": 0, "status": "processing"}, task=task)
        if status == "fail":
            return Outcome(body=copy.deepcopy(JOB_FAILED), task=task)
        return Outcome(body={"errorId": 0, "status": "ready", "solution": copy.deepcopy(task.solution)}, task=task)

    def _report(self, key: str, body: dict[str, Any]) -> Outcome:
        ids = body.get("id")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return _v2_error("ERROR_BAD_PARAMETERS", "id must be a non-empty list of task ids.")
        verdict = body.get("isSuccess")
        if not isinstance(verdict, bool):
            return _v2_error("ERROR_BAD_PARAMETERS", "isSuccess must be true or false.")
        with self.lock:
            tasks = [self.tasks.get(i) for i in ids]
            if any(t is None or t.key != key for t in tasks):
                return _v2_error("ERROR_TASK_NOT_FOUND", "Task not found.")
            for t in tasks:
                assert t is not None
                t.reports.append(verdict)
        return Outcome(body={"errorId": 0})

    def _job_result(self, key: str, body: dict[str, Any], now: float) -> Outcome:
        job_id = body.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            return _error("job_id must be an integer.")
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.key != key:
                return _error("Job not found.")
            status = "running" if self.settings.hold else job.status(now)
        result = job.result if status == "success" else None
        return Outcome(body={"error": False, "status": status, "result": result}, job=job)

    def apply_result_fault(self, name: str, outcome: Outcome, endpoint: str) -> bool:
        """Change a normal JSON answer by a result-changing fault; False when it had nothing to change."""
        body = outcome.body
        if body is None:
            return False
        if endpoint in V2_ENDPOINTS:
            return self._apply_v2_result_fault(name, outcome)
        if name == "success_field":
            if endpoint == "getJobResult" and body.get("error") is False:
                body["success"] = body.get("status") == "success"
            else:
                body["success"] = body.get("error") is False
            return True
        if body.get("error") is not False:
            return False
        if name == "empty_result" and body.get("result") is None:
            body["result"] = ""
            return True
        if name == "waiting_status" and body.get("status") == "running":
            body["status"] = "waiting"
            return True
        if name == "unknown_status":
            body["status"] = UNKNOWN_STATUS
            body["result"] = None
            return True
        return False

    @staticmethod
    def _apply_v2_result_fault(name: str, outcome: Outcome) -> bool:
        body = outcome.body
        if body is None or outcome.task is None:
            return False  # an error answer (bad key, unknown task): nothing to change
        if name == "unknown_status":
            outcome.body = {"errorId": 0, "status": UNKNOWN_STATUS}
            return True
        if name == "empty_solution" and body.get("status") == "ready":
            body["solution"] = {}
            return True
        return False

    def mark_answered(self, endpoint: str, outcome: Outcome) -> None:
        body = outcome.body
        if endpoint == "v2/getTaskResult":
            if outcome.task is not None and body is not None and body.get("status") in ("ready", "fail"):
                with self.lock:
                    outcome.task.final_answered = True
            return
        if (
            endpoint == "getJobResult"
            and outcome.job is not None
            and body is not None
            and body.get("error") is False
            and body.get("status") in ("success", "fail")
        ):
            with self.lock:
                outcome.job.final_answered = True


# --------------------------------------------------------------------------------------------------------------
# The ASGI app


async def close_connection(send: Send) -> None:
    """Close the client's TCP connection without any response.

    ASGI has no way to do this, so this reaches through hypercorn's objects (``send`` is HTTPStream.app_send,
    whose ``send`` is the protocol's ``stream_send``, whose ``send`` is the TCP server's). Should hypercorn's
    insides change, it falls back to a response head announcing a body that never comes, which hypercorn
    answers by closing the connection mid-response.
    """
    try:
        from hypercorn.events import Closed

        stream = getattr(send, "__self__", None)
        protocol = getattr(getattr(stream, "send", None), "__self__", None)
        connection_send = getattr(protocol, "send", None)
        if connection_send is None or not callable(connection_send):
            raise LookupError("no connection to close")
        await connection_send(Closed())
    except Exception:
        with contextlib.suppress(Exception):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


class FakeApp:
    """The ASGI application: ``/api/*`` (v1) and ``/v2/*`` (the contracts), and ``/_control``, ``/_log``,
    ``/_stats`` (for tests)."""

    def __init__(self, state: FakeState, stopping: asyncio.Event) -> None:
        self.state = state
        self.stopping = stopping

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        method = str(scope["method"])
        read = await self._read_body(receive)
        if read is None:
            return  # the client went away
        body, too_large = read
        if too_large:
            await self._send(send, 413, _nginx_page(413, "Request Entity Too Large").encode(), "text/html")
        elif path in ("/api", "/v2") or path.startswith(("/api/", "/v2/")):
            await self._api(scope, path, method, body, receive, send)
        else:
            await self._testkit(path, method, body, send)

    @staticmethod
    async def _read_body(receive: Receive) -> tuple[bytes, bool] | None:
        """(body, too_large), or None when the client went away."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size <= MAX_BODY:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return (b"".join(chunks), False) if size <= MAX_BODY else (b"", True)

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send: Send, status: int, value: Json) -> None:
        await self._send(send, status, json.dumps(value).encode(), "application/json")

    async def _testkit(self, path: str, method: str, body: bytes, send: Send) -> None:
        state = self.state
        if path == "/_control" and method == "GET":
            await self._json(send, 200, state.settings_json())
        elif path == "/_control" and method == "POST":
            ok, changes = parse_json_body(body)
            if not ok or not isinstance(changes, dict):
                await self._json(send, 400, {"error": "body must be a JSON object"})
                return
            try:
                settings = await asyncio.to_thread(state.control, changes)
            except (ValueError, OSError, KeyError, TypeError) as exc:
                await self._json(send, 400, {"error": str(exc)})
                return
            await self._json(send, 200, settings)
        elif path == "/_log" and method == "GET":
            await self._json(send, 200, {"requests": state.log_json()})
        elif path == "/_log/clear" and method == "POST":
            state.clear_log()
            await self._json(send, 200, {"requests": []})
        elif path == "/_stats" and method == "GET":
            await self._json(send, 200, state.stats_json())
        else:
            await self._json(send, 404, {"error": "not found"})

    async def _wait_stop_or(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True if the server started stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        return self.stopping.is_set()

    async def _api(self, scope: Message, path: str, method: str, body: bytes, receive: Receive, send: Send) -> None:
        state = self.state
        arrived = time.monotonic()
        entry = state.begin(method, path, body)
        endpoint = endpoint_of(path)
        if endpoint == "getJobResult" and method == "POST":
            state.record_poll(body, arrived)
        elif endpoint == "v2/getTaskResult" and method == "POST":
            state.record_task_poll(body, arrived)
        with state.lock:
            down = state.settings.down
            latency = state.settings.latency_ms / 1000.0
        if down:
            state.finish(entry, Outcome(action="drop", fault="down"), "refused")
            await close_connection(send)
            return
        if latency > 0 and await self._wait_stop_or(latency):
            state.finish(entry, Outcome(action="drop"), "dropped")
            await close_connection(send)
            return

        outcome = _html(404) if endpoint is None else self._outcome(scope, endpoint, method, body)

        if outcome.action == "drop":
            state.finish(entry, outcome, "dropped")
            await close_connection(send)
            return
        if outcome.action == "hang":
            state.finish(entry, outcome, "hang")
            await self._hang(receive, send)
            return
        if endpoint is not None:
            state.mark_answered(endpoint, outcome)
        state.finish(entry, outcome, outcome.status)
        try:
            if outcome.body is not None:
                await self._json(send, outcome.status, outcome.body)
            else:
                await self._send(send, outcome.status, (outcome.html or "").encode(), "text/html; charset=utf-8")
        except Exception:
            with state.lock:
                entry.status = "client_gone"

    def _outcome(self, scope: Message, endpoint: str, method: str, body: bytes) -> Outcome:
        state = self.state
        if endpoint not in ALL_FAULTS_BY_ENDPOINT:
            return _html(404)
        if method != "POST":
            return _html(405)
        fault = state.pick_fault(endpoint)
        if fault in (V2_PRE_FAULTS if endpoint in V2_ENDPOINTS else PRE_FAULTS):
            assert fault is not None
            state.confirm_fault(endpoint, fault)
            outcome = self._pre_fault(endpoint, fault)
            outcome.fault = fault
            return outcome
        content_type = ""
        for name, value in scope.get("headers", []):
            if bytes(name).lower() == b"content-type":
                content_type = bytes(value).decode("latin-1")
        outcome = state.api(endpoint, content_type, body)
        if fault is None:
            return outcome
        if fault in AFTER_CREATE_FAULTS or fault in V2_AFTER_CREATE_FAULTS:
            if outcome.job is None and outcome.task is None:
                return outcome  # nothing was created: the fault does not apply
            state.confirm_fault(endpoint, fault)
            after = self._pre_fault(endpoint, fault.removesuffix("_after_create"))
            after.fault = fault
            after.job = outcome.job
            after.task = outcome.task
            return after
        if state.apply_result_fault(fault, outcome, endpoint):
            state.confirm_fault(endpoint, fault)
            outcome.fault = fault
        return outcome

    @staticmethod
    def _pre_fault(endpoint: str, fault: str) -> Outcome:
        if fault == "http_500":
            return _html(500)
        if fault == "http_502":
            return _html(502)
        if fault == "http_429":
            return _html(429)
        if fault == "non_json":
            return Outcome(status=200, html=NON_JSON_PAGE)
        if fault == "wrong_shape":
            return Outcome(body=copy.deepcopy({**WRONG_SHAPES, **V2_WRONG_SHAPES}[endpoint]))
        if fault in TEMPORARY_ERRORS:
            return _v2_error(*TEMPORARY_ERRORS[fault])
        if fault == "error_true":
            return Outcome(body=dict(SERVER_BUSY))
        if fault == "hang":
            return Outcome(action="hang")
        if fault == "drop":
            return Outcome(action="drop")
        raise ValueError(f"not a fault that replaces the answer: {fault}")

    async def _hang(self, receive: Receive, send: Send) -> None:
        """Never answer: wait until the client goes away, the server stops or HANG_SECONDS pass."""
        gone = asyncio.ensure_future(receive())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({gone, stop}, timeout=HANG_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            client_gone = gone.done() and not gone.cancelled()
        finally:
            for task in (gone, stop):
                task.cancel()
        if not client_gone:
            await close_connection(send)


# --------------------------------------------------------------------------------------------------------------
# Serving


async def serve(state: FakeState, sock: socket.socket, stopping: asyncio.Event) -> None:
    """Serve the fake on an already listening socket (which hypercorn takes over) until ``stopping`` is set."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.graceful_timeout = 1.0
    app = FakeApp(state, stopping)
    await hypercorn_serve(cast(Any, app), config, shutdown_trigger=stopping.wait, mode="asgi")


class FakeOmocaptcha:
    """The fake served by hypercorn in a background thread with its own event loop.

    Use as a context manager. ``control``, ``log``, ``stats``, ``clear_log``, ``add_manifest`` and
    ``settings`` are direct in-process calls (no HTTP); they are the same operations as ``/_control``,
    ``/_log``, ``/_stats`` and ``/_log/clear``.
    """

    def __init__(
        self,
        keys: Sequence[str] = ("test-key",),
        manifests: Iterable[str | os.PathLike[str]] = (),
        *,
        port: int = 0,
        solve_seconds: float = 0.0,
        fail_share: float = 0.0,
        latency_ms: float = 0.0,
        balance: str | Decimal = "10.00000",
        seed: int = 1,
        draw: Draw = "random",
        faults: Mapping[str, Mapping[str, float]] | None = None,
        invalid_keys: Sequence[str] = (),
        down: bool = False,
    ) -> None:
        self.state = FakeState(
            keys,
            manifests,
            solve_seconds=solve_seconds,
            fail_share=fail_share,
            latency_ms=latency_ms,
            balance=balance,
            seed=seed,
            draw=draw,
            faults=faults,
            invalid_keys=invalid_keys,
            down=down,
        )
        self._want_port = port
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/`` (ends with a slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def v2_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v2/`` (ends with a slash)."""
        return f"http://127.0.0.1:{self.port}/v2/"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (for ``/_control``, ``/_log``, ``/_stats``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = listen(self._want_port)
        self.port = int(sock.getsockname()[1])
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            ready.set()
            await serve(self.state, sock, self._stopping)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                self._error = exc
            finally:
                ready.set()
                with contextlib.suppress(OSError):
                    sock.close()

        self._thread = threading.Thread(target=run, name=f"fake-omocaptcha-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._error is not None:
            raise RuntimeError("fake omocaptcha failed to start") from self._error
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.01)
        raise RuntimeError("fake omocaptcha is not accepting connections")

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change behaviour (same fields as ``POST /_control``); returns the settings. ValueError if invalid."""
        return self.state.control(changes)

    def settings(self) -> dict[str, Any]:
        """The settings, as ``GET /_control`` shows them."""
        return self.state.settings_json()

    def add_manifest(self, directory: str | os.PathLike[str]) -> int:
        return self.state.add_manifest(directory)

    def log(self) -> list[dict[str, Any]]:
        """The request log (``GET /_log``'s ``requests``), oldest first."""
        return self.state.log_json()

    def clear_log(self) -> None:
        self.state.clear_log()

    def stats(self) -> dict[str, Any]:
        return self.state.stats_json()


# --------------------------------------------------------------------------------------------------------------
# Command line


def _parse_fault(text: str) -> tuple[str, str, float]:
    try:
        where, share = text.rsplit("=", 1)
        endpoint, name = where.split(":", 1)
        return endpoint, name, float(share)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected ENDPOINT:FAULT=SHARE, got {text!r}") from exc


HELP_DESCRIPTION = """\
A strict fake of omocaptcha.com for tests: the v1 "job" API under /api/ and the v2 "task" API under /v2/,
on one port of 127.0.0.1. Prints one JSON line {"port", "base_url", "v2_base_url"} on stdout, then serves
until SIGTERM/SIGINT. Challenges are known by the sha256 of their images, from test-kit manifests; answers
come from the manifests' truth. tests/kit/CONTRACT.md ("Fake omocaptcha") has the details."""


def _help_epilog() -> str:
    lines = ["faults (--fault ENDPOINT:FAULT=SHARE; v2 endpoints are written v2/NAME):"]
    for endpoint, faults in ALL_FAULTS_BY_ENDPOINT.items():
        lines += textwrap.wrap(", ".join(faults), 100, initial_indent=f"  {endpoint}: ", subsequent_indent="      ")
    lines += [
        "",
        "test paths (outside /api/ and /v2/): GET|POST /_control, GET /_log, POST /_log/clear, GET /_stats",
        "",
        "example:",
        "  python -m tests.kit.fake_omocaptcha --key K --manifest kit/ --solve-seconds 1 \\",
        "      --fault getJobResult:http_500=0.2 --fault v2/createTask:service_unavailable=0.1",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.kit.fake_omocaptcha",
        description=HELP_DESCRIPTION,
        epilog=_help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument(
        "--key", action="append", required=True, help="a valid key: v1 api_token and v2 clientKey (repeatable)"
    )
    p.add_argument("--manifest", action="append", default=[], help="a test-kit manifest directory (repeatable)")
    p.add_argument("--solve-seconds", type=float, default=0.0, help="time until a job or task is final (default 0)")
    p.add_argument("--fail-share", type=float, default=0.0, help="share 0..1 of solvable jobs/tasks that end fail")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering any /api or /v2 request")
    p.add_argument(
        "--balance", default="10.00000", help="starting balance of every key, shared by v1 and v2 (default 10.00000)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the deterministic choices (default 1)")
    p.add_argument("--draw", choices=["random", "spread"], default="random", help="how shares are drawn")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_parse_fault,
        metavar="ENDPOINT:FAULT=SHARE",
        help="inject a fault, e.g. getJobResult:http_500=0.2 or v2/getTaskResult:drop=0.1 (repeatable)",
    )
    p.add_argument("--invalid-key", action="append", default=[], help="a key that answers as invalid")
    p.add_argument("--down", action="store_true", help="start with every /api and /v2 request refused")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faults: dict[str, dict[str, float]] = {}
    for endpoint, name, share in args.fault:
        faults.setdefault(endpoint, {})[name] = share
    try:
        state = FakeState(
            args.key,
            args.manifest,
            solve_seconds=args.solve_seconds,
            fail_share=args.fail_share,
            latency_ms=args.latency_ms,
            balance=args.balance,
            seed=args.seed,
            draw=args.draw,
            faults=faults,
            invalid_keys=args.invalid_key,
            down=args.down,
        )
    except (ValueError, OSError, KeyError, InvalidOperation) as exc:
        print(f"fake_omocaptcha: {exc}", file=sys.stderr)
        return 2
    sock = listen(args.port)
    port = int(sock.getsockname()[1])
    info = {"port": port, "base_url": f"http://127.0.0.1:{port}/api/", "v2_base_url": f"http://127.0.0.1:{port}/v2/"}
    print(json.dumps(info), flush=True)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve(state, sock, stopping)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
