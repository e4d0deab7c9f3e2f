"""The HTTP API the proxy itself answers at http(s)://<captcha_host>/ (as mitmproxy answers mitm.it)."""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from addon.capture.hosts import host_of
from addon.publish.board import Board
from addon.publish.events import Event
from addon.solving.scheduler import Solver

if TYPE_CHECKING:
    from addon.mitm.capture import CaptchaCapture

logger = logging.getLogger("captcha")

WAIT_DEFAULT = 30.0
WAIT_MAX = 60.0
EVENTS_DEFAULT = 50
WIDGET_TRAVEL = 271.0
"""Slider travel of the 340-px web widget (340 minus a 69-px handle), the unit omocaptcha's rotate result is read in."""


def drag_for(event: Event, query: dict[str, str]) -> dict[str, Any] | None:
    """The drag in the caller's own pixels, when the caller gave its geometry and the event has an answer."""
    answer = event.get("answer")
    if event.get("event") != "solved" or not isinstance(answer, dict):
        return None
    if event.get("kind") == "slide" and "width" in query:
        width = _number(query["width"])
        if width is None:
            return None
        return {"x": answer["fraction"] * width, "width": width}
    if event.get("kind") == "rotate" and "track" in query:
        track = _number(query["track"])
        handle = _number(query.get("handle", "0"))
        if track is None or handle is None or track <= handle:
            return None
        travel = track - handle
        return {"x": answer["value"] * travel / WIDGET_TRAVEL, "travel": travel,
                "angle": answer["value"] * 360.0 / WIDGET_TRAVEL}
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class CaptchaApi:
    def __init__(self, board: Board, solver: Solver, capture: CaptchaCapture):
        self.board = board
        self.solver = solver
        self.capture = capture
        self.host = "captcha.mitm"
        self._token = b""

    def load(self, loader: Any) -> None:
        loader.add_option("captcha_host", str, "captcha.mitm",
                          "Host name the proxy answers the captcha HTTP API for (over HTTP and HTTPS).")
        loader.add_option("captcha_api_token", str, "",
                          "When set, the captcha HTTP API wants 'Authorization: Bearer <token>'.")

    def configure(self, updated: set[str]) -> None:
        if "captcha_host" in updated:
            host = ctx.options.captcha_host.strip().lower()
            if not host or "/" in host or " " in host:
                raise exceptions.OptionsError(f"captcha_host must be a host name, not {host!r}")
            self.host = host
        if "captcha_api_token" in updated:
            self._token = ctx.options.captcha_api_token.encode()

    def _ours(self, host: str | None) -> bool:
        return host is not None and host.lower().rstrip(".") == self.host

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._ours(flow.request.host):
            flow.response = http.Response.make(200)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self._ours(data.client_hello.sni):
            # TlsConfig (which runs after script addons) would otherwise try the upstream TLS handshake first.
            data.context.server.tls = False
            data.establish_server_tls_first = False

    def tls_established_client(self, data: tls.TlsData) -> None:
        if self._ours(data.conn.sni):
            data.context.server.tls = True

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is not None and self._ours(str(address[0])):
            data.server.error = f"{self.host} is answered by the proxy itself"

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or host_of(flow.request) != self.host:
            return
        try:
            status, body = await self._route(flow)
        except Exception as e:
            logger.exception("captcha: API request %s failed", flow.request.path[:100])
            status, body = 500, {"error": f"internal error: {type(e).__name__}"}
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        content = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")
        flow.response = http.Response.make(status, content, headers)
        flow.response.http_version = flow.request.http_version

    def _authorised(self, flow: http.HTTPFlow) -> bool:
        if not self._token:
            return True
        given = flow.request.headers.get("authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, b"Bearer " + self._token)

    async def _route(self, flow: http.HTTPFlow) -> tuple[int, Any]:
        if not self._authorised(flow):
            return 401, {"error": "unauthorized"}
        if flow.request.method not in ("GET", "HEAD"):
            return 405, {"error": "only GET is supported"}
        path, _, query_string = flow.request.path.partition("?")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(query_string).items()}
        client = query.get("client") or self.capture.keyer.key(flow)
        path = path.rstrip("/") or "/"
        if path == "/v1/answer":
            event = self.board.latest_final(client)
            if event is None:
                return 404, {"error": "no answer yet", "client": client}
            return 200, _with_drag(event, query)
        if path == "/v1/answer/wait":
            return await self._wait(client, query)
        if path == "/v1/events":
            limit = _int(query.get("limit"), EVENTS_DEFAULT)
            if limit is None or limit < 0:
                return 400, {"error": "limit must be a non-negative integer"}
            return 200, {"events": self.board.newest(limit, query.get("client"))}
        if path == "/v1/stats":
            return 200, self._stats(query.get("client"))
        if path == "/":
            return 200, {"endpoints": ["/v1/answer", "/v1/answer/wait", "/v1/events", "/v1/stats"]}
        return 404, {"error": "not found"}

    async def _wait(self, client: str, query: dict[str, str]) -> tuple[int, Any]:
        timeout = _float(query.get("timeout"), WAIT_DEFAULT)
        after = _int(query.get("after"), None)
        if timeout is None or ("after" in query and after is None):
            return 400, {"error": "timeout must be a number and after an integer"}
        deadline = time.monotonic() + max(0.0, min(timeout, WAIT_MAX))
        while True:
            if after is not None:
                event = self.board.final_after(client, max(after, 0))
            else:
                event = self.board.final_of_newest(client)
            if event is not None:
                return 200, _with_drag(event, query)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 204, None
            await self.board.wait_change(client, remaining)

    def _stats(self, client: str | None) -> dict[str, Any]:
        """Counters of the whole proxy, or of one client with ?client=K (then without the job counters)."""
        if client is not None:
            counts, reasons = self.board.client_counts(client)
            return {
                "client": client, "captured": counts["captured"], "solved": counts["solved"],
                "failed": dict(reasons), "expired": counts["expired"], "verified": counts["verified"],
                "in_flight": self.solver.in_flight_of(client),
            }
        counts = self.board.counts
        return {
            "captured": counts["captured"],
            "solved": counts["solved"],
            "failed": dict(self.board.failed_reasons),
            "expired": counts["expired"],
            "verified": counts["verified"],
            "in_flight": self.solver.in_flight,
            "waiting": self.solver.waiting,
            "jobs_sent": self.solver.jobs_sent,
            "solving": self.solver.key_state,
        }


def _with_drag(event: Event, query: dict[str, str]) -> Event:
    drag = drag_for(event, query)
    return {**event, "drag": drag} if drag is not None else event


def _int(text: str | None, default: int | None) -> int | None:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str | None, default: float) -> float | None:
    return default if text is None else _number(text)

