"""An orchestrator's reader of the fleet's event stream: a consumer group, at-least-once, resumable after a crash.

    uv run python scripts/fleet_consumer.py --url redis://:PASSWORD@host:6379/0 --group orchestrator

What it does, in order:
1. `XGROUP CREATE <stream> <group> <start id> MKSTREAM` (a group that already exists, BUSYGROUP, is fine);
2. re-reads this consumer's own pending entries (`XREADGROUP ... 0`): what it had read but not acknowledged when
   it stopped or crashed, so a crash mid-batch re-delivers;
3. takes over entries other consumers of the group left pending for longer than `--claim-idle-ms`
   (`XAUTOCLAIM`): a consumer that died for good does not strand its entries;
4. then reads new entries (`XREADGROUP ... >`), prints each event as one JSON line and acknowledges it (`XACK`)
   once handled.

Delivery is at least once: an entry handled but not yet acknowledged when the process dies is delivered again.
Each event carries `run` and `seq` (unique per proxy run), so a handler dedupes on (run, seq); this script keeps
the last 100,000 in memory (a real orchestrator keeps them where it keeps its results). Keep `--consumer`
stable across restarts (the default is the host name) so step 2 finds its own pending entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

if __package__ in (None, ""):  # run as a file: the project root holds the addon package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from addon.fleet import DEFAULT_STREAM, connect, describe_error, validate_url

Event = dict[str, Any]
Handler = Callable[[str, Event], Awaitable[None] | None]
Entries = list[tuple[str, dict[str, str] | None]]


class Seen:
    """The last `size` (run, seq) pairs handled."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._keys: OrderedDict[tuple[str, int], None] = OrderedDict()

    def add(self, run: str, seq: int) -> bool:
        """False when (run, seq) was already handled."""
        key = (run, seq)
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Creates the group (and the stream); False when it was already there."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise
    return True


class Consumer:
    def __init__(self, client: aioredis.Redis, stream: str, group: str, name: str, handle: Handler, *,
                 count: int = 100, block_ms: int = 5000, claim_idle_ms: int = 60_000, seen: Seen | None = None):
        self.client = client
        self.stream = stream
        self.group = group
        self.name = name
        self.handle = handle
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.seen = seen if seen is not None else Seen()
        self.handled = 0
        self.duplicates = 0

    async def _process(self, entries: Entries) -> None:
        for entry_id, fields in entries:
            if fields:  # None: trimmed away (MAXLEN) while pending; only the acknowledgement is left to do
                await self._one(entry_id, fields)
            await self.client.xack(self.stream, self.group, entry_id)

    async def _one(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            event = json.loads(fields.get("event", ""))
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        run, seq = fields.get("run", ""), fields.get("seq", "")
        if not self.seen.add(run, int(seq) if seq.isdigit() else -1):
            self.duplicates += 1
            return
        result = self.handle(entry_id, event)
        if result is not None:
            await result
        self.handled += 1

    async def recover(self) -> None:
        """Steps 2 and 3: own pending entries, then entries idle too long at other consumers."""
        last = "0"
        while True:
            reply = cast(list[tuple[str, Entries]],
                         await self.client.xreadgroup(self.group, self.name, {self.stream: last}, count=self.count))
            entries = reply[0][1] if reply else []
            if not entries:
                break
            await self._process(entries)
            last = entries[-1][0]
        cursor = "0-0"
        while True:
            result = await self.client.xautoclaim(self.stream, self.group, self.name, self.claim_idle_ms,
                                                  start_id=cursor, count=self.count)
            cursor, claimed = result[0], cast(Entries, result[1])
            await self._process(claimed)
            if cursor == "0-0":
                break

    async def read_new(self) -> int:
        """One XREADGROUP of new entries (blocking up to block_ms); how many entries it got."""
        reply = cast(list[tuple[str, Entries]],
                     await self.client.xreadgroup(self.group, self.name, {self.stream: ">"}, count=self.count,
                                                  block=self.block_ms))
        entries = reply[0][1] if reply else []
        await self._process(entries)
        return len(entries)

    async def run(self, *, exit_when_idle: bool = False, max_events: int | None = None) -> None:
        await self.recover()
        while max_events is None or self.handled < max_events:
            if await self.read_new() == 0 and exit_when_idle:
                return


def _print(entry_id: str, event: Event) -> None:
    print(json.dumps(event, ensure_ascii=False), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                epilog="Prints one JSON event per line on stdout; errors go to stderr.")
    p.add_argument("--url", default=os.environ.get("CAPTCHA_REDIS", "redis://127.0.0.1:6379/0"),
                   help="Redis URL (default: $CAPTCHA_REDIS or redis://127.0.0.1:6379/0)")
    p.add_argument("--stream", default=DEFAULT_STREAM, help=f"the fleet's stream (default {DEFAULT_STREAM})")
    p.add_argument("--group", default="orchestrator", help="consumer group (default orchestrator)")
    p.add_argument("--consumer", default=socket.gethostname(),
                   help="this consumer's name, stable across restarts (default: the host name)")
    p.add_argument("--start-id", default="0",
                   help="where a new group starts: 0 = the whole stream (default), $ = only new entries")
    p.add_argument("--count", type=int, default=100, help="entries per read (default 100)")
    p.add_argument("--block-ms", type=int, default=5000, help="how long one read waits for entries (default 5000)")
    p.add_argument("--claim-idle-ms", type=int, default=60_000,
                   help="take over entries other consumers left pending this long (default 60000); keep it well "
                        "above the longest a handler takes, or a live consumer's entries are taken and handled twice")
    p.add_argument("--exit-when-idle", action="store_true", help="exit after a read that found nothing new")
    p.add_argument("--max-events", type=int, default=None, help="exit after handling this many events")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    try:
        validate_url(args.url)
    except ValueError as e:
        print(f"fleet_consumer: {e}", file=sys.stderr)
        return 2
    client = connect(args.url, socket_timeout=args.block_ms / 1000 + 5)
    consumer = Consumer(client, args.stream, args.group, args.consumer, _print, count=args.count,
                        block_ms=args.block_ms, claim_idle_ms=args.claim_idle_ms)
    delay = 0.0
    said = ""
    try:
        while True:
            try:
                await ensure_group(client, args.stream, args.group, args.start_id)
                if said:
                    print("fleet_consumer: connected", file=sys.stderr)
                    said = ""
                await consumer.run(exit_when_idle=args.exit_when_idle, max_events=args.max_events)
                return 0
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
                delay = min(2.0, max(0.1, delay * 2))
                message = describe_error(e, args.url)
                if message != said:  # once per outage, not once per retry
                    print(f"fleet_consumer: {message}; retrying", file=sys.stderr)
                    said = message
                await asyncio.sleep(delay)
            except aioredis.RedisError as e:
                print(f"fleet_consumer: {describe_error(e, args.url)}", file=sys.stderr)
                return 1
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(main_async(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
