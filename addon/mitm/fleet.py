"""`CaptchaFleet`: fleet mode on Redis (`captcha_redis`): its options and life, the bus outlet that writes every
event to the stream, the reader the HTTP API asks about other proxies' clients, and shared solving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx

from addon.mitm import option_table, options
from addon.publish.bus import EventBus
from addon.publish.events import Event
from addon.publish.http_api import ApiHandler
from addon.solving.scheduler import Scheduler

if TYPE_CHECKING:  # redis-py and the fleet's modules load only when fleet mode is on (captcha_redis)
    import redis.asyncio as aioredis

    from addon.fleet import LinkState
    from addon.fleet.heartbeat import Heartbeat
    from addon.fleet.reader import FleetReader
    from addon.fleet.shared import FleetSolveCoordinator
    from addon.fleet.stream import RedisEventStream

logger = logging.getLogger(__name__)


class CaptchaFleet:
    """Fleet mode, on when `captcha_redis` is set. `stream`, `reader`, `coordinator` are None when it is off.

    Its parts share one Redis client, so one connection pool per proxy: a command takes a pooled connection for
    its round trip, while a blocking XREAD and each pub/sub wait hold one of the pool's connections of their own
    for as long as they wait."""

    def __init__(self, bus: EventBus, scheduler: Scheduler, api: ApiHandler, counters: Callable[[], Mapping[str, Any]]):
        self._bus, self._scheduler, self._api = bus, scheduler, api
        self._run, self._counters = bus.run, counters
        self.stream: RedisEventStream | None = None
        self.reader: FleetReader | None = None
        self.coordinator: FleetSolveCoordinator | None = None
        self.heartbeat: Heartbeat | None = None
        self.redis: aioredis.Redis | None = None
        self._url = ""
        self._started = False
        self._restarting: asyncio.Task[None] | None = None
        """The newest restart; each awaits the one before it."""
        self._restarts = 0
        self._probing: asyncio.Task[None] | None = None

    def load(self, loader: Any) -> None:
        option_table.declare(loader, "fleet")
        options.check_at_load(loader)  # this is the script's last addon: every option is registered now

    def configure(self, updated: set[str]) -> None:
        if "captcha_fleet_max_jobs" in updated:
            self._scheduler.fleet_max_jobs = ctx.options.captcha_fleet_max_jobs
        if not updated & {"captcha_redis", "captcha_redis_stream", "captcha_redis_maxlen", "captcha_redis_backlog"}:
            return
        url = (ctx.options.captcha_redis or os.environ.get("CAPTCHA_REDIS", "")).strip()
        self._url = ""
        if url:
            try:
                from addon.fleet import validate_url

                validate_url(url)  # ValueError text never holds the password
                self._url = url
            except ValueError as e:
                # A warning, not an error: mitmproxy ends a proxy that logs an ERROR while it starts (its ErrorCheck
                # addon), and a bad Redis URL must leave the proxy working alone.
                logger.warning("captcha fleet: %s; fleet mode is off, the proxy works alone", e)
        if self._started:  # changed at run time (mitmweb's options, `set` in the console)
            self._schedule_restart()

    async def running(self) -> None:
        self._started = True
        await self._schedule_restart()

    def _schedule_restart(self) -> asyncio.Task[None]:
        """Restarts run one after another (two quick changes must not build two streams at once), a restart that
        a newer one follows is skipped (that one reads the newer options), and done() awaits the last."""
        self._restarts += 1
        self._restarting = asyncio.get_running_loop().create_task(
            self._restart_after(self._restarting, self._restarts), name="captcha-fleet-restart")
        return self._restarting

    async def _restart_after(self, previous: asyncio.Task[None] | None, number: int) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # its own failure was logged where it happened
                await previous
        if number == self._restarts:
            await self._restart()

    async def _restart(self) -> None:
        await self._stop()
        if not self._url:
            return
        from addon.fleet import connect
        from addon.fleet.heartbeat import Heartbeat
        from addon.fleet.reader import BLOCK_MS, FleetAnswers, FleetReader
        from addon.fleet.shared import FleetSolveCoordinator
        from addon.fleet.stream import RedisEventStream

        opts = ctx.options
        # One client, one connection pool, for every part; its socket timeout outlasts the reader's blocking XREAD.
        redis = connect(self._url, socket_timeout=BLOCK_MS / 1000 + 5)
        try:
            # The option's check lets a backlog of 0 through; the stream needs room for the event on its way.
            stream = RedisEventStream(self._url, opts.captcha_redis_stream, opts.captcha_redis_maxlen,
                                      max(1, opts.captcha_redis_backlog), client=redis)
        except ValueError as e:
            await redis.aclose()  # never used: no connection was made
            logger.warning("captcha fleet: %s; fleet mode is off, the proxy works alone", e)
            return
        self.redis, self.stream = redis, stream
        stream.start()
        link = stream.link  # one warning / one info line per outage for the whole proxy
        self.reader = FleetReader(self._url, opts.captcha_redis_stream, client=redis, link=link)
        self.coordinator = FleetSolveCoordinator(redis, opts.captcha_redis_stream, url=self._url, link=link)
        heartbeat = self.heartbeat = Heartbeat(self._url, self._run, self._counters,
                                               stream=opts.captcha_redis_stream, client=redis, link=link)
        heartbeat.start()

        def outlet(event: Event) -> None:
            stream.publish(event.to_json())
            heartbeat.nudge()

        self._bus.subscribe("redis", outlet)
        self._scheduler.fleet = self.coordinator
        self._api.fleet = FleetAnswers(self.reader)
        self._scheduler.fleet_max_jobs = opts.captcha_fleet_max_jobs
        # One clear line on what is wrong (a password, a host) without holding up the proxy's start-up.
        self._probing = asyncio.get_running_loop().create_task(self._probe(self._url, redis, link),
                                                               name="captcha-fleet-probe")

    @staticmethod
    async def _probe(url: str, redis: aioredis.Redis, link: LinkState) -> None:
        from addon.fleet import probe

        problem = await probe(url, redis)
        if problem and not link.down:  # when a part already failed, its line said it
            logger.warning("captcha fleet: %s%s", problem, link.summary)
            link.down_at_start(problem)

    async def _stop(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
            self._probing = None
        self._scheduler.fleet = None
        self._api.fleet = None
        if self.stream is not None:
            self._bus.unsubscribe("redis")
            await self.stream.stop(flush_timeout=1.0)
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.reader is not None:
            await self.reader.close()
        if self.redis is not None:
            await self.redis.aclose()  # last: the parts above used it to stop
        self.stream = self.reader = self.coordinator = self.heartbeat = self.redis = None

    def stats(self) -> dict[str, Any]:
        """For /v1/stats: the stream's backlog, what overflowed it, what was written, and whether Redis is down."""
        return self.stream.stats() if self.stream is not None else {}

    async def done(self) -> None:
        if self._restarting is not None:
            with contextlib.suppress(Exception):
                await self._restarting
        await self._stop()
