"""The fleet outlet: every event of this proxy appended to one Redis stream, off the proxy's critical path.

`publish(event)` only appends to a bounded in-memory backlog (it never blocks and never raises); one background
task works the backlog off in order, a batch per round trip, with a Lua script (`_WRITE`) that, atomically:
- appends each event with `XADD <stream> MAXLEN ~ <maxlen> * event <json> run <run> seq <seq> client <client>`;
- updates the per-client lookups other proxies answer from (newest final, last 64 finals, last 100 events,
  newest `captured`; each "<stream id> <event JSON>", expiring after a day);
- advances this run's write mark `{T}:run:<run>:mark` to the highest seq written.

Exactly once. Stream ids are made by Redis (several proxies append to one stream, so a proxy cannot choose
them), so a batch whose reply was lost (the connection dropped after Redis ran it) cannot be told apart by id.
Instead the script skips every event whose seq is not above the run's mark, and because the mark moves in the
same script as the XADDs, a retried batch writes exactly the events that are not there yet. Events carry
`run` and `seq` as fields too, so a consumer can dedupe on (run, seq) where the mark cannot help (e.g. a
Sentinel failover that lost the last writes of the old master, then a replay: the replay is then written again,
which is what you want, and it is still in order).

When Redis is unreachable or restarts, events stay in the backlog (in order); retries back off to about 2 s;
one warning when it goes, one info line when the backlog has been written after it came back (with how many
events were written late). When the backlog is full the oldest events are dropped and counted in `overflowed`
(they are still in the sidecar file). The password is never logged: URLs are shown redacted and error texts
are scrubbed of it.

Call `publish` on the event loop's thread (the bus does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from addon.fleet import DEFAULT_STREAM, FleetKeys, LinkState, connect, validate_url

logger = logging.getLogger(__name__)

FINAL_EVENTS = frozenset(("solved", "failed"))
LOOKUP_TTL_S = 86_400
MARK_TTL_S = 7 * 86_400
FINALS_KEPT = 64
EVENTS_KEPT = 100
BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)
"""The pause after each failure in a row, before the next try: 0.05 s, doubling, at most 2 s (the loops that retry
Redis without end wait on an event of their own meanwhile, so they are not tenacity's)."""

# KEYS: stream, run mark, then 4 per event: events list, final, finals list, newest captured.
# ARGV: maxlen (0 = no trimming), lookup ttl, mark ttl, finals kept, events kept, then 4 per event: seq, client,
# lookup kind (final / captured / other), event JSON.
_WRITE = """
local stream, mark = KEYS[1], KEYS[2]
local maxlen, ttl, mark_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local finals_kept, events_kept = tonumber(ARGV[4]), tonumber(ARGV[5])
local run = ARGV[6]
local last = tonumber(redis.call('GET', mark) or '0')
local written, skipped = 0, 0
local n = (#ARGV - 6) / 4
for i = 0, n - 1 do
  local a = 7 + i * 4
  local seq, client, kind, event = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if seq <= last then
    skipped = skipped + 1
  else
    local id
    if maxlen == '0' then
      id = redis.call('XADD', stream, '*', 'event', event, 'run', run, 'seq', ARGV[a], 'client', client)
    else
      id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                      'event', event, 'run', run, 'seq', ARGV[a], 'client', client)
    end
    local rec = id .. ' ' .. event
    local k = 3 + i * 4
    redis.call('LPUSH', KEYS[k], rec)
    redis.call('LTRIM', KEYS[k], 0, events_kept - 1)
    redis.call('EXPIRE', KEYS[k], ttl)
    if kind == 'final' then
      redis.call('SET', KEYS[k + 1], rec, 'EX', ttl)
      redis.call('LPUSH', KEYS[k + 2], rec)
      redis.call('LTRIM', KEYS[k + 2], 0, finals_kept - 1)
      redis.call('EXPIRE', KEYS[k + 2], ttl)
    elseif kind == 'captured' then
      redis.call('SET', KEYS[k + 3], rec, 'EX', ttl)
    end
    last = seq
    written = written + 1
  end
end
if written > 0 then
  redis.call('SET', mark, last, 'EX', mark_ttl)
end
return {written, skipped}
"""


@dataclass(frozen=True, slots=True)
class _Item:
    n: int
    """Position in this outlet's life: what a finished batch removes from the backlog."""
    run: str
    seq: int
    client: str
    lookup: str
    json: str


class RedisEventStream:
    """Outlet: `publish(event_json_dict)`; `start()` on the event loop, `await stop()` at shutdown."""

    def __init__(self, url: str, stream: str = DEFAULT_STREAM, maxlen: int = 100_000, backlog: int = 10_000, *,
                 batch: int = 256, client: aioredis.Redis | None = None):
        self.url_shown = validate_url(url)
        if maxlen < 0 or backlog < 1 or batch < 1:
            raise ValueError("captcha_redis_maxlen must be >= 0 (0: no trimming), the backlog and batch >= 1")
        self.keys = FleetKeys(stream)
        self.maxlen = maxlen
        self.backlog = backlog
        self.batch = batch
        self._url = url.strip()
        self._client = client
        self._own_client = client is None
        self._buf: deque[_Item] = deque()
        self._counter = itertools.count(1)
        self._inflight_hi = 0
        self._maybe_lost = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._script: AsyncScript | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._link = LinkState(logger, self._url, "", summary=(
            f"; the proxy works alone meanwhile: it holds up to {backlog} events for the stream {self.keys.stream!r}"
            ", answers its own clients and solves without the fleet's claims and cache"))
        self._down_since: float | None = None
        self._late = 0
        self._bad_logged = False
        self.overflowed = 0
        """Events dropped unwritten because the backlog was full (oldest first); they are still in the sidecar."""
        self.written = 0
        self.skipped = 0
        """Events a retried batch found already in the stream (not written twice)."""
        self.rejected = 0
        """Events without an int `seq` and a str `run`, or not JSON-serialisable: never written."""

    # -- the outlet ---------------------------------------------------------------------------------------------

    def publish(self, event: Mapping[str, Any]) -> None:
        try:
            self._publish(event)
        except Exception as e:  # an outlet never raises into the bus
            self.rejected += 1
            if not self._bad_logged:
                self._bad_logged = True
                logger.error("captcha fleet: an event could not be queued for Redis: %s: %s", type(e).__name__, e)

    def _publish(self, event: Mapping[str, Any]) -> None:
        run, seq, name = event.get("run"), event.get("seq"), event.get("event")
        if not isinstance(run, str) or not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"event without a str run and an int seq: run={run!r} seq={seq!r}")
        client = event.get("client")
        lookup = "final" if name in FINAL_EVENTS else "captured" if name == "captured" else "other"
        item = _Item(next(self._counter), run, seq, "" if client is None else str(client), lookup,
                     json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        if len(self._buf) >= self.backlog:
            dropped = self._buf.popleft()
            if dropped.n <= self._inflight_hi:
                self._maybe_lost += 1  # in a batch on its way: lost only if that batch fails
            else:
                self.overflowed += 1
        self._buf.append(item)
        self._drained.clear()
        if self._loop is not None and self._loop_thread != threading.get_ident():
            self._loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    __call__ = publish

    @property
    def pending(self) -> int:
        """Events published and not yet known to be in the stream."""
        return len(self._buf)

    @property
    def down(self) -> bool:
        return self._link.down

    @property
    def link(self) -> LinkState:
        """Pass it to the reader, heartbeat and coordinator: then a Redis outage is one warning and one info line
        for the whole proxy. The stream is the one that says "back": it pings while the link is down and idle."""
        return self._link

    def stats(self) -> dict[str, Any]:
        """For /v1/stats: `redis_overflowed` counts the events dropped from a full backlog."""
        return {"redis_backlog": self.pending, "redis_overflowed": self.overflowed, "redis_written": self.written,
                "redis_down": self.down}

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._client is None:
            self._client = connect(self._url)
        self._script = self._client.register_script(_WRITE)
        self._link.on_down.append(self._wake.set)
        self._task = asyncio.create_task(self._run(), name=f"captcha-fleet-stream:{self.keys.stream}")

    async def flushed(self, timeout: float) -> bool:
        """True once everything published so far is in the stream (waits at most `timeout` s)."""
        if not self._buf:
            return True
        if self._task is None or self._task.done():
            return False
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return not self._buf

    async def stop(self, flush_timeout: float = 1.0) -> None:
        """Writes what it can within `flush_timeout` s, then stops; what is left is logged as unsent."""
        if self._task is None:
            return
        await self.flushed(flush_timeout)
        self._stopping.set()
        self._wake.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._buf:
            logger.warning("captcha fleet: %d events were not written to the stream %r before shutdown "
                           "(they are in the sidecar)", len(self._buf), self.keys.stream)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the writer ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self._buf:
                self._wake.clear()
                if self._link.down:
                    failures = await self._ping(failures)  # someone else found Redis gone: say when it is back
                elif not self._buf:
                    await self._wake.wait()
                continue
            batch = self._take()
            self._inflight_hi = batch[-1].n
            try:
                written, skipped = await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._inflight_hi = 0
                self.overflowed += self._maybe_lost
                self._maybe_lost = 0
                if self._link.failed(e, f"; holding up to {self.backlog} events and retrying") and (
                        self._down_since is None):
                    self._down_since = time.monotonic()
                    self._late = 0
                pause = BACKOFF.compute(failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                continue
            failures = 0
            self._inflight_hi = 0
            self._maybe_lost = 0
            last = batch[-1].n
            while self._buf and self._buf[0].n <= last:
                self._buf.popleft()
            self.written += written
            self.skipped += skipped
            if not self._buf:
                self._drained.set()
            if self._down_since is not None:
                self._late += written
            if not self._buf and self._link.down:
                self._back()

    def _back(self) -> None:
        if self._down_since is None:
            self._link.ok()
        else:
            gone = time.monotonic() - self._down_since
            self._link.ok(f" after {gone:.1f} s; wrote {self._late} held events late")
            self._down_since = None

    async def _ping(self, failures: int) -> int:
        """While the link is down and nothing is held: one PING, then the next backoff; the failures in a row now
        (0 once it answered)."""
        assert self._client is not None
        try:
            await self._client.ping()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._link.failed(e)
            with contextlib.suppress(TimeoutError):  # an event to hold ends the pause early
                await asyncio.wait_for(self._wake.wait(), BACKOFF.compute(failures))
            return failures + 1
        self._back()
        return 0

    def _take(self) -> list[_Item]:
        run = self._buf[0].run
        out: list[_Item] = []
        for item in itertools.islice(self._buf, self.batch):
            if item.run != run:
                break
            out.append(item)
        return out

    async def _write(self, batch: list[_Item]) -> tuple[int, int]:
        keys = self.keys
        names: list[str] = [keys.stream, keys.run_mark(batch[0].run)]
        args: list[str | int] = [self.maxlen, LOOKUP_TTL_S, MARK_TTL_S, FINALS_KEPT, EVENTS_KEPT, batch[0].run]
        for item in batch:
            c = item.client
            names += [keys.client_events(c), keys.client_final(c), keys.client_finals(c), keys.client_newest(c)]
            args += [item.seq, c, item.lookup, item.json]
        assert self._script is not None
        result = await self._script(keys=names, args=args)
        return int(result[0]), int(result[1])
