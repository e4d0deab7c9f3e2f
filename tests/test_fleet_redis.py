"""Fleet mode's Redis parts against real redis-server processes (tests/kit/redis_server.py starts them).

Every test runs under the task factory the proxy runs under (mitmproxy's eager one, the `eager_tasks` fixture):
a part that starts a task before its state is set fails here as it would in the proxy."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from addon.fleet import FleetKeys, LinkState, connect, hash_tag, probe, redact_url, redis_failure, scrub, validate_url
from addon.fleet.heartbeat import Heartbeat
from addon.fleet.reader import FleetReader
from addon.fleet.shared import FleetSolveCoordinator, image_set_key, solve_shared
from addon.fleet.stream import RedisEventStream
from scripts.fleet_consumer import Consumer, ensure_group
from tests.kit.redis_server import RedisServer, RedisServers, redis_servers_fixture

STREAM = "captcha:events"
pytestmark = pytest.mark.usefixtures("eager_tasks")


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    yield from redis_servers_fixture(tmp_path)


async def until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Waits for `condition()` (plain or awaitable) to be true, polling briefly; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def event(run: str, seq: int, name: str = "captured", client: str = "dev-1", challenge: str | None = None,
          **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"seq": seq, "run": run, "event": name, "time": "2025-01-01T00:00:00.000Z",
                              "client": client, "challenge": challenge or f"ch-{run}-{seq}", "kind": "rotate"}
    if name == "solved":
        record.update(service="local", job_id=None, result="90", elapsed_ms=5,
                      answer={"value": 67.75, "fraction": 0.25, "angle": 90.0})
    record.update(extra)
    return record


async def entries(client: aioredis.Redis, stream: str = STREAM) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], await client.xrange(stream, "-", "+"))


def runs_and_seqs(got: list[tuple[str, dict[str, str]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _, fields in got:
        out.setdefault(fields["run"], []).append(int(fields["seq"]))
    return out


async def started(srv: RedisServer, **kw: Any) -> RedisEventStream:
    stream = RedisEventStream(srv.url, STREAM, **kw)
    stream.start()
    return stream


# -- the stream ----------------------------------------------------------------------------------------------------


async def test_three_publishers_each_in_order_exactly_once(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    publishers = [await started(srv, batch=32) for _ in range(3)]
    names = ("captured", "solving", "solved")
    sent: dict[str, list[dict[str, Any]]] = {f"run{p}": [] for p in range(3)}
    for seq in range(1, 201):
        for p, stream in enumerate(publishers):
            e = event(f"run{p}", seq, names[seq % 3], client=f"dev-{seq % 7}")
            sent[f"run{p}"].append(e)
            stream.publish(e)
        if seq % 50 == 0:
            await asyncio.sleep(0)  # let the writers run between bursts, as the proxy's loop would
    for stream in publishers:
        assert await stream.flushed(10)
        await stream.stop()
    client = connect(srv.url)
    got = await entries(client)
    assert runs_and_seqs(got) == {run: list(range(1, 201)) for run in sent}
    by_key = {(f["run"], int(f["seq"])): json.loads(f["event"]) for _, f in got}
    assert all(by_key[(run, e["seq"])] == e for run, events in sent.items() for e in events)
    assert {f["client"] for _, f in got} == {f"dev-{i}" for i in range(7)}
    assert sum(s.written for s in publishers) == 600 and sum(s.overflowed for s in publishers) == 0
    await client.aclose()


async def test_a_retried_batch_is_not_written_twice(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    first = await started(srv)
    for seq in range(1, 11):
        first.publish(event("runA", seq))
    assert await first.flushed(5)
    await first.stop()
    # the same run's events 5..15 again, as a batch retried after its reply was lost would send them
    again = await started(srv)
    for seq in range(5, 16):
        again.publish(event("runA", seq))
    assert await again.flushed(5)
    await again.stop()
    client = connect(srv.url)
    assert runs_and_seqs(await entries(client)) == {"runA": list(range(1, 16))}
    assert (again.written, again.skipped) == (5, 6)
    await client.aclose()


async def test_consumer_group_reads_each_entry_once_and_redelivers_after_a_crash(
        redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    stream = await started(srv)
    for seq in range(1, 121):
        stream.publish(event("runC", seq))
    assert await stream.flushed(5)
    await stream.stop()
    client = connect(srv.url)
    assert await ensure_group(client, STREAM, "orch") is True
    assert await ensure_group(client, STREAM, "orch") is False  # BUSYGROUP is fine
    handled: list[tuple[str, int]] = []

    def record(entry_id: str, e: dict[str, Any]) -> None:
        handled.append((e["run"], e["seq"]))

    # a consumer that read 5 entries and died for good, never acknowledging them
    await client.xreadgroup("orch", "ghost", {STREAM: ">"}, count=5)

    # consumer A crashes on the third event of its first batch of 10
    def crash_on_third(entry_id: str, e: dict[str, Any]) -> None:
        if len(handled) == 2:
            raise RuntimeError("crash")
        record(entry_id, e)

    crashing = Consumer(client, STREAM, "orch", "A", crash_on_third, count=10, block_ms=100)
    with pytest.raises(RuntimeError, match="crash"):
        await crashing.run(exit_when_idle=True)
    assert handled == [("runC", 6), ("runC", 7)]

    # A restarts under its own name and re-reads its pending entries; B takes over the ghost's (idle "long
    # enough" is 0 ms here, so B looks only once A is done: a claim must not steal what a live consumer holds)
    a = Consumer(client, STREAM, "orch", "A", record, count=10, block_ms=100)
    await a.recover()
    assert handled[2:] == [("runC", s) for s in range(8, 16)]
    b = Consumer(client, STREAM, "orch", "B", record, count=10, block_ms=100, claim_idle_ms=0)
    await b.recover()
    assert handled[10:] == [("runC", s) for s in range(1, 6)]
    b.claim_idle_ms = 60_000
    await asyncio.gather(a.run(exit_when_idle=True), b.run(exit_when_idle=True))
    assert Counter(handled) == Counter(("runC", s) for s in range(1, 121))
    assert a.handled > 0 and b.handled > 0
    pending = await client.xpending(STREAM, "orch")
    assert pending["pending"] == 0
    await client.aclose()


async def test_redis_killed_and_restarted_keeps_every_event_in_order(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="addon.fleet")
    srv = redis_servers.start(persist=True)
    stream = await started(srv)
    # every part shares the stream's link, so the proxy logs one line when Redis goes and one when it is back
    reader = FleetReader(srv.url, STREAM, link=stream.link)
    beat = Heartbeat(srv.url, "runK", lambda: {"captured": 1}, stream=STREAM, link=stream.link)
    fleet = FleetSolveCoordinator(connect(srv.url), STREAM, url=srv.url, link=stream.link)
    for seq in range(1, 51):
        stream.publish(event("runK", seq))
    assert await stream.flushed(5)
    assert await reader.wait_final("dev-1", timeout=0.01) is None  # the follower is up before the crash

    srv.kill()
    for seq in range(51, 151):
        stream.publish(event("runK", seq))
    await until(lambda: stream.down, "the writer to notice Redis is gone")
    assert stream.pending == 100
    assert not await beat.beat()
    assert await fleet.claim("k", "runK", ttl=5)  # fails open
    await asyncio.to_thread(srv.restart)
    assert await stream.flushed(10)

    client = connect(srv.url)
    assert runs_and_seqs(await entries(client)) == {"runK": list(range(1, 151))}
    mine = [r for r in caplog.records if r.name.startswith("addon.fleet")]
    warnings = [r for r in mine if r.levelno == logging.WARNING]
    infos = [r for r in mine if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "refused the connection" in warnings[0].getMessage()
    assert len(infos) == 1 and "wrote 100 held events late" in infos[0].getMessage()

    # the long poll's follower came back too: it wakes on an event written after the restart
    waiting = asyncio.create_task(reader.wait_final("dev-after", timeout=5))
    await until(lambda: reader.waiting == 1, "the long poll to register")
    stream.publish(event("runK", 151, "captured", client="dev-after", challenge="X"))
    stream.publish(event("runK", 152, "solved", client="dev-after", challenge="X"))
    got = await waiting
    assert got is not None and got["seq"] == 152 and got["challenge"] == "X"
    await stream.stop()
    await reader.close()
    await beat.stop()
    await fleet.redis.aclose()
    await client.aclose()


async def test_an_outage_seen_by_another_part_is_logged_once_by_the_idle_stream(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="addon.fleet")
    srv = redis_servers.start()
    stream = await started(srv)
    beat = Heartbeat(srv.url, "runH", lambda: {"captured": 1}, stream=STREAM, link=stream.link)
    assert await beat.beat()
    srv.kill()
    assert not await beat.beat()
    assert stream.down
    await asyncio.to_thread(srv.restart)
    await until(lambda: not stream.down, "the idle stream to find Redis back")
    assert await beat.beat()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("addon.fleet")]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert "is back" in lines[1][1]
    await stream.stop()
    await beat.stop()


async def test_backlog_overflow_drops_the_oldest_and_counts_them(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    srv.kill()
    stream = await started(srv, backlog=10)
    for seq in range(1, 26):
        stream.publish(event("runO", seq))
    assert (stream.overflowed, stream.pending) == (15, 10)
    assert stream.stats()["redis_overflowed"] == 15
    await asyncio.to_thread(srv.restart)
    assert await stream.flushed(10)
    client = connect(srv.url)
    assert runs_and_seqs(await entries(client)) == {"runO": list(range(16, 26))}
    await stream.stop()
    await client.aclose()


async def test_publish_never_raises_on_a_bad_event(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    stream = await started(srv)
    stream.publish({"event": "captured"})  # no run, no seq
    stream.publish(event("runB", 1, blob=object()))  # not JSON
    stream.publish(event("runB", 2))
    assert stream.rejected == 2
    assert await stream.flushed(5)
    await stream.stop()


# -- passwords and bad URLs ----------------------------------------------------------------------------------------


async def test_wrong_password_is_a_clear_error_without_the_password(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    right, wrong = "s3cret-Pass", "Wr0ng-Secret-xyz"
    srv = redis_servers.start(password=right)
    stream = RedisEventStream(srv.url_with(wrong), STREAM)
    assert wrong not in stream.url_shown and "***" in stream.url_shown
    stream.start()
    stream.publish(event("runP", 1))
    await until(lambda: stream.down, "the writer to give up on the password")
    message = await probe(srv.url_with(wrong))
    assert message is not None and "refused the credentials" in message
    await stream.stop(flush_timeout=0.1)
    for text in (caplog.text, message, capsys.readouterr().err):
        assert wrong not in text and right not in text
    assert "refused the credentials" in caplog.text
    assert await probe(srv.url) is None

    good = await started(srv)
    good.publish(event("runP", 1))
    assert await good.flushed(5)
    await good.stop()
    assert right not in caplog.text


async def test_bad_urls_are_refused_with_a_message_naming_the_problem() -> None:
    cases = {
        "not a url": "not a URL",
        "": "empty",
        "http://host:6379": "scheme",
        "redis://:hunter2@host:99999/0": "bad port",
        "redis://:hunter2@/0": "names no host",
        "redis://host/abc": "database number",
        "redis://:hunter2@host/0?bogus=1": "unknown parameter",
    }
    for url, problem in cases.items():
        with pytest.raises(ValueError, match=problem) as caught:
            validate_url(url)
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="not a URL"):
        RedisEventStream("not a url")
    assert validate_url(" redis://user:hunter2@host:6380/2 ") == "redis://user:***@host:6380/2"
    assert redact_url("rediss://hunter2@host") == "rediss://***@host"
    assert scrub("AUTH hunter2 and hunter%21", "redis://:hunter%21@h") == "AUTH hunter2 and ***"
    message = await probe("redis://:hunter2@nosuchhost.invalid:6379/0")
    assert message is not None and "unknown" in message and "nosuchhost.invalid" in message
    assert "hunter2" not in message


def test_keys_share_the_streams_hash_slot() -> None:
    keys = FleetKeys("captcha:events")
    assert keys.client_final("d 1") == "{captcha:events}:client:d 1:final"
    assert hash_tag(keys.paid) == hash_tag(keys.stream) == "captcha:events"
    tagged = FleetKeys("captcha:{fleet}:events")
    assert tagged.proxies == "{fleet}:proxies"
    with pytest.raises(ValueError):
        FleetKeys("bad{}name}")


# -- reading the fleet ---------------------------------------------------------------------------------------------


async def test_wait_final_wakes_on_the_event_and_cursors_walk_in_order(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    stream = await started(srv)
    reader = FleetReader(srv.url, STREAM)
    assert await reader.latest_final("dev-w") is None
    stream.publish(event("runW", 1, "captured", client="dev-w", challenge="A"))
    waiting = asyncio.create_task(reader.wait_final("dev-w", timeout=5))
    await until(lambda: reader.waiting == 1, "the long poll to register")
    solved = event("runW", 2, "solved", client="dev-w", challenge="A")
    stream.publish(solved)
    got = await waiting
    assert got is not None and {k: v for k, v in got.items() if k != "stream_id"} == solved

    # a new challenge is open: the newest has no final until its own arrives
    stream.publish(event("runW", 3, "captured", client="dev-w", challenge="B"))
    stream.publish(event("runW", 4, "captured", client="dev-other", challenge="Z"))
    assert await stream.flushed(5)
    assert await reader.final_of_newest("dev-w") is None
    waiting = asyncio.create_task(reader.wait_final("dev-w", timeout=5))
    await until(lambda: reader.waiting == 1, "the long poll to register")
    stream.publish(event("runW", 5, "solved", client="dev-other", challenge="Z"))  # another client's: no wake-up
    stream.publish(event("runW", 6, "failed", client="dev-w", challenge="B", reason="timeout", message="late"))
    got = await waiting
    assert got is not None and (got["event"], got["challenge"]) == ("failed", "B")

    # walking in order with the fleet cursor (stream id), with (run, seq) and with a plain seq
    first = await reader.final_after("dev-w", "0-0")
    assert first is not None and first["seq"] == 2
    second = await reader.final_after("dev-w", first["stream_id"])
    assert second is not None and second["seq"] == 6
    assert await reader.final_after("dev-w", second["stream_id"]) is None
    assert (await reader.final_after("dev-w", ("runW", 2)) or {}).get("seq") == 6
    assert (await reader.final_after("dev-w", 0) or {}).get("seq") == 2
    waiting = asyncio.create_task(reader.wait_final("dev-w", timeout=5, after=second["stream_id"]))
    await until(lambda: reader.waiting == 1, "the long poll to register")
    stream.publish(event("runW", 7, "captured", client="dev-w", challenge="C"))
    stream.publish(event("runW", 8, "solved", client="dev-w", challenge="C"))
    got = await waiting
    assert got is not None and got["seq"] == 8
    assert (await reader.latest_final("dev-w") or {}).get("seq") == 8

    newest = await reader.newest_events(3)
    assert [e["seq"] for e in newest] == [8, 7, 6]
    assert [e["seq"] for e in await reader.newest_events(50, client="dev-w")] == [8, 7, 6, 3, 2, 1]
    await stream.stop()
    await reader.close()


async def test_final_after_falls_back_to_the_stream_beyond_the_kept_finals(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    stream = await started(srv)
    for seq in range(1, 81):  # 80 finals: more than the 64 the per-client list keeps
        stream.publish(event("runF", seq, "solved", client="dev-f"))
    assert await stream.flushed(5)
    reader = FleetReader(srv.url, STREAM)
    assert (await reader.final_after("dev-f", "0-0") or {}).get("seq") == 1
    assert (await reader.final_after("dev-f", ("runF", 3)) or {}).get("seq") == 4
    assert (await reader.final_after("dev-f", ("runF", 70)) or {}).get("seq") == 71
    await stream.stop()
    await reader.close()


async def test_fleet_stats_sum_the_proxies_that_reported_within_a_minute(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    counters = [{"captured": 3, "solved": 2, "failed": {"timeout": 1}, "in_flight": 0, "note": "text is left out"},
                {"captured": 2, "solved": 1, "failed": {"timeout": 2, "api_error": 1}, "in_flight": 1}]
    beats = [Heartbeat(srv.url, f"run{i}", c.copy, stream=STREAM) for i, c in enumerate(counters)]
    assert all([await hb.beat() for hb in beats])
    client = connect(srv.url)
    keys = FleetKeys(STREAM)
    seconds, micros = await client.time()
    await client.hset(keys.proxy("stale"), mapping={"captured": 100})
    await client.zadd(keys.proxies, {"stale": seconds * 1000 + micros // 1000 - 120_000})
    reader = FleetReader(srv.url, STREAM)
    stats = await reader.fleet_stats()
    assert stats == {"captured": 5, "solved": 3, "failed": {"timeout": 3, "api_error": 1}, "in_flight": 1,
                     "proxies": 2, "runs": ["run0", "run1"]}
    assert 0 < await client.pttl(keys.proxy("run0")) <= 60_000

    ticking = Heartbeat(srv.url, "run2", lambda: {"captured": 1}, stream=STREAM, interval=10)
    ticking.start()
    await until(lambda: ticking.beats >= 1, "the first heartbeat")
    await ticking.stop()
    assert ticking.beats == 2  # the first at start, a last one at stop
    assert (await reader.fleet_stats())["captured"] == 6
    for hb in beats:
        await hb.stop()
    await reader.close()
    await client.aclose()


# -- shared solving ------------------------------------------------------------------------------------------------


async def test_claim_answer_and_takeover_when_the_owner_dies(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    clients = [connect(srv.url) for _ in range(3)]
    a, b, c = (FleetSolveCoordinator(r, STREAM) for r in clients)
    key = image_set_key("rotate", {"outer": "aa" * 32, "inner": "bb" * 32})
    assert key == image_set_key("rotate", {"inner": "bb" * 32, "outer": "aa" * 32})

    # the normal case: B waits for A's answer
    assert await a.claim(key, "A", ttl=10)
    assert await a.claim(key, "A", ttl=10)  # idempotent for its owner (a retried call)
    assert not await b.claim(key, "B", ttl=10)
    waiting = asyncio.create_task(b.wait_answer(key, timeout=5))
    assert await a.publish_answer(key, '{"angle": 90}', ttl=60)
    assert not await b.release(key, "B")  # not B's to drop
    assert await a.release(key, "A")
    assert await waiting == '{"angle": 90}'
    assert not await c.claim(key, "C", ttl=10)  # answered: nobody solves it again
    assert await c.cached_answer(key) == '{"angle": 90}'
    await c.drop_answer(key)
    assert await c.cached_answer(key) is None

    # the owner dies mid-job: its claim runs out, the waiter gets None and takes over
    dead = image_set_key("slide", {"background": "cc" * 32, "piece": "dd" * 32})
    assert await a.claim(dead, "A", ttl=0.3)
    assert not await b.claim(dead, "B", ttl=10)
    started_at = time.monotonic()
    assert await b.wait_answer(dead, timeout=5) is None
    assert time.monotonic() - started_at < 5  # ended by the claim's expiry, not by the timeout
    assert await b.claim(dead, "B", ttl=10)
    assert await b.renew(dead, "B", ttl=10) and not await a.renew(dead, "A", ttl=10)

    # the owner gives up without an answer: the waiter is told at once
    waiting = asyncio.create_task(c.wait_answer(dead, timeout=5))
    assert await b.release(dead, "B")
    assert await waiting is None
    for r in clients:
        await r.aclose()


async def test_solve_shared_solves_once_and_takes_over_from_a_dead_owner(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    clients = [connect(srv.url) for _ in range(3)]
    a, b, c = (FleetSolveCoordinator(r, STREAM) for r in clients)
    calls: list[str] = []
    release = asyncio.Event()

    def solver(who: str) -> Callable[[], Any]:
        async def solve() -> str:
            calls.append(who)
            await release.wait()  # the paid job's work, until the test lets it finish
            return json.dumps({"by": who})
        return solve

    # the same images on two proxies: one solve, both get its answer
    one = asyncio.create_task(solve_shared(a, "same", "A", 5, solver("A"), claim_ttl=3))
    await until(lambda: calls == ["A"], "A to start solving")
    two = asyncio.create_task(solve_shared(b, "same", "B", 5, solver("B"), claim_ttl=3))
    async def b_waits() -> bool:
        subscribed = await c.redis.pubsub_numsub(c.keys.answer("same"))
        return bool(subscribed[0][1])

    await until(b_waits, "B to wait on A's answer")
    release.set()
    assert await one == ('{"by": "A"}', True)
    assert await two == ('{"by": "A"}', False)
    assert await solve_shared(c, "same", "C", 5, solver("C")) == ('{"by": "A"}', False)  # from the cache
    assert calls == ["A"]

    # the owner dies mid-job (its claim is never renewed nor released): the other proxy finishes the job
    assert await a.claim("orphan", "dead-A", ttl=0.3)
    assert await solve_shared(b, "orphan", "B", 5, solver("B")) == ('{"by": "B"}', True)
    assert calls == ["A", "B"]
    for r in clients:
        await r.aclose()


class CountingRenewals(FleetSolveCoordinator):
    """A coordinator that tells the test each time it renewed a claim."""

    def __init__(self, redis: aioredis.Redis, stream: str, enough: int):
        super().__init__(redis, stream)
        self.renewals = 0
        self.enough = enough
        self.renewed_enough = asyncio.Event()

    async def renew(self, image_key: str, owner: str, ttl: float) -> bool:
        held = await super().renew(image_key, owner, ttl)
        self.renewals += held
        if self.renewals >= self.enough:
            self.renewed_enough.set()
        return held


async def test_a_solve_longer_than_its_claims_ttl_is_not_taken_over(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    srv = redis_servers.start()
    ttl = 0.3
    # Renewed every ttl / 3: the sixth renewal comes two whole TTLs after the claim, so a claim that were not
    # renewed would have run out twice over by the time A's solve ends.
    a = CountingRenewals(connect(srv.url), STREAM, enough=6)
    b = FleetSolveCoordinator(connect(srv.url), STREAM)
    calls: list[str] = []
    b_solving = asyncio.Event()

    async def a_solves() -> str:
        calls.append("A")
        waits = [asyncio.ensure_future(a.renewed_enough.wait()), asyncio.ensure_future(b_solving.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in pending:
            waiting.cancel()
        return '{"by": "A"}'

    async def b_solves() -> str:
        calls.append("B")  # B took the image set over from a live owner: a second paid job
        b_solving.set()
        return '{"by": "B"}'

    async with asyncio.timeout(20):
        one = asyncio.create_task(solve_shared(a, "long", "A", 30, a_solves, claim_ttl=ttl))
        await until(lambda: calls == ["A"], "A to start solving")
        two = asyncio.create_task(solve_shared(b, "long", "B", 30, b_solves, claim_ttl=ttl))
        assert await one == ('{"by": "A"}', True)
        assert await two == ('{"by": "A"}', False)
    assert calls == ["A"] and a.renewals >= 6
    assert not [r for r in caplog.records if "lost the claim" in r.getMessage()]
    await a.redis.aclose()
    await b.redis.aclose()


async def test_paid_slots_are_capped_across_three_owners(redis_servers: RedisServers) -> None:
    srv = redis_servers.start()
    clients = [connect(srv.url) for _ in range(3)]
    proxies = [FleetSolveCoordinator(r, STREAM) for r in clients]
    holding = 0
    most = 0
    acquired = 0

    async def job(fleet: FleetSolveCoordinator, owner: str) -> None:
        nonlocal holding, most, acquired
        assert await fleet.wait_paid_slot(2, owner, ttl=5, timeout=10)
        acquired += 1
        holding += 1
        most = max(most, holding)
        await asyncio.sleep(0.02)  # the paid job's work
        holding -= 1
        await fleet.release_paid_slot(owner)

    await asyncio.gather(*(job(p, f"p{i}:job{j}") for i, p in enumerate(proxies) for j in range(4)))
    assert (acquired, most) == (12, 2)

    # a holder that dies: its lease runs out and the slot comes free
    a, b, c = proxies
    assert await a.acquire_paid_slot(1, "dead", ttl=0.3)
    assert not await b.acquire_paid_slot(1, "live", ttl=5)
    assert await a.acquire_paid_slot(1, "dead", ttl=0.3)  # a holder asking again keeps its slot
    assert await c.wait_paid_slot(1, "live", ttl=5, timeout=5)
    assert await c.paid_holders() == 1
    assert await c.renew_paid_slot("live", ttl=5) and not await c.renew_paid_slot("dead", ttl=5)
    for r in clients:
        await r.aclose()


async def test_shared_solving_fails_open_when_redis_is_down(redis_servers: RedisServers,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="addon.fleet")
    srv = redis_servers.start()
    client = connect(srv.url)
    fleet = FleetSolveCoordinator(client, STREAM, url=srv.url)
    srv.kill()
    assert await fleet.claim("k", "A", ttl=5)
    assert await fleet.cached_answer("k") is None
    assert await fleet.wait_answer("k", timeout=1) is None
    assert await fleet.acquire_paid_slot(1, "A", ttl=5)
    warnings = [r for r in caplog.records if r.name == "addon.fleet.shared" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    await asyncio.to_thread(srv.restart)
    assert await fleet.claim("k", "A", ttl=5)
    assert any(r.name == "addon.fleet.shared" and "is back" in r.getMessage() for r in caplog.records)
    await client.aclose()




# -- a healthy fleet under the proxy's task factory, and bugs of ours told from Redis failing ----------------------


def fleet_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("addon.fleet") and r.levelno >= level]


async def test_every_part_starts_under_the_eager_task_factory_without_a_false_outage(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    assert asyncio.get_running_loop().get_task_factory() is asyncio.eager_task_factory  # as in mitmdump
    caplog.set_level(logging.INFO, logger="addon.fleet")
    srv = redis_servers.start(password="pw-eager")
    stream = await started(srv)
    went_down: list[bool] = []
    stream.link.on_down.append(lambda: went_down.append(True))
    beat = Heartbeat(srv.url, "runE", lambda: {"captured": 1}, stream=STREAM, interval=10, link=stream.link)
    beat.start()
    reader = FleetReader(srv.url, STREAM, link=stream.link)
    fleet = FleetSolveCoordinator(connect(srv.url), STREAM, url=srv.url, link=stream.link)

    # The first long poll starts the follower (its task runs inside its constructor here), then wakes on an entry.
    waiting = asyncio.create_task(reader.wait_final("dev-e", timeout=5))
    await until(lambda: reader.waiting == 1, "the long poll to register")
    stream.publish(event("runE", 1, "captured", client="dev-e", challenge="E"))
    stream.publish(event("runE", 2, "solved", client="dev-e", challenge="E"))
    got = await waiting
    assert got is not None and got["seq"] == 2
    await until(lambda: beat.beats >= 1, "the first heartbeat")
    release = asyncio.Event()

    async def solve() -> str:
        await release.wait()
        return '{"angle": 1}'

    solving = asyncio.create_task(solve_shared(fleet, "eager-set", "E", 5, solve, claim_ttl=5))
    await until(lambda: fleet.redis.exists(fleet.keys.claim("eager-set")), "the claim")
    release.set()
    assert await solving == ('{"angle": 1}', True)

    await beat.stop()
    await reader.close()
    await stream.stop()
    await fleet.redis.aclose()
    assert fleet_records(caplog, logging.INFO) == [], [r.getMessage() for r in fleet_records(caplog, logging.INFO)]
    assert (went_down, stream.link.internal_errors) == ([], 0)


def test_redis_failures_are_told_by_exception_type() -> None:
    for failure in (RedisConnectionError("Connection closed by server."), RedisTimeoutError("Timeout reading"),
                    ResponseError("OOM command not allowed"), ConnectionRefusedError(111, "refused"),
                    TimeoutError()):
        assert redis_failure(failure), failure
    # A bug of ours, whatever its text says: never "Redis is down".
    for bug in (AttributeError("'_Follower' object has no attribute 'last_id'"), TypeError("Connection refused"),
                KeyError("x"), DataError("Invalid input of type: 'NoneType'"), ValueError("Error 111 ")):
        assert not redis_failure(bug), bug


async def test_a_bug_in_a_redis_part_is_an_internal_error_not_an_outage(
        redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="addon.fleet")
    srv = redis_servers.start(password="pw-bug-7")
    link = LinkState(logging.getLogger("addon.fleet.test"), srv.url, "")
    went_down: list[bool] = []
    link.on_down.append(lambda: went_down.append(True))

    def broken_counters() -> dict[str, Any]:
        raise TypeError(f"a counter that cannot be read (pw-bug-7 in {srv.url})")

    beat = Heartbeat(srv.url, "runB", broken_counters, stream=STREAM, link=link)
    assert not await beat.beat()
    assert not await beat.beat()  # the part retries; the second line waits out the rate limit
    assert (link.down, went_down, link.internal_errors) == (False, [], 2)
    errors = fleet_records(caplog, logging.ERROR)
    assert len(errors) == 1 and fleet_records(caplog) == errors
    text = errors[0].getMessage()
    assert "internal error" in text and "TypeError" in text and "Traceback" in text and "broken_counters" in text
    assert "pw-bug-7" not in text and "Redis at" in text and "is down" not in text

    # Redis failing is still an outage, one line, and the link comes back.
    srv.kill()
    healthy = Heartbeat(srv.url, "runB", lambda: {"captured": 1}, stream=STREAM, link=link)
    assert not await healthy.beat()
    assert link.down and went_down == [True]
    warnings = [r for r in fleet_records(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refused the connection" in warnings[0].getMessage()
    await beat.stop()
    await healthy.stop()


async def test_the_apis_view_of_the_fleet_says_unreachable_for_redis_failures_only() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from addon.fleet.reader import FleetAnswers
    from addon.publish.remote import AnswersUnreachable

    class Reader:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        async def latest_final(self, *args: Any) -> None:
            raise self.error

        wait_final = newest_events = fleet_stats = latest_final

    gone = FleetAnswers(Reader(RedisConnectionError("gone")))  # type: ignore[arg-type]
    for call in (gone.latest_final("c"), gone.wait_final("c", 1.0), gone.newest_events(5, "c"), gone.fleet_stats()):
        with pytest.raises(AnswersUnreachable):
            await call
    with pytest.raises(AttributeError):  # a bug of ours stays a bug, not "the fleet is down"
        await FleetAnswers(Reader(AttributeError("x"))).latest_final("c")  # type: ignore[arg-type]


# -- the fleet addon: one Redis client per proxy, restarts one at a time -------------------------------------------


async def test_the_fleet_addon_shares_one_client_and_runs_quick_restarts_one_at_a_time(
        redis_servers: RedisServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mitmproxy.test import taddons

    from addon.mitm.fleet import CaptchaFleet
    from addon.wiring import build_addons

    monkeypatch.chdir(tmp_path)  # the default sidecar file lands here
    srv = redis_servers.start()
    addons = build_addons()
    fleet = next(a for a in addons if isinstance(a, CaptchaFleet))
    with taddons.context(*addons) as tctx:
        tctx.configure(fleet, captcha_redis=srv.url, captcha_solvers="none")
        await fleet.running()
        assert fleet.redis is not None and fleet.stream is not None and fleet.reader is not None
        assert fleet.coordinator is not None and fleet.heartbeat is not None
        parts = [fleet.stream._client, fleet.reader._client, fleet.coordinator.redis, fleet.heartbeat._client]
        assert all(part is fleet.redis for part in parts)
        await until(lambda: fleet.heartbeat is not None and fleet.heartbeat.beats >= 1, "the first heartbeat")
        first = fleet.redis

        running, most, ran = 0, 0, []
        restart = fleet._restart

        async def counted() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await restart()
            finally:
                running -= 1
                ran.append(tctx.options.captcha_redis_stream)

        monkeypatch.setattr(fleet, "_restart", counted)
        for name in ("fleet-a", "fleet-b", "fleet-c"):  # three quick changes, as from mitmweb's options page
            tctx.options.update(captcha_redis_stream=name)
        assert fleet._restarting is not None
        await fleet._restarting
        # One at a time; the second is skipped, since the third follows it with the newer value.
        assert (most, ran) == (1, ["fleet-c", "fleet-c"])
        assert fleet.stream is not None and fleet.stream.keys.stream == "fleet-c"
        assert fleet.redis is not None and fleet.redis is not first and fleet.stream._client is fleet.redis
        await fleet.done()
        assert fleet.redis is None and fleet.stream is None
