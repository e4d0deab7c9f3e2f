"""Every few seconds, this proxy's counters under `{T}:proxy:<run>` (expiring), so `/v1/stats?scope=fleet` can sum
the proxies that reported within the last minute (`FleetReader.fleet_stats`). `nudge()` (the proxy calls it for
every event) brings the next report forward to at most `min_gap` s after the last one, so the fleet's counters
trail a busy proxy by about a second instead of a whole interval, at no more than one write per `min_gap`.

Counters are a nested dict of numbers (the shape of /v1/stats: `{"captured": 3, "failed": {"timeout": 1}}`),
stored flattened in a hash (`failed.timeout`); fields that are not numbers are left out. The report time comes
from Redis's clock, so proxies whose clocks disagree still count correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from addon.fleet import DEFAULT_STREAM, FleetKeys, LinkState, connect, validate_url

logger = logging.getLogger(__name__)

# KEYS: proxy hash, proxies zset (runs not seen for an hour are dropped from it).
# ARGV: ttl ms, run, then field, value, field, value...
_BEAT = """
local key, proxies = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', key)
for i = 3, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', key, '_time_ms', now)
redis.call('PEXPIRE', key, ARGV[1])
redis.call('ZADD', proxies, now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', proxies, '-inf', now - 3600000)
redis.call('PEXPIRE', proxies, 3600000)
return now
"""


def flatten(counters: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in counters.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = repr(value)
    return out


def add_flat(total: dict[str, Any], flat: Mapping[str, str]) -> None:
    """Adds one proxy's flattened counters into a nested total (fields starting with `_` are bookkeeping)."""
    for key, raw in flat.items():
        if key.startswith("_"):
            continue
        try:
            value: float = float(raw)
        except ValueError:
            continue
        *path, leaf = key.split(".")
        node = total
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            number = node.get(leaf, 0)
            if isinstance(number, int | float):
                summed = number + value
                node[leaf] = int(summed) if float(summed).is_integer() else summed


class Heartbeat:
    """`start()` on the event loop; `await stop()` writes a last report and stops. Never raises into the proxy."""

    def __init__(self, url: str | None, run: str, counters: Callable[[], Mapping[str, Any]], *,
                 stream: str = DEFAULT_STREAM, interval: float = 10.0, ttl: float = 60.0, min_gap: float = 1.0,
                 client: aioredis.Redis | None = None, link: LinkState | None = None):
        """`link`: share the event stream's (`RedisEventStream.link`) so an outage is logged once per proxy."""
        if url is None and client is None:
            raise ValueError("a Redis URL or client is needed")
        if url is not None:
            validate_url(url)
        self.keys = FleetKeys(stream)
        self.run = run
        self.interval = interval
        self.ttl = ttl
        self.min_gap = min_gap
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._counters = counters
        self._url = (url or "").strip()
        self._client = client
        self._own_client = client is None
        self._link = link or LinkState(logger, self._url or "redis://?", "heartbeat")
        self._owns_link = link is None
        self._task: asyncio.Task[None] | None = None
        self._script = client.register_script(_BEAT) if client is not None else None
        self.beats = 0

    def start(self) -> None:
        if self._task is not None:
            return
        self._ensure_client()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name=f"captcha-fleet-heartbeat:{self.run}")

    def nudge(self) -> None:
        """The counters changed: report within `min_gap` s of the last report rather than at the next interval."""
        if self._loop is not None and self._loop_thread != threading.get_ident():
            self._loop.call_soon_threadsafe(self._kick.set)
        else:
            self._kick.set()

    def _ensure_client(self) -> AsyncScript:
        if self._client is None:
            self._client = connect(self._url)
        if self._script is None:
            self._script = self._client.register_script(_BEAT)
        return self._script

    async def beat(self) -> bool:
        """Writes one report now; False (logged once per outage) when Redis did not take it."""
        script = self._ensure_client()
        args: list[str | int] = [int(self.ttl * 1000), self.run]
        try:
            for field, value in flatten(self._counters()).items():
                args += [field, value]
            await script(keys=[self.keys.proxy(self.run), self.keys.proxies], args=args)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._link.failed(e)
            return False
        if self._owns_link:
            self._link.ok()
        self.beats += 1
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()  # before the report: a change while it is on its way gets the next one
            await self.beat()
            last = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            pause = last + self.min_gap - loop.time()  # a burst of events is one report, not one each
            if pause > 0:
                await asyncio.sleep(pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self.beat()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
            self._script = None
