"""End to end, fleet mode: real mitmdump processes against a real redis-server (tests/kit/redis_server.py), devices
sending real traffic through them, and the fake solving service.

One fleet of three proxies (A, B, C) on one Redis serves the first four tests, in file order; the shared-solving
test kills a proxy, so it comes last of them (a test that finds a proxy dead starts it again). The bad-URL test
starts proxies of its own. Every wait is on a condition (an answer, a count, a log line), never on the clock.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from addon.fleet import connect
from addon.fleet.shared import CLAIM_TTL_S
from scripts.bench_fleet import plain_manifest
from scripts.fleet_consumer import Consumer, ensure_group
from tests.kit.device import Challenge, Device
from tests.kit.e2e import KEY, read_events
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpProcess
from tests.kit.redis_server import RedisServer, RedisServers

pytestmark = pytest.mark.timeout(240)

STREAM = "captcha:events"
PREFIX = "{" + STREAM + "}:"
PER_MODE = 100
"""Whirl and slide challenges each, all with images of their own: no test meets another's answers in a cache."""
Entries = list[tuple[str, dict[str, str]]]
Json = dict[str, Any]


# -- challenges, proxies, the fleet ----------------------------------------------------------------------------------


@dataclass
class Kit:
    origin: OriginServer
    fake: FakeOmocaptcha

    def paid_jobs(self) -> list[Json]:
        return [e for e in self.fake.log() if str(e.get("path", "")).endswith("/createJob")]


@dataclass
class Node:
    name: str
    directory: Path
    proxy: MitmdumpProcess

    def events(self) -> list[Json]:
        return read_events(self.directory / "events.jsonl")

    def run(self) -> str:
        """This proxy's current run id (the newest event's; the proxy writes none before its first challenge)."""
        events = self.events()
        assert events, f"proxy {self.name} has no event yet"
        return str(events[-1]["run"])

    def log_lines(self, start: int = 0) -> list[str]:
        """The proxy's own output (the test kit's command line, which holds every option value, left out)."""
        return [line for line in self.proxy.log_text()[start:].splitlines() if not line.startswith("--- testkit:")]


@dataclass
class Rig:
    kit: Kit
    redis: RedisServer
    nodes: list[Node]
    marks: dict[str, int] = field(default_factory=dict)
    """Per proxy, how much of its log the tests before this one have looked at (a proxy's log only grows)."""

    def revive(self) -> None:
        dead = [n.proxy for n in self.nodes if not n.proxy.running]
        for proxy in dead:
            proxy.stop()
        start_all(dead)

    def assert_no_redis_failure(self) -> None:
        """With Redis up the whole test, no proxy said a word about the fleet's link: no "Redis ... failed" (false or
        not), no "is back", no internal error, no lost claim. Proxy start-up counts, for the first test."""
        for node in self.nodes:
            lines = [line for line in node.log_lines(self.marks.get(node.name, 0)) if "captcha fleet" in line]
            assert lines == [], (node.name, lines)


def options(kit: Kit, directory: Path, redis_url: str) -> dict[str, Any]:
    return {"captcha_sidecar": str(directory / "events.jsonl"), "captcha_solvers": "omocaptcha",
            "omocaptcha_key": KEY, "omocaptcha_url": kit.fake.base_url, "captcha_poll_ms": 50,
            "captcha_redis": redis_url, "flow_detail": 0}


def mitmdump(kit: Kit, directory: Path, redis_url: str) -> MitmdumpProcess:
    return MitmdumpProcess(["addon/main.py"], origin=(kit.origin.http_port, kit.origin.https_port),
                           options=options(kit, directory, redis_url), workdir=directory / "mitm")


def start_all(procs: Iterable[MitmdumpProcess]) -> None:
    """Starts them side by side (a mitmdump takes seconds to import its addons on this machine)."""
    todo = list(procs)
    if todo:
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(lambda p: p.start(), todo))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    d = tmp_path_factory.mktemp("fleet-challenges")
    plain_manifest(d, PER_MODE)
    with OriginServer(d) as origin, FakeOmocaptcha(keys=(KEY,), manifests=(str(d),)) as fake:
        yield Kit(origin, fake)


@pytest.fixture(scope="module")
def rig(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("fleet")
    servers = RedisServers(base / "redis")
    try:
        # Persistent, every write on disk before its reply: a SIGKILLed Redis comes back with all it acknowledged.
        srv = servers.start(persist=True)
        nodes = [Node(name, base / name, mitmdump(kit, base / name, srv.url)) for name in "ABC"]
        try:
            start_all(n.proxy for n in nodes)
            yield Rig(kit, srv, nodes)
        finally:
            for n in nodes:
                n.proxy.stop()
    finally:
        servers.stop_all()


@pytest.fixture
def fleet(rig: Rig) -> Iterator[Rig]:
    rig.revive()
    rig.kit.fake.control(solve_seconds=0)
    yield rig
    rig.marks = {n.name: len(n.proxy.log_text()) for n in rig.nodes}


# -- helpers -------------------------------------------------------------------------------------------------------


async def until(condition: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.05) -> Any:
    """Waits for `condition()` (plain or awaitable) to be truthy and returns it; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


async def solve_one(dev: Device, mode: str, shape: str = "single") -> tuple[Challenge, Json]:
    """A phone's round: the get, both images, then its answer from its own proxy's long poll."""
    ch = await dev.get_challenge(mode, shape=shape)
    await dev.fetch_images(ch, order="normal")
    return ch, await own_answer(dev, ch)


async def own_answer(dev: Device, ch: Challenge) -> Json:
    r = await dev.api("/v1/answer/wait", timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    event = cast(Json, r.json())
    assert (event["challenge"], event["event"]) == (ch.id, "solved"), event
    return event


async def same_images(kit: Kit, first: Device, second: Device, mode: str) -> tuple[Challenge, Challenge]:
    """Two gets, one per device, that show the same images under two ids: the origin hands a mode's challenges
    out in turn and starts over under fresh ids, so the ones in between are handed out here, unused."""
    one = await first.get_challenge(mode)
    for _ in range(PER_MODE - 1):
        kit.origin.app.next_challenge(mode)
    two = await second.get_challenge(mode)
    assert two.id != one.id and two.urls() == one.urls()
    return one, two


async def stream_entries(r: aioredis.Redis) -> Entries:
    return cast(Entries, await r.xrange(STREAM, "-", "+"))


def sidecar_runs(nodes: Iterable[Node]) -> dict[str, list[Json]]:
    """Every event of the live proxies' sidecars, by run, in file order."""
    runs: dict[str, list[Json]] = {}
    for node in nodes:
        if node.proxy.running:
            for event in node.events():
                runs.setdefault(str(event["run"]), []).append(event)
    return runs


async def settled(rig: Rig, r: aioredis.Redis) -> tuple[Entries, dict[str, list[Json]]]:
    """The stream and the sidecars once each live proxy's stream holds as many events as its sidecar."""
    async def caught_up() -> tuple[Entries, dict[str, list[Json]]] | None:
        sidecars = sidecar_runs(rig.nodes)
        entries = await stream_entries(r)
        counts = Counter(fields["run"] for _, fields in entries)
        return (entries, sidecars) if all(counts[run] == len(ev) for run, ev in sidecars.items()) else None

    return cast(tuple[Entries, dict[str, list[Json]]], await until(caught_up, "every sidecar event in the stream"))


def assert_stream_matches_sidecars(entries: Entries, sidecars: dict[str, list[Json]]) -> None:
    """Each proxy's events in the stream: all of them, each once, in the proxy's own order, unchanged."""
    keys = Counter((fields["run"], int(fields["seq"])) for _, fields in entries)
    assert [key for key, n in keys.items() if n > 1] == []
    for run, events in sidecars.items():
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        mine = [(fields, json.loads(fields["event"])) for _, fields in entries if fields["run"] == run]
        assert [event for _, event in mine] == events
        assert all((f["seq"], f["client"]) == (str(e["seq"]), e["client"]) for f, e in mine)


def api_clients(rig: Rig, block: int) -> list[Device]:
    """One client per proxy for its API (stats); addresses of their own, never a device's."""
    return [Device(f"127.0.{block}.{200 + i}", n.proxy.proxy_url, n.proxy.ca_path) for i, n in enumerate(rig.nodes)]


async def close(devices: Iterable[Device]) -> None:
    await asyncio.gather(*(d.aclose() for d in devices), return_exceptions=True)


# -- 1. the stream ------------------------------------------------------------------------------------------------


async def test_every_event_of_every_proxy_is_in_the_stream_once_in_order(fleet: Rig) -> None:
    nodes = fleet.nodes
    devices = [Device(f"127.0.11.{i + 1}", nodes[i % 3].proxy.proxy_url, nodes[i % 3].proxy.ca_path)
               for i in range(30)]
    answers: dict[str, list[Json]] = {}

    async def phone(i: int, dev: Device) -> None:
        for k in range(2):
            _, answer = await solve_one(dev, ("whirl", "slide")[(i + k) % 2], ("single", "list", "edata")[(i + k) % 3])
            answers.setdefault(dev.ip, []).append(answer)

    try:
        await asyncio.gather(*(phone(i, d) for i, d in enumerate(devices)))
    finally:
        await close(devices)
    r = connect(fleet.redis.url)
    try:
        entries, sidecars = await settled(fleet, r)
        assert_stream_matches_sidecars(entries, sidecars)
        in_stream = {(f["run"], int(f["seq"])): json.loads(f["event"]) for _, f in entries}
        for i, dev in enumerate(devices):  # each device's answers, from the run of the proxy it went through
            runs = {e["run"] for e in nodes[i % 3].events()}
            assert all(a["run"] in runs and in_stream[(a["run"], a["seq"])] == a for a in answers[dev.ip])
        kinds = Counter(e["kind"] for e in in_stream.values() if e["event"] == "solved")
        assert kinds["rotate"] >= 30 and kinds["slide"] >= 30

        # An orchestrator's consumer group (scripts/fleet_consumer.py), two consumers: each entry handled once.
        group = "orchestrator-e2e"
        assert await ensure_group(r, STREAM, group)
        handled: list[tuple[str, int]] = []
        consumers = [Consumer(r, STREAM, group, name, lambda _id, e: handled.append((e["run"], e["seq"])),
                              count=50, block_ms=200) for name in ("one", "two")]
        await asyncio.gather(*(c.run(exit_when_idle=True) for c in consumers))
        assert Counter(handled) == Counter(in_stream.keys()) and len(handled) == len(entries)
        assert sum(c.duplicates for c in consumers) == 0
        assert (await r.xpending(STREAM, group))["pending"] == 0
    finally:
        await r.aclose()
    fleet.assert_no_redis_failure()


# -- 2. answers for a device on another proxy ----------------------------------------------------------------------


async def blocked_xreads(r: aioredis.Redis) -> int:
    return sum(1 for c in await r.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def test_any_proxy_answers_for_a_device_on_another(fleet: Rig) -> None:
    a, _, c = fleet.nodes
    device = Device("127.0.12.1", c.proxy.proxy_url, c.proxy.ca_path)
    watcher = Device("127.0.12.2", a.proxy.proxy_url, a.proxy.ca_path)
    apis = api_clients(fleet, 12)
    r = connect(fleet.redis.url)
    try:
        # The watcher's long poll on A starts before the device has even asked for a challenge; A's stream reader
        # starts with it, so a blocked XREAD in Redis says the poll is in and has found nothing.
        assert await blocked_xreads(r) == 0, "A's stream reader must start with this long poll"
        polling = asyncio.create_task(watcher.api("/v1/answer/wait", client=device.ip, timeout=10))
        await until(lambda: blocked_xreads(r), "A's long poll to wait on the stream")
        _, own = await solve_one(device, "whirl")
        response = await polling
        assert response.status_code == 200, response.text
        woken = response.json()
        assert woken.pop("stream_id") and woken == own

        got = (await watcher.api("/v1/answer", client=device.ip)).json()
        assert got.pop("stream_id") and got == own
        later = await watcher.api("/v1/answer/wait", client=device.ip, after=response.json()["stream_id"], timeout=0)
        assert later.status_code == 204
        remote_events = (await watcher.api("/v1/events", client=device.ip)).json()["events"]
        own_events = (await device.api("/v1/events", client=device.ip)).json()["events"]
        assert [e.pop("stream_id") and e for e in remote_events] == own_events
        assert [e["event"] for e in own_events] == ["solved", "solving", "captured"]

        # The fleet's counters: the three proxies' own, summed (each reports about a second after its last event).
        names = ("captured", "solved", "expired", "verified", "jobs_sent", "in_flight")
        own_stats = [(await api.api("/v1/stats")).json() for api in apis]
        want = {name: sum(s[name] for s in own_stats) for name in names}
        want["proxies"] = 3

        async def fleet_sum() -> Json | None:
            stats = cast(Json, (await watcher.api("/v1/stats", scope="fleet")).json())
            return stats if {k: stats.get(k, 0) for k in want} == want else None

        # Well within the heartbeat's 10-s interval: a proxy reports again about a second after an event.
        summed = await until(fleet_sum, f"/v1/stats?scope=fleet to sum the proxies' own counters {want}", timeout=6)
        assert {n.run() for n in fleet.nodes if n.events()} <= set(summed["runs"]) and len(summed["runs"]) == 3
        assert want["captured"] >= 1 and want["solved"] == want["captured"]
    finally:
        await close([device, watcher, *apis])
        await r.aclose()
    # The long poll for a device on another proxy started A's stream reader (its first cross-proxy poll).
    fleet.assert_no_redis_failure()


# -- 4. Redis killed and restarted mid-run -----------------------------------------------------------------------------


async def test_redis_killed_mid_run_loses_no_event_and_stalls_no_device(fleet: Rig) -> None:
    nodes = fleet.nodes
    marks = [len(n.proxy.log_text()) for n in nodes]
    produced_before = sum(len(n.events()) for n in nodes)
    devices = [Device(f"127.0.14.{i + 1}", nodes[i % 3].proxy.proxy_url, nodes[i % 3].proxy.ca_path)
               for i in range(6)]
    apis = api_clients(fleet, 14)
    took: list[tuple[float, str]] = []
    rounds = Counter[int]()
    stop = asyncio.Event()

    async def timed(what: str, call: Any) -> Any:
        t = time.monotonic()
        result = await call
        took.append((time.monotonic() - t, what))
        return result

    async def phone(i: int, dev: Device) -> None:
        while not stop.is_set():
            ch = await timed(f"{dev.ip} get", dev.get_challenge(("whirl", "slide")[(i + rounds[i]) % 2]))
            for role, url in ch.urls().items():
                (await timed(f"{dev.ip} {role}", dev.client.get(url))).raise_for_status()
            r = await timed(f"{dev.ip} answer", dev.api("/v1/answer/wait", timeout=10))
            assert r.status_code == 200 and (r.json()["challenge"], r.json()["event"]) == (ch.id, "solved"), r.text
            rounds[i] += 1

    phones = [asyncio.create_task(phone(i, d)) for i, d in enumerate(devices)]

    def all_did(counts: dict[int, int], more: int) -> bool:
        for task in phones:
            if task.done():
                task.result()  # a phone that failed fails the test now, with its own error
        return all(rounds[i] >= counts.get(i, 0) + more for i in range(len(devices)))

    async def stats() -> list[Json]:
        return [(await api.api("/v1/stats")).json() for api in apis]

    try:
        await until(lambda: all_did({}, 1), "every phone's first answer")
        fleet.redis.kill()
        at_kill = dict(rounds)

        async def holding() -> bool:
            return all_did(at_kill, 2) and all(s["redis_down"] and s["redis_backlog"] > 0 for s in await stats())

        await until(holding, "every proxy to hold events while Redis is gone, and every phone to go on", every=0.1)
        await asyncio.to_thread(fleet.redis.restart)
        at_restart = dict(rounds)

        async def caught_up() -> bool:
            return all_did(at_restart, 1) and all(not s["redis_down"] and s["redis_backlog"] == 0
                                                  for s in await stats())

        await until(caught_up, "every proxy to write what it held", every=0.1)
        stop.set()
        await asyncio.gather(*phones)
    finally:
        stop.set()
        for task in phones:
            task.cancel()
        await asyncio.gather(*phones, return_exceptions=True)
        await close([*devices, *apis])

    assert all(n.proxy.running for n in nodes)
    r = connect(fleet.redis.url)
    try:
        entries, sidecars = await settled(fleet, r)
        assert_stream_matches_sidecars(entries, sidecars)
    finally:
        await r.aclose()
    slowest = max(took)
    # About 0.15 s on a quiet machine and up to about 1.2 s beside the suite's other workers on two cores; a device
    # request that waited on Redis would take the client's connect timeout (2 s) or its backoff on top.
    assert slowest[0] < 2.0, f"{slowest[1]} took {slowest[0]:.2f} s ({len(took)} requests)"
    late = 0
    for node, mark in zip(nodes, marks, strict=True):
        lines = [line for line in node.log_lines(mark) if "captcha fleet" in line]
        assert len(lines) == 2 and "is back" not in lines[0] and "is back" in lines[1], (node.name, lines)
        late += int(lines[1].split("; wrote ")[1].split()[0])
    produced = sum(len(events) for events in sidecars.values()) - produced_before
    print(f"\nRedis restart: {produced} events produced during the run, all in the stream, {late} of them held while "
          f"Redis was gone; {len(took)} device requests, the longest {slowest[0] * 1000:.0f} ms ({slowest[1]})")


# -- 3. one paid job per image set, and a takeover --------------------------------------------------------------------


async def test_an_image_set_is_paid_once_and_taken_over_when_its_owner_dies(fleet: Rig) -> None:
    a, b, c = fleet.nodes
    kit = fleet.kit
    truth = kit.origin.app.challenges
    kit.fake.clear_log()
    kit.fake.control(solve_seconds=1.0)
    x, y = (Device(f"127.0.13.{i + 1}", n.proxy.proxy_url, n.proxy.ca_path) for i, n in enumerate((a, b)))
    x2, y2 = (Device(f"127.0.13.{i + 3}", n.proxy.proxy_url, n.proxy.ca_path) for i, n in enumerate((c, a)))
    r = connect(fleet.redis.url)
    try:
        # The same images on A and then on B, while A's job runs: one paid job, B's device gets A's answer.
        ch_x, ch_y = await same_images(kit, x, y, "whirl")
        await x.fetch_images(ch_x, order="normal")
        await until(lambda: len(kit.paid_jobs()) == 1, "A's paid job")
        await y.fetch_images(ch_y, order="normal")
        got_x, got_y = await asyncio.gather(own_answer(x, ch_x), own_answer(y, ch_y))
        assert got_x["result"] == str(round(truth[ch_x.id]["drag_px"])) and got_x.get("cached") is None
        assert (got_y["result"], got_y["cached"], got_y["tried"]) == (got_x["result"], True, [])
        assert len(kit.paid_jobs()) == 1

        # C owns the next image set's job and dies in the middle of it (SIGKILL): its claim runs out and A, whose
        # device shows the same images, takes the job over.
        kit.fake.control(solve_seconds=60.0)
        ch_x2, ch_y2 = await same_images(kit, x2, y2, "slide")
        await x2.fetch_images(ch_x2, order="normal")
        await until(lambda: len(kit.paid_jobs()) == 2, "C's paid job")
        await y2.fetch_images(ch_y2, order="normal")
        await until(lambda: r.pubsub_channels(PREFIX + "answer:*"), "A to wait for C's answer")
        waiting = asyncio.create_task(own_answer(y2, ch_y2))
        os.kill(c.proxy.pid, signal.SIGKILL)
        killed = time.monotonic()
        kit.fake.control(solve_seconds=0)  # A's own job is final at once; C's keeps its minute
        got = await waiting
        assert time.monotonic() - killed < CLAIM_TTL_S + 5
        assert (got["service"], got.get("cached"), got["tried"]) == ("omocaptcha-v1", None, ["omocaptcha-v1"])
        assert got["result"] == str(round(truth[ch_y2.id]["gap_x"] * 340 / 552))
        assert len(kit.paid_jobs()) == 3
        assert not c.proxy.running
        fleet.assert_no_redis_failure()  # C's log too, up to its death: a long solve renews its claim quietly
    finally:
        await close([x, y, x2, y2])
        await r.aclose()
        c.proxy.stop()  # reaps it; the next test that needs the fleet starts it again


# -- 5. bad captcha_redis values ---------------------------------------------------------------------------------------


async def test_a_bad_redis_url_is_one_clear_line_and_the_proxy_works_alone(kit: Kit, tmp_path: Path) -> None:
    servers = RedisServers(tmp_path / "redis")
    right, wrong, other = "Right-Secret-5150", "Wr0ng-Secret-7070", "Other-Secret-9090"
    srv = servers.start(password=right)
    cases = {
        "not-a-url": ("not a url", "captcha_redis is not a URL"),
        "wrong-password": (srv.url_with(wrong), "refused the credentials"),
        "unknown-host": (f"redis://:{other}@no-such-host.invalid:6379/0", "'no-such-host.invalid' is unknown"),
    }
    procs = {name: mitmdump(kit, tmp_path / name, url) for name, (url, _) in cases.items()}
    devices: list[Device] = []
    try:
        await asyncio.to_thread(start_all, procs.values())
        for n, (name, (_, expected)) in enumerate(cases.items()):
            proxy = procs[name]
            await asyncio.to_thread(proxy.wait_for_log, expected, 15)
            dev = Device(f"127.0.15.{n + 1}", proxy.proxy_url, proxy.ca_path)
            devices.append(dev)
            _, answer = await solve_one(dev, "slide")  # solved here, with Redis out of reach
            assert answer["service"] == "omocaptcha-v1"
            assert (await dev.api("/v1/answer")).json() == answer
            stats = (await dev.api("/v1/stats")).json()
            assert (stats["captured"], stats["solved"]) == (1, 1)
            # Only the fleet's Redis knows the fleet's sums: 400 with fleet mode off, 503 while Redis is away.
            fleet = await dev.api("/v1/stats", scope="fleet")
            assert fleet.status_code == (400 if name == "not-a-url" else 503), (name, fleet.status_code)
        for name, (_, expected) in cases.items():
            node = Node(name, tmp_path / name, procs[name])
            assert node.proxy.running, name
            lines = node.log_lines()
            fleet_lines = [line for line in lines if "captcha fleet" in line]
            assert len(fleet_lines) == 1 and expected in fleet_lines[0], (name, fleet_lines)
            text = "\n".join(lines)
            assert right not in text and wrong not in text and other not in text
    finally:
        await close(devices)
        for proxy in procs.values():
            proxy.stop()
        servers.stop_all()
