"""The addon classes: one per concern (events, capture, solving), sharing one EventLog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import ctx, exceptions, flowfilter, hooks, http

from addon.capture import images, recognise
from addon.capture.assemble import Assembler, Captured, Expired, Outcome, make_part
from addon.capture.bodies import BodyTooLarge, bounded_content
from addon.capture.clients import ClientKeyer, parse_spec
from addon.capture.hosts import host_of
from addon.capture.recognise import Kind, NotRecognised
from addon.publish.board import Board
from addon.publish.events import Event, EventLog
from addon.publish.sidecar import SidecarWriter
from addon.ratelimit import RateLimitedLog
from addon.solving.omocaptcha_v1 import DEFAULT_URL
from addon.solving.scheduler import Solver, SolverConfig

logger = logging.getLogger("captcha")
# httpx logs every request at INFO; on the proxy's console that would be a line per result poll.
logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_IMAGE_BODY = 8 * 1024 * 1024
MAX_JSON_BODY = recognise.MAX_JSON_BODY
TICK_SECONDS = 0.25
MAX_REMEMBERED_CHALLENGES = 20_000
FLOW_MARK = ":jigsaw:"


class CaptchaEvents:
    """Publishes every event: the sidecar file, the board behind the HTTP API, and a log line per challenge."""

    def __init__(self, log: EventLog, board: Board):
        self.log = log
        self.board = board
        self.sidecar: SidecarWriter | None = None
        log.subscribers.append(self._publish)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "captcha_sidecar", str, "captcha-events.jsonl",
            'JSON Lines file every captcha event is appended to (created 0600); "" turns it off.',
        )

    def configure(self, updated: set[str]) -> None:
        if "captcha_sidecar" in updated:
            if self.sidecar is not None:
                self.sidecar.close()
            path = ctx.options.captcha_sidecar
            self.sidecar = SidecarWriter(os.path.expanduser(path)) if path else None

    def _publish(self, event: Event) -> None:
        self.board.add(event)
        if self.sidecar is not None:
            self.sidecar.write(event)
        name = event["event"]
        if name == "captured":
            roles = ", ".join(f"{role} {i['width']}x{i['height']} {i['format']}" for role, i in event["images"].items())
            logger.info(f"captcha: captured {event['kind']} {event['challenge']} for {event['client']} "
                        f"({roles}; from {event['source']})")
        elif name == "solved":
            logger.info(f"captcha: solved {event['challenge']} for {event['client']}: {event['result']} "
                        f"in {event['elapsed_ms']} ms")
        elif name == "failed":
            logger.warning(f"captcha: {event['challenge']} for {event['client']} failed: "
                           f"{event['reason']} ({event['message']})")
        elif name == "expired":
            logger.info(f"captcha: parts of {event['challenge']} for {event['client']} expired "
                        f"({', '.join(event['images']) or 'no images'}; {event['reason']})")

    def tick(self) -> None:
        if self.sidecar is not None and self.sidecar.backlog:
            self.sidecar.flush()

    def done(self) -> None:
        if self.sidecar is not None:
            self.sidecar.close()


class CaptchaSolving:
    """Solves captured challenges through omocaptcha when a key is set."""

    def __init__(self, solver: Solver):
        self.solver = solver

    def load(self, loader: Any) -> None:
        loader.add_option("omocaptcha_key", str, "",
                          "omocaptcha API key; empty: the OMOCAPTCHA_KEY environment variable, else capture only.")
        loader.add_option("omocaptcha_url", str, DEFAULT_URL, "Base URL of omocaptcha's v1 job API.")
        loader.add_option("captcha_width_view", int, 340, "Width at which the slide puzzle is shown (width_view).")
        loader.add_option("captcha_poll_ms", int, 2000, "Pause before the first and between result polls, in ms.")
        loader.add_option("captcha_timeout", int, 120,
                          "Seconds from capture to a final answer before the challenge fails with timeout.")
        loader.add_option("captcha_max_jobs", int, 32, "Solving jobs in flight at once; more wait their turn.")
        loader.add_option("captcha_max_waiting", int, 512,
                          "Challenges that may wait for a job slot; beyond it they fail at once as overloaded.")

    def configure(self, updated: set[str]) -> None:
        names = {"omocaptcha_key", "omocaptcha_url", "captcha_width_view", "captcha_poll_ms", "captcha_timeout",
                 "captcha_max_jobs", "captcha_max_waiting"}
        if not names & updated:
            return
        o = ctx.options
        url = o.omocaptcha_url.strip()
        if not re.match(r"^https?://[^/\s]+", url):
            raise exceptions.OptionsError(f"omocaptcha_url must be an http(s) URL, not {url!r}")
        for name in ("captcha_width_view", "captcha_poll_ms", "captcha_timeout", "captcha_max_jobs"):
            if getattr(o, name) <= 0:
                raise exceptions.OptionsError(f"{name} must be positive")
        if o.captcha_max_waiting < 0:
            raise exceptions.OptionsError("captcha_max_waiting must not be negative")
        key = o.omocaptcha_key.strip() or os.environ.get("OMOCAPTCHA_KEY", "").strip()
        self.solver.configure(SolverConfig(
            key=key, url=url, width_view=o.captcha_width_view, poll_s=o.captcha_poll_ms / 1000,
            timeout_s=float(o.captcha_timeout), max_jobs=o.captcha_max_jobs, max_waiting=o.captcha_max_waiting,
        ))

    async def done(self) -> None:
        await self.solver.shutdown()


class _Matchers:
    """Which flows are captcha gets, images and verifies: the built-in host/path rules, or the user's filters."""

    def __init__(self) -> None:
        self.get: flowfilter.TFilter | None = None
        self.image: flowfilter.TFilter | None = None
        self.verify: flowfilter.TFilter | None = None

    def set(self, name: str, expression: str) -> None:
        parsed: flowfilter.TFilter | None = None
        if expression.strip():
            try:
                parsed = flowfilter.parse(expression)
            except ValueError as e:
                raise exceptions.OptionsError(f"{name}: invalid filter expression {expression!r}: {e}") from None
        setattr(self, name.removeprefix("captcha_").removesuffix("_filter"), parsed)


class CaptchaCapture:
    """Recognises captcha traffic, assembles challenges per client, and hands captured ones to the solver."""

    def __init__(self, log: EventLog, solver: Solver, events: CaptchaEvents):
        self.log = log
        self.solver = solver
        self.events = events
        self.assembler = Assembler()
        self.keyer = ClientKeyer()
        self.matchers = _Matchers()
        self.hold = False
        self.bad_input = RateLimitedLog(logger)
        self.challenges: OrderedDict[str, tuple[str, Kind]] = OrderedDict()
        self.newest_solved: OrderedDict[str, str] = OrderedDict()
        self.newest_captured: OrderedDict[str, str] = OrderedDict()
        self.captured_ids: OrderedDict[str, str] = OrderedDict()
        self._held: dict[str, asyncio.Future[Event]] = {}
        self._held_flows: dict[str, asyncio.Future[Event]] = {}
        self._challenge_flows: dict[str, list[http.HTTPFlow]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.clock: Callable[[], float] = time.monotonic
        solver.add_final_listener(self._on_final)

    def load(self, loader: Any) -> None:
        loader.add_option("captcha_client_key", str, "ip",
                          "How clients are told apart: ip, header:NAME (e.g. a device id header) or proxyauth.")
        loader.add_option("captcha_pair_window", int, 30, "Seconds the parts of one challenge may arrive apart.")
        loader.add_option("captcha_hold", bool, False,
                          "Hold the response that completes a challenge until its answer is final and add the "
                          "X-Captcha-Answer header to it.")
        loader.add_option("captcha_get_filter", str, "",
                          "Filter expression for captcha get responses, replacing the built-in host/path rules.")
        loader.add_option("captcha_image_filter", str, "",
                          "Filter expression for captcha images, replacing the built-in CDN host rules "
                          "(images a get announced are always recognised).")
        loader.add_option("captcha_verify_filter", str, "",
                          "Filter expression for captcha verify responses, replacing the built-in host/path rules.")

    def configure(self, updated: set[str]) -> None:
        o = ctx.options
        if "captcha_client_key" in updated:
            parse_spec(o.captcha_client_key)
            self.keyer = ClientKeyer(o.captcha_client_key)
        if "captcha_pair_window" in updated:
            if o.captcha_pair_window <= 0:
                raise exceptions.OptionsError("captcha_pair_window must be positive")
            self.assembler.window = float(o.captcha_pair_window)
        for name in ("captcha_get_filter", "captcha_image_filter", "captcha_verify_filter"):
            if name in updated:
                self.matchers.set(name, getattr(o, name))
        if "captcha_hold" in updated:
            self.hold = o.captcha_hold

    def running(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._handle(self.assembler.tick(self.clock()), None)
                self.events.tick()
            except Exception:
                logger.exception("captcha: periodic housekeeping failed")

    def client_disconnected(self, client: Any) -> None:
        self.keyer.forget_connection(client.id)

    async def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or flow.websocket is not None:
            return
        try:
            await self._recognise(flow, response)
            answer = self._held_flows.pop(flow.id, None)
            if answer is not None:
                await self._hold(response, answer)
        except Exception as e:
            # The proxy must never break on the addon's account: the flow goes on untouched.
            self.bad_input.error(f"internal:{type(e).__name__}",
                                 f"captcha: internal error on {flow.request.pretty_url[:200]}: {type(e).__name__}: {e}")
            logger.debug("captcha: traceback", exc_info=True)

    async def _hold(self, response: http.Response, answer: asyncio.Future[Event]) -> None:
        """Only this response waits; the proxy serves every other flow meanwhile."""
        limit = (self.solver.config.timeout_s if self.solver.config else 120.0) + 5.0
        try:
            event = await asyncio.wait_for(asyncio.shield(answer), limit)
        except TimeoutError:
            return
        response.headers["X-Captcha-Answer"] = answer_header(event)

    async def _recognise(self, flow: http.HTTPFlow, response: http.Response) -> None:
        request = flow.request
        key = request.path.partition("?")[0]
        m = self.matchers
        announced = self.assembler.is_announced(key)
        host = host_of(request)
        if announced or (m.image(flow) if m.image else recognise.CAPTCHA_CDN_HOST.match(host)):
            if response.status_code == 200:
                await self._on_image(flow, response, key, announced)
            return
        if m.get(flow) if m.get else (key.endswith("/captcha/get") and _verification_host(host)):
            if response.status_code == 200:
                self._on_get(flow, response)
            return
        if m.verify(flow) if m.verify else (key.endswith("/captcha/verify") and _verification_host(host)):
            self._on_verify(flow, response)

    def _body(self, flow: http.HTTPFlow, message: http.Message, limit: int, what: str) -> bytes | None:
        try:
            return bounded_content(message, limit)
        except (BodyTooLarge, ValueError) as e:
            self.bad_input.warning(f"body:{what}", f"captcha: ignoring {what} {_short_url(flow)}: {e}")
            return None

    def _on_get(self, flow: http.HTTPFlow, response: http.Response) -> None:
        body = self._body(flow, response, MAX_JSON_BODY, "get response")
        if body is None:
            return
        try:
            announced = recognise.parse_get(body)
        except NotRecognised as e:
            self.bad_input.warning("get", f"captcha: unreadable get response {_short_url(flow)}: {e}")
            return
        client = self.keyer.key(flow)
        in_scope = [c for c in announced if c.kind is not None]
        self._comment(flow, "captcha get: " + ", ".join(f"{c.mode} {c.id}" for c in announced))
        for c in in_scope:
            self._remember(c.id, client, c.kind)  # type: ignore[arg-type]
        self._handle(self.assembler.announce(client, announced, self.clock()), flow)

    async def _on_image(self, flow: http.HTTPFlow, response: http.Response, key: str, announced: bool) -> None:
        body = self._body(flow, response, MAX_IMAGE_BODY, "image")
        if body is None:
            return
        try:
            info = images.probe(body)
        except images.BadImage as e:
            if announced or self.matchers.image is not None or _looks_like_image(response):
                self.bad_input.warning("image", f"captcha: bad captcha image {_short_url(flow)}: {e}")
            return
        now = self.clock()
        if announced:
            client = self.keyer.key(flow)
            role = self.assembler.role_of(key, client)
            if role is None:
                return
            part = make_part(role, flow.request.pretty_url, body, info)
            self._comment(flow, f"captcha {role} ({info.width}x{info.height} {info.format})")
            self._handle(self.assembler.add_announced_image(key, client, part, now), flow)
            return
        geometry_role = images.role_by_geometry(info)
        if geometry_role is None:
            return
        if geometry_role is images.Role.OUTER:
            try:
                open_centre = await asyncio.to_thread(images.has_open_centre, body)
            except images.BadImage as e:
                self.bad_input.warning("image", f"captcha: bad captcha image {_short_url(flow)}: {e}")
                return
            if not open_centre:
                return
        part = make_part(geometry_role, flow.request.pretty_url, body, info)
        self._comment(flow, f"captcha {geometry_role} by geometry ({info.width}x{info.height} {info.format})")
        self._handle(self.assembler.add_geometry_image(self.keyer.key(flow), part, self.clock()), flow)

    def _on_verify(self, flow: http.HTTPFlow, response: http.Response) -> None:
        body = self._body(flow, response, MAX_JSON_BODY, "verify response")
        request_body = self._body(flow, flow.request, MAX_JSON_BODY, "verify request")
        if body is None:
            return
        try:
            accepted = recognise.parse_verify_response(body)
        except NotRecognised as e:
            self.bad_input.warning("verify", f"captcha: unreadable verify response {_short_url(flow)}: {e}")
            return
        asked = recognise.parse_verify_request(request_body or b"")
        client = self.keyer.key(flow)
        challenge = asked.challenge_id or self.newest_solved.get(client) or self.newest_captured.get(client)
        if challenge is None:
            self.bad_input.warning("verify-unknown", f"captcha: verify response {_short_url(flow)} names no "
                                                     f"challenge and {client} has none")
            return
        known = self.challenges.get(challenge)
        kind = known[1] if known else recognise.MODE_KINDS.get((asked.mode or "").lower())
        if kind is None:
            return
        owner = known[0] if known else client
        self._comment(flow, f"captcha verify of {challenge}: {'accepted' if accepted else 'rejected'}")
        self.log.emit("verified", owner, challenge, str(kind), accepted=accepted)

    def _remember(self, challenge_id: str, client: str, kind: Kind) -> None:
        self.challenges[challenge_id] = (client, kind)
        self.challenges.move_to_end(challenge_id)
        if len(self.challenges) > MAX_REMEMBERED_CHALLENGES:
            self.challenges.popitem(last=False)

    def _handle(self, outcomes: Sequence[Outcome], flow: http.HTTPFlow | None) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Captured):
                self._captured(outcome, flow)
            elif isinstance(outcome, Expired):
                self.log.expired(outcome)
                self._challenge_flows.pop(outcome.challenge_id, None)

    def _captured(self, c: Captured, flow: http.HTTPFlow | None) -> None:
        if c.challenge_id in self.captured_ids:
            return
        _bump(self.captured_ids, c.challenge_id, c.client)
        self._remember(c.challenge_id, c.client, c.kind)
        _bump(self.newest_captured, c.client, c.challenge_id)
        self.log.captured(c)
        if flow is not None and self.solver.enabled:
            self._challenge_flows.setdefault(c.challenge_id, []).append(flow)
            if self.hold:
                answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
                self._held[c.challenge_id] = self._held_flows[flow.id] = answer
        self.solver.submit(c)

    def _on_final(self, event: Event) -> None:
        if event["event"] == "solved":
            _bump(self.newest_solved, event["client"], event["challenge"])
        held = self._held.pop(event["challenge"], None)
        if held is not None and not held.done():
            held.set_result(event)
        flows = self._challenge_flows.pop(event["challenge"], [])
        if flows:
            summary = (f"answer {event['result']}" if event["event"] == "solved"
                       else f"failed: {event.get('reason')}")
            for f in flows:
                f.comment = (f.comment + "; " if f.comment else "") + summary
            with contextlib.suppress(Exception):
                ctx.master.addons.trigger(hooks.UpdateHook(flows))

    def _comment(self, flow: http.HTTPFlow, text: str) -> None:
        flow.comment = text
        flow.marked = FLOW_MARK

    async def done(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._handle(self.assembler.flush(), None)


def _verification_host(host: str) -> bool:
    return recognise.VERIFICATION_HOST.search(host) is not None


def _bump(table: OrderedDict[str, str], client: str, challenge: str) -> None:
    table[client] = challenge
    table.move_to_end(client)
    if len(table) > MAX_REMEMBERED_CHALLENGES:
        table.popitem(last=False)


def _short_url(flow: http.HTTPFlow) -> str:
    url = flow.request.pretty_url
    return url if len(url) <= 160 else url[:157] + "..."


def _looks_like_image(response: http.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("image/")


def answer_header(event: Event) -> str:
    return json.dumps(event, ensure_ascii=True, separators=(",", ":"))

