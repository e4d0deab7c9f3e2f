"""The dashboard's side of the API: the page and its files, `/metrics`, and each challenge's images and drawn
answer from a bounded store, which one outlet feeds from the bus (the metrics read the tally).

A challenge's files are served under two URLs: `/v1/challenges/<id>/images/<role>` (percent-encoded parts) and
`/v1/challenges/images?challenge=<id>&role=<role>`. The page uses the second: ids come from the traffic, and a
browser collapses a path segment `.` or `..` (even as `%2e`) before it sends the request."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any

from addon.publish import dashboard
from addon.publish import events as ev
from addon.publish.http_api import ApiHandler, ApiRequest, ApiResponse
from addon.publish.image_store import ImageStore
from addon.publish.metrics import Metrics
from addon.publish.tally import Tally

DEFAULT_CHALLENGES = 500
DEFAULT_MB = 64
PAGE_HEADERS = {"Content-Security-Policy": dashboard.CONTENT_SECURITY_POLICY}
IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff"}


class Dashboard:
    def __init__(self, tally: Tally, *, in_flight: Callable[[], int], waiting: Callable[[], int],
                 balance: Callable[[], dict[str, Any]]):
        self.images = ImageStore(DEFAULT_CHALLENGES, DEFAULT_MB * 1024 * 1024)
        self.metrics = Metrics(tally, in_flight=in_flight, waiting=waiting, balance=balance)

    def register(self, handler: ApiHandler) -> None:
        handler.routes["/"] = self._page
        handler.routes["/metrics"] = self._scrape
        handler.routes["/favicon.ico"] = self._favicon
        handler.routes["/v1/challenges/images"] = self._image_by_query
        handler.routes["/v1/challenges/answer.png"] = self._answer_by_query
        handler.prefix_routes["/dashboard/"] = self._static
        handler.prefix_routes["/v1/challenges/"] = self._challenge_files
        handler.public_paths.update(("/", "/favicon.ico"))
        handler.public_prefixes.add("/dashboard/")

    def __call__(self, event: ev.Event) -> None:
        """The bus outlet: keeps each answer beside its images."""
        if isinstance(event, ev.Solved):
            self.images.set_answer(event.challenge, event.answer.to_json(), event.kind)

    def keep_images(self, event: ev.Captured | ev.Expired, bodies: dict[str, tuple[bytes, str]]) -> None:
        """The bus's image outlet: the bytes of a captured (or expired) challenge's parts."""
        for role, (body, fmt) in bodies.items():
            self.images.put(event.challenge, role, body, fmt)
        tip_y = event.tip_y if isinstance(event, ev.Captured) else None
        self.images.set_kind(event.challenge, event.kind, tip_y)

    async def _page(self, request: ApiRequest) -> ApiResponse:
        body, content_type = dashboard.asset("index.html") or (b"", "text/html")
        return ApiResponse(200, body, content_type, PAGE_HEADERS)

    async def _static(self, request: ApiRequest, name: str) -> ApiResponse:
        found = dashboard.asset(name) if name else None
        return ApiResponse(200, *found) if found else ApiResponse.json(404, {"error": "not found"})

    async def _favicon(self, request: ApiRequest) -> ApiResponse:
        # Browsers ask for it on any page of the host (an API answer opened in a tab too).
        return await self._static(request, "favicon.svg")

    async def _scrape(self, request: ApiRequest) -> ApiResponse:
        # Off the loop: with per-client labels a scrape of a big farm takes tens of milliseconds.
        body, content_type = await asyncio.to_thread(self.metrics.exposition, request.headers.get("accept", ""))
        return ApiResponse(200, body, content_type)

    async def _challenge_files(self, request: ApiRequest, rest: str) -> ApiResponse:
        parts = [urllib.parse.unquote(p) for p in rest.split("/")]
        if len(parts) == 3 and parts[1] == "images":
            return self._image(parts[0], parts[2])
        if len(parts) == 2 and parts[1] == "answer.png":
            return await self._answer(parts[0])
        return ApiResponse.json(404, {"error": "not found"})

    async def _image_by_query(self, request: ApiRequest) -> ApiResponse:
        challenge, role = request.query.get("challenge"), request.query.get("role")
        if challenge is None or role is None:
            return ApiResponse.json(400, {"error": "challenge and role are required"})
        return self._image(challenge, role)

    async def _answer_by_query(self, request: ApiRequest) -> ApiResponse:
        challenge = request.query.get("challenge")
        if challenge is None:
            return ApiResponse.json(400, {"error": "challenge is required"})
        return await self._answer(challenge)

    def _image(self, challenge: str, role: str) -> ApiResponse:
        return self._file(self.images.get(challenge, role))

    async def _answer(self, challenge: str) -> ApiResponse:
        # Drawing takes tens of milliseconds: off the proxy's event loop.
        png = await asyncio.to_thread(self.images.answer_png, challenge)
        return self._file((png, "image/png") if png is not None else None)

    def _file(self, found: tuple[bytes, str] | None) -> ApiResponse:
        if found is None:
            return ApiResponse(404, self.images.placeholder_png(), "image/png", IMAGE_HEADERS)
        return ApiResponse(200, *found, IMAGE_HEADERS)
