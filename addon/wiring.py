"""Builds the addon objects and the state they share: one bus, one tally, one board, one scheduler, one client
keyer."""

from __future__ import annotations

from typing import Any

from addon.capture.clients import ClientKeyer
from addon.mitm.api import CaptchaApi
from addon.mitm.capture import CaptchaCapture
from addon.mitm.fleet import CaptchaFleet
from addon.mitm.outlets import CaptchaEvents
from addon.mitm.solving import CaptchaSolving
from addon.publish.board import Board
from addon.publish.bus import EventBus
from addon.publish.dashboard_api import Dashboard
from addon.publish.event_stream import EventStreamServer
from addon.publish.http_api import ApiHandler
from addon.publish.tally import Tally
from addon.solving.scheduler import Scheduler


def build_addons() -> list[Any]:
    bus = EventBus()
    board = Board()
    keyer = ClientKeyer()
    scheduler = Scheduler(bus)
    tally = Tally()
    bus.subscribe("tally", tally)
    events = CaptchaEvents(bus, board)
    capture = CaptchaCapture(bus, scheduler, keyer)
    solving = CaptchaSolving(scheduler)

    fleet: CaptchaFleet | None = None

    def stats(client: str | None) -> dict[str, Any]:
        """Counters of the whole proxy, or of one client with ?client=K (then without the job counters)."""
        if client is not None:
            return {"client": client, **tally.client_stats(client), "in_flight": scheduler.in_flight_of(client)}
        services = scheduler.service_stats()
        return {
            **tally.stats(), "in_flight": scheduler.in_flight,
            "waiting": scheduler.waiting, "jobs_sent": scheduler.jobs_sent, "solving": scheduler.key_state,
            "solvers": list(scheduler.config.chain),
            "balance": {name: s["balance"] for name, s in services.items() if s["balance"] is not None},
            "services": services,
            "by_service": tally.by_service(scheduler.jobs_sent_by_kind()),
            "cache": {"entries": len(scheduler.cache), "hits": scheduler.cache.hits},
            **(fleet.stats() if fleet is not None else {}),
        }

    stream = EventStreamServer(board)
    bus.subscribe("event-stream", stream.publish)
    handler = ApiHandler(board, stats)
    dashboard = Dashboard(
        tally, in_flight=lambda: scheduler.in_flight, waiting=lambda: scheduler.waiting,
        balance=lambda: {n: s["balance"] for n, s in scheduler.service_stats().items() if s["balance"] is not None},
    )
    dashboard.register(handler)
    bus.subscribe("dashboard", dashboard)
    bus.subscribe_images("dashboard", dashboard.keep_images)
    events.dashboard = dashboard
    api = CaptchaApi(handler, keyer, stream)
    fleet = CaptchaFleet(bus, scheduler, handler, lambda: stats(None))
    # The API comes first (its configure refuses bad values before the others see them), fleet last (its load checks
    # the --set values once every option is registered). Order matters at shutdown too: capture and solving write
    # their last events before the sidecar and the fleet's stream close.
    return [api, capture, solving, events, fleet]
