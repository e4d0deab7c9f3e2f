"""`CaptchaCapture`: recognises captcha traffic, assembles challenges per client, hands captured ones to the
scheduler, holds the completing response when asked, and marks captcha flows for mitmweb."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from cachetools import FIFOCache
from mitmproxy import ctx, exceptions, flowfilter, hooks, http

from addon.capture import images, recognise
from addon.capture.assemble import Assembler, Captured, Expired, ImagePart, Outcome, make_part
from addon.capture.bodies import BodyTooLarge, bounded_content
from addon.capture.clients import ClientKeyer, parse_spec
from addon.capture.hosts import host_of
from addon.capture.recognise import NotRecognised
from addon.kinds import Kind, kind_by_path, kind_of_mode
from addon.mitm import option_table
from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.ratelimit import RateLimitedLog
from addon.solving.scheduler import Scheduler

logger = logging.getLogger(__name__)

MAX_IMAGE_BODY = 8 * 1024 * 1024
MAX_JSON_BODY = recognise.MAX_JSON_BODY
TICK_SECONDS = 0.25
MAX_REMEMBERED_CHALLENGES = 20_000
"""Each table below keeps this many entries, the least recently written out first (a read does not keep one)."""
FLOW_MARK = ":jigsaw:"


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

    def __init__(self, bus: EventBus, scheduler: Scheduler, keyer: ClientKeyer):
        self.bus = bus
        self.scheduler = scheduler
        self.assembler = Assembler()
        self.keyer = keyer
        self.matchers = _Matchers()
        self.hold = False
        self.bad_input = RateLimitedLog(logger)
        self.challenges: FIFOCache[str, tuple[str, Kind]] = FIFOCache(MAX_REMEMBERED_CHALLENGES)
        self.newest_solved: FIFOCache[str, str] = FIFOCache(MAX_REMEMBERED_CHALLENGES)
        self.newest_captured: FIFOCache[str, str] = FIFOCache(MAX_REMEMBERED_CHALLENGES)
        self.captured_ids: FIFOCache[str, str] = FIFOCache(MAX_REMEMBERED_CHALLENGES)
        self._held: dict[str, asyncio.Future[ev.Event]] = {}
        self._held_flows: dict[str, asyncio.Future[ev.Event]] = {}
        self._challenge_flows: dict[str, list[http.HTTPFlow]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.clock: Callable[[], float] = time.monotonic
        bus.subscribe("capture", self._on_event)

    def load(self, loader: Any) -> None:
        option_table.declare(loader, "capture")

    def configure(self, updated: set[str]) -> None:
        o = ctx.options
        if "captcha_client_key" in updated:
            parse_spec(o.captcha_client_key)
            self.keyer.configure(o.captcha_client_key)
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
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="captcha-assembler-tick")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._handle(self.assembler.tick(self.clock()), None)
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

    async def _hold(self, response: http.Response, answer: asyncio.Future[ev.Event]) -> None:
        """Only this response waits; the proxy serves every other flow meanwhile."""
        limit = self.scheduler.config.timeout_s + 5.0
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
            self.challenges[c.id] = (client, c.kind)  # type: ignore[assignment]
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
        signed = kind_by_path(key)
        if signed is not None:
            part = make_part(images.Role.IMAGE, flow.request.pretty_url, body, info)
            self._comment(flow, f"captcha {signed} image by its path ({info.width}x{info.height} {info.format})")
            self._handle(self.assembler.add_signed_image(self.keyer.key(flow), signed, part, now), flow)
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
        kind = known[1] if known else kind_of_mode(asked.mode)
        if kind is None:
            return
        owner = known[0] if known else client
        self._comment(flow, f"captcha verify of {challenge}: {'accepted' if accepted else 'rejected'}")
        answered = self.scheduler.verdict(challenge, accepted)
        self.bus.emit(ev.Verified(
            client=owner, challenge=challenge, kind=str(kind), accepted=accepted,
            service=answered.service if answered else None, cached=answered.cached if answered else False,
        ))

    def _handle(self, outcomes: Sequence[Outcome], flow: http.HTTPFlow | None) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Captured):
                self._captured(outcome, flow)
            elif isinstance(outcome, Expired):
                expired = self.bus.emit(ev.Expired(
                    client=outcome.client, challenge=outcome.challenge_id,
                    kind=str(outcome.kind) if outcome.kind else None, images=ev.image_fields(outcome.images),
                    reason=outcome.reason,
                ))
                if self.bus.wants_images and outcome.images:
                    self.bus.emit_images(expired, _bodies(outcome.images))
                self._challenge_flows.pop(outcome.challenge_id, None)

    def _captured(self, c: Captured, flow: http.HTTPFlow | None) -> None:
        if c.challenge_id in self.captured_ids:
            return
        self.captured_ids[c.challenge_id] = c.client
        self.challenges[c.challenge_id] = (c.client, c.kind)
        self.newest_captured[c.client] = c.challenge_id
        event = self.bus.emit(ev.Captured(
            client=c.client, challenge=c.challenge_id, kind=str(c.kind), images=ev.image_fields(c.images),
            source=c.source, tip_y=c.tip_y, verify_id=c.verify_id, question=c.question,
        ))
        if self.bus.wants_images:
            self.bus.emit_images(event, _bodies(c.images))
        if flow is not None and self.scheduler.enabled:
            self._challenge_flows.setdefault(c.challenge_id, []).append(flow)
            if self.hold:
                answer: asyncio.Future[ev.Event] = asyncio.get_running_loop().create_future()
                self._held[c.challenge_id] = self._held_flows[flow.id] = answer
        self.scheduler.submit(c)

    def _on_event(self, event: ev.Event) -> None:
        if not isinstance(event, ev.Solved | ev.Failed):
            return
        if isinstance(event, ev.Solved):
            self.newest_solved[event.client] = event.challenge
        held = self._held.pop(event.challenge, None)
        if held is not None and not held.done():
            held.set_result(event)
        flows = self._challenge_flows.pop(event.challenge, [])
        if flows:
            summary = (f"answer {event.result} ({event.service})" if isinstance(event, ev.Solved)
                       else f"failed: {event.reason}")
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
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self._handle(self.assembler.flush(), None)


def _bodies(parts: dict[images.Role, ImagePart]) -> dict[str, tuple[bytes, str]]:
    return {str(role): (part.body, part.info.format) for role, part in parts.items()}


def _verification_host(host: str) -> bool:
    return recognise.VERIFICATION_HOST.search(host) is not None


def _short_url(flow: http.HTTPFlow) -> str:
    url = flow.request.pretty_url
    return url if len(url) <= 160 else url[:157] + "..."


def _looks_like_image(response: http.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("image/")


def answer_header(event: ev.Event) -> str:
    return json.dumps(event.to_json(), ensure_ascii=True, separators=(",", ":"))

