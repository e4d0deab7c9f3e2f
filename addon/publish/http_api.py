"""The HTTP API's routing, parameters and answers, without mitmproxy: `ApiHandler.handle` maps a request to a
response. `addon/mitm/api.py` feeds it the flows addressed to `captcha_host`."""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, assert_never

from addon.kinds import SPECS, kind_of_mode
from addon.publish.board import Board
from addon.publish.events import Event
from addon.publish.gesture import click_plan, drag_path
from addon.publish.remote import AnswersUnreachable, RemoteAnswers

WAIT_DEFAULT = 30.0
WAIT_MAX = 60.0
EVENTS_DEFAULT = 50
JSON = "application/json"
FLEET_DOWN = "the fleet's Redis did not answer; this proxy still answers for its own clients"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    client: str
    """The caller's own client key, worked out from the request like from any other flow."""
    authorization: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, doc: Any) -> ApiResponse:
        if doc is None:
            return cls(status)
        return cls(status, json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace"))


Route = Callable[[ApiRequest], Awaitable[ApiResponse]]
PrefixRoute = Callable[[ApiRequest, str], Awaitable[ApiResponse]]


def drag_for(event: dict[str, Any], query: dict[str, str]) -> dict[str, Any] | None:
    """The drag in the caller's own pixels, when the caller gave its geometry and the event has an answer."""
    answer = event.get("answer")
    kind = kind_of_mode(event.get("kind") if isinstance(event.get("kind"), str) else None)
    if event.get("event") != "solved" or not isinstance(answer, dict) or kind is None:
        return None
    answer_type = SPECS[kind].answer
    match answer_type:
        case "slide":
            width = _number(query["width"]) if "width" in query else None
            if width is None:
                return None
            return {"x": answer["fraction"] * width, "width": width}
        case "rotate":
            if "track" not in query:
                return None
            track = _number(query["track"])
            handle = _number(query.get("handle", "0"))
            if track is None or handle is None or track <= handle:
                return None
            travel = track - handle
            return {"x": answer["fraction"] * travel, "travel": travel, "angle": answer["fraction"] * 360.0}
        case "points":
            # `?width=W`: the points where to click on the image shown W pixels wide (its height keeps the aspect).
            width = _number(query["width"]) if "width" in query else None
            points, width_view, height_view = answer.get("points"), answer.get("width_view"), answer.get("height_view")
            if width is None or not isinstance(points, list) or not width_view or not height_view:
                return None
            height = width * height_view / width_view
            return {"points": [{"x": p["fraction_x"] * width, "y": p["fraction_y"] * height} for p in points],
                    "width": width, "height": height}
        case _:
            assert_never(answer_type)


class ApiHandler:
    """Routes of the API; more (metrics, dashboard, images) are added by the outlets that serve them."""

    def __init__(self, board: Board, stats: Callable[[str | None], dict[str, Any]]):
        self.board = board
        self.stats = stats
        self.token = b""
        self.routes: dict[str, Route] = {
            "/v1/answer": self._answer,
            "/v1/answer/wait": self._wait,
            "/v1/events": self._events,
            "/v1/stats": self._stats,
        }
        self.prefix_routes: dict[str, PrefixRoute] = {}
        self.public_paths: set[str] = set()
        """Paths served without the token: the dashboard's page and files, which hold no data (a browser cannot
        send a header when it opens a page; the page then asks for the token and sends it on every call)."""
        self.public_prefixes: set[str] = set()
        self.fleet: RemoteAnswers | None = None
        """Fleet mode: answers and events of clients this proxy has not seen come from the Redis stream."""

    def authorised(self, authorization: str) -> bool:
        if not self.token:
            return True
        return hmac.compare_digest(authorization.encode("utf-8", "replace"), b"Bearer " + self.token)

    def public(self, path: str) -> bool:
        return path in self.public_paths or any(path.startswith(p) for p in self.public_prefixes)

    async def handle(self, request: ApiRequest) -> ApiResponse:
        path = request.path.rstrip("/") or "/"
        if not self.public(path) and not self.authorised(request.authorization):
            return ApiResponse.json(401, {"error": "unauthorized"})
        if request.method not in ("GET", "HEAD"):
            return ApiResponse.json(405, {"error": "only GET is supported"})
        route = self.routes.get(path)
        if route is not None:
            return await route(request)
        for prefix, prefix_route in self.prefix_routes.items():
            if path.startswith(prefix):
                return await prefix_route(request, path[len(prefix):])
        return ApiResponse.json(404, {"error": "not found", "endpoints": sorted(self.routes)})

    def _client(self, request: ApiRequest) -> str:
        return request.query.get("client") or request.client

    def _remote(self, client: str) -> RemoteAnswers | None:
        """The fleet's reader when the client is another proxy's (one this proxy's board has never seen)."""
        return self.fleet if self.fleet is not None and not self.board.knows(client) else None

    async def _answer(self, request: ApiRequest) -> ApiResponse:
        client = self._client(request)
        remote = self._remote(client)
        if remote is not None:
            try:
                doc = await remote.latest_final(client)
            except AnswersUnreachable:
                return fleet_down(client)
            if doc is None:
                return ApiResponse.json(404, {"error": "no answer yet", "client": client})
            return ApiResponse.json(200, dict_with_drag(doc, request.query))
        event = self.board.latest_final(client)
        if event is None:
            return ApiResponse.json(404, {"error": "no answer yet", "client": client})
        return ApiResponse.json(200, with_drag(event, request.query))

    async def _wait(self, request: ApiRequest) -> ApiResponse:
        query = request.query
        client = self._client(request)
        timeout = _float(query.get("timeout"), WAIT_DEFAULT)
        after = _int(query.get("after"), None)
        remote = self._remote(client)
        if remote is not None:
            return await self._wait_remote(remote, client, query, timeout)
        if timeout is None or ("after" in query and after is None):
            return ApiResponse.json(400, {"error": "timeout must be a non-negative number and after an integer"})
        deadline = time.monotonic() + max(0.0, min(timeout, WAIT_MAX))
        while True:
            if after is not None:
                event = self.board.final_after(client, max(after, 0))
            else:
                event = self.board.final_of_newest(client)
            if event is not None:
                return ApiResponse.json(200, with_drag(event, query))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ApiResponse(204)
            await self.board.wait_change(client, remaining)

    async def _wait_remote(self, remote: RemoteAnswers, client: str, query: dict[str, str],
                           timeout: float | None) -> ApiResponse:
        """The long poll for another proxy's client: wakes on the fleet's stream. `after` is a seq of that client's
        proxy run, or a stream entry id (`1700000000000-0`) to walk the fleet's answers in stream order."""
        text = query.get("after")
        cursor: str | int | None = None
        if text is not None:
            cursor = text if re.fullmatch(r"\d+-\d+", text) else _int(text, None)
        if timeout is None or (text is not None and cursor is None):
            return ApiResponse.json(400, {"error": "timeout must be a non-negative number and after an integer "
                                                   "or a stream id"})
        try:
            doc = await remote.wait_final(client, max(0.0, min(timeout, WAIT_MAX)), after=cursor)
        except AnswersUnreachable:
            return fleet_down(client)
        return ApiResponse(204) if doc is None else ApiResponse.json(200, dict_with_drag(doc, query))

    async def _events(self, request: ApiRequest) -> ApiResponse:
        limit = _int(request.query.get("limit"), EVENTS_DEFAULT)
        if limit is None or limit < 0:
            return ApiResponse.json(400, {"error": "limit must be a non-negative integer"})
        client = request.query.get("client")
        remote = self._remote(client) if client else None
        if remote is not None and client is not None:
            try:
                return ApiResponse.json(200, {"events": await remote.newest_events(limit, client)})
            except AnswersUnreachable:
                return fleet_down(client)
        events = self.board.newest(limit, request.query.get("client"))
        return ApiResponse.json(200, {"events": [e.to_json() for e in events]})

    async def _stats(self, request: ApiRequest) -> ApiResponse:
        if request.query.get("scope") == "fleet":
            if self.fleet is None:
                return ApiResponse.json(400, {"error": "scope=fleet needs fleet mode (captcha_redis)"})
            try:
                return ApiResponse.json(200, await self.fleet.fleet_stats())
            except AnswersUnreachable:
                return fleet_down(None)
        return ApiResponse.json(200, self.stats(request.query.get("client")))


def fleet_down(client: str | None) -> ApiResponse:
    """503 for a question only the fleet's Redis can answer while it is unreachable (a client retries)."""
    doc: dict[str, Any] = {"error": FLEET_DOWN, **({"client": client} if client is not None else {})}
    return ApiResponse(503, json.dumps(doc).encode(), headers={"Retry-After": "1"})


def with_drag(event: Event, query: dict[str, str]) -> dict[str, Any]:
    return dict_with_drag(event.to_json(), query)


def dict_with_drag(doc: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    drag = drag_for(doc, query)
    if drag is None:
        return doc
    if query.get("plan", "").lower() in ("1", "true", "yes"):
        return {**doc, "drag": drag, **plan_for(doc, drag)}
    return {**doc, "drag": drag}


def plan_for(doc: dict[str, Any], drag: dict[str, Any]) -> dict[str, Any]:
    """The gesture that replays a converted answer (`?plan=1`), seeded by the challenge id: `path` for a drag,
    `clicks` for the points of an object captcha."""
    seed = str(doc.get("challenge"))
    if isinstance(drag.get("x"), int | float):
        return {"path": drag_path(float(drag["x"]), seed)}
    points = drag.get("points")
    if isinstance(points, list):
        return {"clicks": click_plan([(float(p["x"]), float(p["y"])) for p in points], seed)}
    return {}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _int(text: str | None, default: int | None) -> int | None:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str | None, default: float) -> float | None:
    return default if text is None else _number(text)

