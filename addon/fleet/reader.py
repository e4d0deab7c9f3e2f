"""What any proxy's HTTP API asks Redis about a client of the fleet, wherever that client's proxy is.

Every event returned is the event's own JSON object plus `stream_id` (the id of its stream entry), the fleet's
cursor.

"After", for the fleet. `seq` counts within one proxy run, so on its own it does not order events of several
proxies. `final_after` and `wait_final` therefore take a cursor that is one of:
- a stream id (`"1718000000000-3"`, a str): the fleet-wide order, the order entries were appended to the stream.
  "After" is "appended later". A script that walks every answer of a device in order passes the `stream_id`
  of the last answer it got; it keeps working when the device moves to another proxy. This is the cursor to
  offer on `/v1/answer/wait?after=<stream id>` in fleet mode.
- `(run, seq)`: the next final of that client from that proxy run with a greater seq (the one-proxy meaning of
  `after=SEQ`, for a device whose proxy is known by its run).
- an int SEQ: `(run, SEQ)` with the run of the client's newest event, so `after=SEQ` keeps its one-proxy
  meaning for a device on another proxy (`after <= 0`: from the oldest final of that run still held).
The per-client list of recent finals (64) answers these; when the cursor is older than that list reaches, the
stream itself is scanned (bounded).

`wait_final` wakes on the stream: one follower task per reader keeps a blocking `XREAD BLOCK` open from the
stream's last id and wakes the waiters of the clients whose entries arrive; a waiter then re-reads the lookups.
The lookups are written in the same Lua script as the entry (see `stream`), so a waiter never sees an entry
before its lookups. The waiter registers, then the follower is known to read from an id no later than the
lookups the waiter checks first, so nothing written in between is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis

from addon.fleet import DEFAULT_STREAM, REDIS_FAILURES, FleetKeys, LinkState, connect
from addon.fleet.heartbeat import add_flat
from addon.fleet.stream import BACKOFF, FINALS_KEPT
from addon.publish.remote import AnswersUnreachable

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Cursor = str | tuple[str, int] | int
SCAN_PAGE = 1000
READY_WAIT_S = 1.0
SCAN_PAGES = 100
Entries = list[tuple[str, dict[str, str]]]
_STREAM_ID = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_stream_id(value: str) -> tuple[int, int]:
    m = _STREAM_ID.match(value.strip())
    if not m:
        raise ValueError(f"not a stream id: {value!r} (expected <ms>-<n>)")
    return int(m.group(1)), int(m.group(2) or 0)


def _record(raw: str | None) -> Event | None:
    """An event from a lookup value, "<stream id> <event JSON>"."""
    if not raw:
        return None
    sid, _, body = raw.partition(" ")
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    event["stream_id"] = sid
    return event


def _entry(sid: str, fields: dict[str, str]) -> Event | None:
    try:
        event = json.loads(fields.get("event", ""))
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    event["stream_id"] = sid
    return event


BLOCK_MS = 5000
"""How long the follower's XREAD blocks; a client given to the reader needs a socket timeout longer than this."""


class _Follower:
    """One blocking XREAD loop from the stream's tail that wakes the waiters of each client with a new entry."""

    def __init__(self, client: aioredis.Redis, stream: str, url: str, block_ms: int, link: LinkState | None):
        self._client = client
        self._stream = stream
        self._block_ms = block_ms
        self._link = link or LinkState(logger, url, f"stream reader {stream!r}")
        self._owns_link = link is None
        self._failing = False
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self._ready = asyncio.Event()
        self.last_id: str | None = None
        # Last: mitmproxy runs the loop with an eager task factory, so `_run` starts inside this call and reads
        # everything above before the constructor returns.
        self._task = asyncio.create_task(self._run(), name=f"captcha-fleet-follow:{stream}")

    async def ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ready.wait()), timeout)
        return self._ready.is_set()

    def add(self, client: str) -> asyncio.Event:
        event = asyncio.Event()
        self.waiters.setdefault(client, set()).add(event)
        return event

    def remove(self, client: str, event: asyncio.Event) -> None:
        waiting = self.waiters.get(client)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self.waiters[client]

    def _wake_all(self) -> None:
        for waiting in self.waiters.values():
            for event in waiting:
                event.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.last_id is None:
                    newest = cast(Entries, await self._client.xrevrange(self._stream, "+", "-", count=1))
                    self.last_id = newest[0][0] if newest else "0-0"
                    self._ready.set()
                    self._wake_all()  # a waiter that stopped waiting for this looked before the tail was known
                reply = cast(list[tuple[str, Entries]] | None,
                             await self._client.xread({self._stream: self.last_id}, count=SCAN_PAGE,
                                                      block=self._block_ms))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # A bug of ours is logged as one and leaves the link up; the loop backs off and retries either way.
                if self._link.failed(e, "; long polls of other proxies' clients wait for it"):
                    self._failing = True
                await asyncio.sleep(BACKOFF.compute(failures))
                failures += 1
                continue
            failures = 0
            if self._failing:
                self._failing = False
                if self._owns_link:
                    self._link.ok()
                self._wake_all()  # whatever changed meanwhile: let every waiter look again
            for _stream, entries in reply or []:
                for sid, fields in entries:
                    self.last_id = sid
                    for event in self.waiters.get(fields.get("client", ""), ()):
                        event.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class FleetReader:
    """Reads the fleet's lookups and stream. Methods raise redis errors (the caller falls back to local answers)."""

    def __init__(self, url: str | None = None, stream: str = DEFAULT_STREAM, *, client: aioredis.Redis | None = None,
                 block_ms: int = BLOCK_MS, link: LinkState | None = None):
        """`link`: share the event stream's (`RedisEventStream.link`) so an outage is logged once per proxy."""
        if url is None and client is None:
            raise ValueError("a Redis URL or client is needed")
        self.keys = FleetKeys(stream)
        self._url = (url or "").strip()
        self._client: aioredis.Redis = client if client is not None else connect(self._url,
                                                                                  socket_timeout=block_ms / 1000 + 5)
        self._own_client = client is None
        self._block_ms = block_ms
        self._follower: _Follower | None = None
        self._link = link

    @property
    def waiting(self) -> int:
        """Long polls waiting right now (tests wait on it; the stats may show it)."""
        f = self._follower
        return sum(len(w) for w in f.waiters.values()) if f else 0

    async def close(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None
        if self._own_client:
            await self._client.aclose()

    # -- single reads --------------------------------------------------------------------------------------------

    async def latest_final(self, client: str) -> Event | None:
        return _record(_text(await self._client.get(self.keys.client_final(client))))

    async def _finals(self, client: str) -> list[Event]:
        """The client's recent finals, newest first."""
        raw = cast(list[str], await self._client.lrange(self.keys.client_finals(client), 0, -1))
        return [e for e in map(_record, raw) if e is not None]

    async def final_of_newest(self, client: str) -> Event | None:
        """The final event of the client's newest captured challenge, or None while it is open (or none seen)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self.keys.client_newest(client))
        pipe.lrange(self.keys.client_finals(client), 0, -1)
        newest_raw, finals_raw = await pipe.execute()
        newest = _record(newest_raw)
        if newest is None:
            return None
        for final in filter(None, map(_record, finals_raw)):
            if final.get("challenge") == newest.get("challenge") and final.get("run") == newest.get("run"):
                return final
        return None

    async def final_after(self, client: str, after: Cursor) -> Event | None:
        """The oldest final of `client` after the cursor (see the module docstring), or None."""
        if isinstance(after, bool):
            raise TypeError("after must be a stream id, a (run, seq) pair or an int seq")
        if isinstance(after, int):
            head = _record(_text(await self._client.lindex(self.keys.client_events(client), 0)))
            if head is None or not isinstance(head.get("run"), str):
                return None
            after = (head["run"], after)
        finals = await self._finals(client)
        full = len(finals) >= FINALS_KEPT
        if isinstance(after, str):
            cursor = parse_stream_id(after)
            later = [e for e in finals if parse_stream_id(e["stream_id"]) > cursor]
            if not full or len(later) < len(finals):  # the list reaches back to the cursor
                return later[-1] if later else None
            return await self._scan(f"({after}", lambda e: e.get("client") == client and _final(e)) or (
                later[-1] if later else None)
        run, seq = after
        mine = [e for e in finals if e.get("run") == run]
        later = [e for e in mine if isinstance(e.get("seq"), int) and e["seq"] > seq]
        covered = not full or len(later) < len(mine)
        if covered:
            return later[-1] if later else None
        found = await self._scan("-", lambda e: (e.get("client") == client and e.get("run") == run and _final(e)
                                                 and isinstance(e.get("seq"), int) and e["seq"] > seq))
        return found or (later[-1] if later else None)

    async def _scan(self, start: str, match: Callable[[Event], bool]) -> Event | None:
        for _ in range(SCAN_PAGES):
            entries = cast(Entries, await self._client.xrange(self.keys.stream, start, "+", count=SCAN_PAGE))
            for sid, fields in entries:
                event = _entry(sid, fields)
                if event is not None and match(event):
                    return event
            if len(entries) < SCAN_PAGE:
                return None
            start = f"({entries[-1][0]}"
        return None

    async def newest_events(self, limit: int = 50, client: str | None = None) -> list[Event]:
        """Newest first. With `client`, at most the 100 the per-client list keeps."""
        if limit <= 0:
            return []
        if client is None:
            entries = cast(Entries, await self._client.xrevrange(self.keys.stream, "+", "-", count=limit))
            return [e for e in (_entry(sid, fields) for sid, fields in entries) if e is not None]
        raw = cast(list[str], await self._client.lrange(self.keys.client_events(client), 0, limit - 1))
        return [e for e in map(_record, raw) if e is not None]

    # -- the long poll -------------------------------------------------------------------------------------------

    async def wait_final(self, client: str, timeout: float, after: Cursor | None = None) -> Event | None:
        """`final_of_newest` (after=None) or `final_after`, waiting up to `timeout` s for it to be written."""
        deadline = time.monotonic() + timeout
        if self._follower is None:
            self._follower = _Follower(self._client, self.keys.stream, self._url or "redis://?", self._block_ms,
                                       self._link)
        follower = self._follower
        woke = follower.add(client)
        try:
            # Not ready within a second: Redis is likely gone, and the first look below says so (it raises) rather
            # than the whole timeout going by. Should the follower get ready later, it wakes every waiter once.
            await follower.ready(min(READY_WAIT_S, max(0.0, deadline - time.monotonic())))
            while True:
                woke.clear()
                found = await (self.final_of_newest(client) if after is None else self.final_after(client, after))
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(woke.wait(), left)
                except TimeoutError:
                    return None
        finally:
            follower.remove(client, woke)

    # -- the fleet's counters ------------------------------------------------------------------------------------

    async def fleet_stats(self, window_s: float = 60.0) -> dict[str, Any]:
        """The counters of every proxy that reported within `window_s` s (Redis clock), summed; `proxies` counts
        them and `runs` names them."""
        seconds, micros = await self._client.time()
        now_ms = seconds * 1000 + micros // 1000
        runs = cast(list[str], await self._client.zrangebyscore(self.keys.proxies, now_ms - window_s * 1000, "+inf"))
        pipe = self._client.pipeline(transaction=False)
        for run in runs:
            pipe.hgetall(self.keys.proxy(run))
        hashes: list[dict[str, str]] = await pipe.execute() if runs else []
        total: dict[str, Any] = {}
        live: list[str] = []
        for run, flat in zip(runs, hashes, strict=True):
            if flat:  # the hash expired although the index still names it
                live.append(run)
                add_flat(total, flat)
        total["proxies"] = len(live)
        total["runs"] = sorted(live)
        return total


class FleetAnswers:
    """The HTTP API's seam for other proxies' answers (``addon/publish/remote.py``) over a ``FleetReader``: the
    reader's Redis and socket errors become ``AnswersUnreachable``, so the API never handles Redis' own types."""

    def __init__(self, reader: FleetReader):
        self.reader = reader

    async def latest_final(self, client: str) -> Event | None:
        try:
            return await self.reader.latest_final(client)
        except REDIS_FAILURES as e:
            raise AnswersUnreachable(str(e)) from e

    async def wait_final(self, client: str, timeout: float, after: str | int | None = None) -> Event | None:
        try:
            return await self.reader.wait_final(client, timeout, after)
        except REDIS_FAILURES as e:
            raise AnswersUnreachable(str(e)) from e

    async def newest_events(self, limit: int = 50, client: str | None = None) -> list[Event]:
        try:
            return await self.reader.newest_events(limit, client)
        except REDIS_FAILURES as e:
            raise AnswersUnreachable(str(e)) from e

    async def fleet_stats(self, window_s: float = 60.0) -> dict[str, Any]:
        try:
            return await self.reader.fleet_stats(window_s)
        except REDIS_FAILURES as e:
            raise AnswersUnreachable(str(e)) from e


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _final(event: Event) -> bool:
    return event.get("event") in ("solved", "failed")
