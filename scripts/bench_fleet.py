"""Benchmark of fleet mode (Redis): events/s each proxy writes to the stream, and answer-at-client latency through
another proxy's API against the device's own.

    uv run python -m scripts.bench_fleet [--quick] [--out FILE.json] [--keep]

Everything runs on loopback: a redis-server of its own (Debian's ``redis-server``: no persistence, default settings
otherwise), the test origin and the fake solving service in child processes (``scripts/bench.py``'s, the fake with
``solve_seconds=0``), real ``mitmdump`` processes and simulated devices. The challenges' images are plain pictures
made on the spot (``plain_manifest``), a different set for every challenge, so no answer comes from a cache.

1. ``writer``: the stream outlet alone (``addon.fleet.stream.RedisEventStream``, as a proxy runs it) in a child
   process per proxy, handed N events at once (real ones, from the ``proxy`` section's sidecar, under a fresh run
   id) and timed until every one is in the stream: events/s with one writer, and each writer's rate and the sum
   with three at once (three proxies on one Redis). Also the outlet's own cost on the proxy's event loop per
   event (``publish``: the JSON encoding and the append to the backlog), in µs.
2. ``proxy``: mitmdump A with ``captcha_redis`` at full load: D devices loop get -> both images -> their own long
   poll for S seconds. Events/s the proxy produced (its sidecar), the share of them in the stream once it has
   caught up (1 = all), the largest stream backlog ``/v1/stats`` showed (read every 0.2 s) and challenges/s.
3. ``latency``: devices on A; for each challenge two long polls are open before the images are fetched: the
   device's own (``/v1/answer/wait?after=SEQ`` on A) and one through proxy B (``/v1/answer/wait?client=<device>
   &after=<stream id>``: B has never seen the device, so its answer comes through Redis, woken by the stream).
   Both are timed from the moment the device holds its last image to the answer in hand: p50/p99 of each and of
   B's extra per challenge. The control is the same run on mitmdump C without ``captcha_redis`` (what fleet
   mode's shared solving, one claim and one answer write in Redis per challenge, adds to the device's own).

Prints a Markdown table (``scripts.bench``'s figures: key ``fleet.*``); ``--out`` writes the JSON with details.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file: the project root holds the packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import (
    ADDON_SCRIPT,
    POLL_MS,
    ROOT,
    SERVICE_KEY,
    ChildOrigin,
    Report,
    fake_service,
    lighten_httpx,
    log,
    percentile,
    start_all,
    table,
)
from scripts.bench import FULL as BENCH_FULL
from scripts.bench import QUICK as BENCH_QUICK
from tests.kit.device import Device
from tests.kit.proxy import MitmdumpProcess, free_port

Json = dict[str, Any]
STREAM = "captcha:events"


@dataclass(frozen=True)
class FleetSettings:
    quick: bool
    writer_events: int
    """Events each writer child is handed at once."""
    load_devices: int
    load_seconds: float
    latency_devices: int
    """Devices at once in the latency section: few, so the figures are the paths' own, not a queue's."""
    latency_rounds: int
    per_mode: int
    """Whirl and slide challenges each (every one with images of its own)."""


FULL = FleetSettings(quick=False, writer_events=50_000, load_devices=30, load_seconds=15.0, latency_devices=2,
                     latency_rounds=60, per_mode=600)
QUICK = FleetSettings(quick=True, writer_events=10_000, load_devices=10, load_seconds=3.0, latency_devices=1,
                      latency_rounds=12, per_mode=150)


def expected_keys() -> list[str]:
    """Every figure's key (a hook into ``scripts.bench`` checks each is there)."""
    keys = ["fleet.writer.one", "fleet.writer.three_each", "fleet.writer.three_total", "fleet.writer.publish_us",
            "fleet.proxy.events_per_s", "fleet.proxy.challenges_per_s", "fleet.proxy.written_share",
            "fleet.proxy.backlog_max", "fleet.latency.answered_share"]
    keys += [f"fleet.latency.{name}_{q}" for name in ("own", "remote", "extra", "alone") for q in ("p50", "p99")]
    return keys


# -- challenges ------------------------------------------------------------------------------------------------------


def plain_manifest(directory: Path, per_mode: int, seed: int = 23) -> None:
    """``per_mode`` whirl and slide challenges in the test kit's manifest format (``tests/kit/CONTRACT.md``),
    every image different from every other. The fake service knows a challenge by its images' sha256 and the proxy
    tells roles by size, so plain pictures with the challenge's number drawn in blocks do; they take about 2 ms an
    image, where the synthetic generator takes a tenth of a second a challenge."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def image(name: str, size: tuple[int, int], fmt: str, n: int) -> Json:
        mode = "RGBA" if fmt == "PNG" else "RGB"
        img = Image.new(mode, size, (40 + n % 200, 90, 140, 255)[: len(mode)])
        for bit in range(16):  # the number, one 8x8 block per bit (JPEG keeps blocks apart)
            if n >> bit & 1:
                img.paste((250, 20, 20, 255)[: len(mode)], (8 + bit * 16 % 192, 8 + bit // 12 * 16,
                                                            16 + bit * 16 % 192, 16 + bit // 12 * 16))
        out = io.BytesIO()
        img.save(out, fmt)
        data = out.getvalue()
        (directory / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        ext = "png" if fmt == "PNG" else "jpeg"
        return {"file": name, "path": f"/tos-maliva-i-b4yrtqhy5a-us/{digest[:32]}~tplv-b4yrtqhy5a-2.{ext}",
                "sha256": digest, "width": size[0], "height": size[1], "format": ext}

    challenges: list[Json] = []
    for i in range(per_mode):
        angle = rng.uniform(10, 350)
        challenges.append({"id": f"a{i:039x}", "mode": "whirl", "variant": "png", "angle": angle,
                           "drag_px": angle / 360 * 271,
                           "images": {"outer": image(f"w{i}-outer.png", (347, 347), "PNG", 2 * i),
                                      "inner": image(f"w{i}-inner.png", (211, 211), "PNG", 2 * i + 1)}})
    for i in range(per_mode):
        challenges.append({"id": f"b{i:039x}", "mode": "slide", "variant": "jpeg", "gap_x": rng.randint(120, 430),
                           "tip_y": 80,
                           "images": {"background": image(f"s{i}-bg.jpg", (552, 344), "JPEG", 2 * i),
                                      "piece": image(f"s{i}-piece.png", (110, 110), "PNG", 2 * i + 1)}})
    manifest = {"seed": seed, "widget": {"width": 340, "handle": 69, "travel": 271}, "challenges": challenges}
    (directory / "manifest.json").write_text(json.dumps(manifest))


# -- redis-server ----------------------------------------------------------------------------------------------------


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A redis-server on a free loopback port with a directory of its own; ``url`` once started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
             "--appendonly", "no", "--logfile", "redis.log", "--protected-mode", "no"],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis(url: str) -> Any:
    from addon.fleet import connect

    return connect(url, socket_timeout=30)


def read_events(path: Path) -> list[Json]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# -- 1. the stream writer alone ---------------------------------------------------------------------------------------


def writer_child() -> None:
    """A child process: ``<url> <run> <count> <template file>``. Prints ``ready`` once connected, waits for a line
    on stdin, then hands ``count`` events to a ``RedisEventStream`` at once and prints one JSON line of timings."""
    url, run, count, template = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    templates = [e for e in read_events(template) if isinstance(e, dict)]
    print(json.dumps(asyncio.run(_write(url, run, count, templates))), flush=True)


async def _write(url: str, run: str, count: int, templates: list[Json]) -> Json:
    from addon.fleet.stream import RedisEventStream

    stream = RedisEventStream(url, STREAM, backlog=count + 1)
    stream.start()
    stream.publish({**templates[0], "run": run, "seq": 1})  # connects and loads the script before the clock runs
    if not await stream.flushed(10):
        raise RuntimeError("the writer could not reach Redis")
    events = [{**templates[i % len(templates)], "run": run, "seq": i + 2} for i in range(count)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t0 = time.perf_counter()
    for event in events:
        stream.publish(event)
    published = time.perf_counter() - t0
    done = await stream.flushed(300)
    seconds = time.perf_counter() - t0
    result = {"events": count, "seconds": seconds, "events_per_s": count / seconds,
              "publish_us": published / count * 1e6, "written": stream.written - 1, "flushed": done,
              "overflowed": stream.overflowed}
    await stream.stop()
    return result


def run_writers(url: str, n: int, count: int, template: Path, work: Path) -> list[Json]:
    """``n`` writer children, released at once; their results."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(n):
            with open(work / f"writer-{i}.log", "ab") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", "import scripts.bench_fleet as b; b.writer_child()", url,
                     f"bench-{n}-{i}-{os.getpid()}", str(count), str(template)],
                    cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True))
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a writer did not start; see {work}/writer-*.log")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def bench_writer(fs: FleetSettings, report: Report, redis_url: str, template: Path, work: Path) -> None:
    one = run_writers(redis_url, 1, fs.writer_events, template, work)
    three = run_writers(redis_url, 3, fs.writer_events, template, work)
    every = one + three
    assert all(r["flushed"] and r["written"] == r["events"] and r["overflowed"] == 0 for r in every), every
    report.details["fleet"]["writer"] = {"one": one, "three": three}
    log(f"fleet writer: one {one[0]['events_per_s']:,.0f} events/s; three at once "
        f"{[round(r['events_per_s']) for r in three]} events/s")
    report.add("fleet.writer.one", "stream writer alone: events/s into Redis, one proxy", one[0]["events_per_s"],
               "events/s")
    report.add("fleet.writer.three_each", "stream writer: events/s per proxy, three at once (slowest)",
               min(r["events_per_s"] for r in three), "events/s")
    report.add("fleet.writer.three_total", "stream writers: events/s into Redis, three proxies together",
               sum(r["events"] for r in three) / max(r["seconds"] for r in three), "events/s")
    report.add("fleet.writer.publish_us", "the outlet's cost on the proxy's loop per event (publish, one writer)",
               one[0]["publish_us"], "µs")


# -- 2. a proxy at full load ----------------------------------------------------------------------------------------


async def _load(proxy: MitmdumpProcess, devices: int, seconds: float, first: int) -> Json:
    phones = [Device(f"127.0.{first}.{i + 1}", proxy.proxy_url, proxy.ca_path, timeout=60.0) for i in range(devices)]
    api = Device(f"127.0.{first}.250", proxy.proxy_url, proxy.ca_path)
    done = 0
    failed = 0
    backlog_max = 0
    try:
        await asyncio.gather(*(d.api("/v1/stats") for d in phones), api.api("/v1/stats"))  # connections up
        stop_at = time.monotonic() + seconds

        async def phone(i: int, dev: Device) -> None:
            nonlocal done, failed
            after, k = 0, 0
            while time.monotonic() < stop_at:
                ch = await dev.get_challenge(("whirl", "slide")[(i + k) % 2])
                await dev.fetch_images(ch, order="normal")
                r = await dev.api("/v1/answer/wait", after=after, timeout=30)
                if r.status_code == 200:
                    after = int(r.json()["seq"])
                if r.status_code == 200 and r.json().get("event") == "solved":
                    done += 1
                else:
                    failed += 1
                k += 1

        async def watch() -> None:
            nonlocal backlog_max
            while time.monotonic() < stop_at:
                backlog_max = max(backlog_max, int((await api.api("/v1/stats")).json().get("redis_backlog", 0)))
                await asyncio.sleep(0.2)

        t0 = time.monotonic()
        await asyncio.gather(watch(), *(phone(i, d) for i, d in enumerate(phones)))
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 30
        while (await api.api("/v1/stats")).json().get("redis_backlog", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await asyncio.gather(*(d.aclose() for d in [*phones, api]), return_exceptions=True)
    return {"seconds": elapsed, "solved": done, "not_solved": failed, "backlog_max": backlog_max}


async def _entries_of(url: str, run: str) -> int:
    client = _redis(url)
    try:
        count, start = 0, "-"
        while True:
            page = await client.xrange(STREAM, start, "+", count=5000)
            count += sum(1 for _, fields in page if fields.get("run") == run)
            if len(page) < 5000:
                return count
            start = f"({page[-1][0]}"
    finally:
        await client.aclose()


def bench_proxy(fs: FleetSettings, report: Report, proxy: MitmdumpProcess, sidecar: Path, redis_url: str) -> None:
    before = len(read_events(sidecar))
    result = asyncio.run(_load(proxy, fs.load_devices, fs.load_seconds, 20))
    events = read_events(sidecar)
    run = str(events[-1]["run"])
    mine = [e for e in events if e.get("run") == run]
    produced = len(events) - before
    in_stream = asyncio.run(_entries_of(redis_url, run))
    result.update(events=produced, run_events=len(mine), in_stream=in_stream, devices=fs.load_devices)
    report.details["fleet"]["proxy"] = result
    log(f"fleet proxy: {produced / result['seconds']:,.0f} events/s, {result['solved'] / result['seconds']:.1f} "
        f"challenges/s, backlog max {result['backlog_max']}, {in_stream}/{len(mine)} in the stream")
    report.add("fleet.proxy.events_per_s", f"a proxy at full load ({fs.load_devices} devices): events/s produced",
               produced / result["seconds"], "events/s")
    report.add("fleet.proxy.challenges_per_s", "the same run: challenges solved per second",
               result["solved"] / result["seconds"], "/s")
    report.add("fleet.proxy.written_share", "its events in the stream once caught up",
               in_stream / len(mine) if mine else math.nan, "", ">= 1", "bench")
    report.add("fleet.proxy.backlog_max", "largest stream backlog seen in /v1/stats meanwhile",
               result["backlog_max"], "events")


# -- 3. answer latency: the device's own proxy, another proxy of the fleet, a proxy alone ----------------------------


@dataclass
class Sample:
    mode: str
    own_ms: float = math.nan
    remote_ms: float = math.nan


async def _timed(call: Any) -> tuple[Any, float]:
    response = await call
    return response, time.monotonic()


async def _latency(own_proxy: MitmdumpProcess, other: MitmdumpProcess | None, devices: int, rounds: int,
                   first: int) -> list[Sample]:
    phones = [Device(f"127.0.{first}.{i + 1}", own_proxy.proxy_url, own_proxy.ca_path, timeout=60.0)
              for i in range(devices)]
    watchers = [Device(f"127.0.{first}.{101 + i}", other.proxy_url, other.ca_path, timeout=60.0)
                for i in range(devices)] if other is not None else []
    samples: list[Sample] = []
    try:
        await asyncio.gather(*(d.api("/v1/stats") for d in [*phones, *watchers]))

        async def phone(i: int, dev: Device) -> None:
            seq, sid = 0, "0"
            for k in range(rounds):
                mode = ("whirl", "slide")[(i + k) % 2]
                ch = await dev.get_challenge(mode)
                own = asyncio.create_task(_timed(dev.api("/v1/answer/wait", after=seq, timeout=30)))
                remote = asyncio.create_task(_timed(watchers[i].api(
                    "/v1/answer/wait", client=dev.ip, after=sid, timeout=30))) if watchers else None
                await dev.fetch_images(ch, order="normal")
                t_last = time.monotonic()
                sample = Sample(mode)
                r, t = await own
                if r.status_code == 200 and r.json().get("challenge") == ch.id:
                    seq = int(r.json()["seq"])
                    sample.own_ms = (t - t_last) * 1000
                if remote is not None:
                    r, t = await remote
                    if r.status_code == 200 and r.json().get("challenge") == ch.id:
                        sid = str(r.json()["stream_id"])
                        sample.remote_ms = (t - t_last) * 1000
                samples.append(sample)

        await asyncio.gather(*(phone(i, d) for i, d in enumerate(phones)))
    finally:
        await asyncio.gather(*(d.aclose() for d in [*phones, *watchers]), return_exceptions=True)
    return samples


def bench_latency(fs: FleetSettings, report: Report, a: MitmdumpProcess, b: MitmdumpProcess,
                  alone: MitmdumpProcess) -> None:
    fleet = asyncio.run(_latency(a, b, fs.latency_devices, fs.latency_rounds, 30))
    control = asyncio.run(_latency(alone, None, fs.latency_devices, fs.latency_rounds, 31))
    own = [s.own_ms for s in fleet if not math.isnan(s.own_ms)]
    remote = [s.remote_ms for s in fleet if not math.isnan(s.remote_ms)]
    extra = [s.remote_ms - s.own_ms for s in fleet if not (math.isnan(s.own_ms) or math.isnan(s.remote_ms))]
    solo = [s.own_ms for s in control if not math.isnan(s.own_ms)]
    answered = (len(own) + len(remote) + len(solo)) / (2 * len(fleet) + len(control)) if fleet else math.nan
    summary = {name: {"p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v, default=math.nan),
                      "n": len(v)} for name, v in (("own", own), ("remote", remote), ("extra", extra),
                                                   ("alone", solo))}
    report.details["fleet"]["latency"] = {"devices": fs.latency_devices, "rounds": fs.latency_rounds,
                                          "poll_ms": POLL_MS, **summary}
    log(f"fleet latency: own p50 {summary['own']['p50']:.1f} ms, through another proxy p50 "
        f"{summary['remote']['p50']:.1f} ms (extra p99 {summary['extra']['p99']:.1f} ms), alone p50 "
        f"{summary['alone']['p50']:.1f} ms")
    report.add("fleet.latency.answered_share", "challenges answered on every path", answered, "", ">= 1", "bench")
    labels = {"own": "last image -> answer, the device's own proxy (fleet mode)",
              "remote": "last image -> answer, through another proxy's API",
              "extra": "another proxy's API less the own, per challenge",
              "alone": "last image -> answer, a proxy without Redis (control)"}
    for name, label in labels.items():
        for q in ("p50", "p99"):
            report.add(f"fleet.latency.{name}_{q}", f"{label}, {q}", summary[name][q], "ms")


# -- the run ---------------------------------------------------------------------------------------------------------


def proxy_options(directory: Path, fake_url: str, redis_url: str | None) -> Json:
    options: Json = {"flow_detail": 0, "omocaptcha_key": SERVICE_KEY, "omocaptcha_url": fake_url + "/api/",
                     "captcha_poll_ms": POLL_MS, "captcha_sidecar": str(directory / "events.jsonl")}
    if redis_url:
        options["captcha_redis"] = redis_url
    return options


@contextlib.contextmanager
def proxies(origin: ChildOrigin, fake_url: str, redis_url: str, work: Path) -> Iterator[list[MitmdumpProcess]]:
    """A and B in the fleet, C alone (the control)."""
    procs = [MitmdumpProcess([ADDON_SCRIPT], origin=(origin.http_port, origin.https_port), workdir=work / name,
                             options=proxy_options(work / name, fake_url, url))
             for name, url in (("A", redis_url), ("B", redis_url), ("C", None))]
    start_all(procs)
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def bench_fleet(fs: FleetSettings, report: Report, origin: ChildOrigin, fake_url: str, work: Path) -> None:
    """The whole fleet section into ``report`` (``origin`` serves a manifest made by ``plain_manifest``, and the
    fake knows it)."""
    report.details["fleet"] = {"settings": asdict(fs)}
    with RedisProcess(work / "redis") as redis:
        with proxies(origin, fake_url, redis.url, work) as (a, b, alone):
            for p in (a, b, alone):
                p.wait_for_log("key accepted", timeout=20)
            t = time.monotonic()
            bench_proxy(fs, report, a, work / "A" / "events.jsonl", redis.url)
            log(f"fleet proxy: {time.monotonic() - t:.1f} s")
            t = time.monotonic()
            bench_latency(fs, report, a, b, alone)
            log(f"fleet latency: {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        bench_writer(fs, report, redis.url, work / "A" / "events.jsonl", work)
        log(f"fleet writer: {time.monotonic() - t:.1f} s")


def run(fs: FleetSettings, work: Path) -> Report:
    lighten_httpx()
    report = Report(BENCH_QUICK if fs.quick else BENCH_FULL)
    report.details["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "loadavg_start": os.getloadavg()}
    t0 = time.monotonic()
    manifest = work / "manifest"
    plain_manifest(manifest, fs.per_mode)
    log(f"manifest: {2 * fs.per_mode} challenges in {time.monotonic() - t0:.1f} s")
    with ChildOrigin("testkit", manifest, work / "origin") as origin, fake_service(manifest, work) as fake_url:
        bench_fleet(fs, report, origin, fake_url, work)
    report.details["seconds"] = time.monotonic() - t0
    report.details["machine"]["loadavg_end"] = os.getloadavg()
    if report.details["machine"]["loadavg_start"][0] > 0.5:
        report.notes.append(f"the machine was not idle when the benchmark started (1-minute load average "
                            f"{report.details['machine']['loadavg_start'][0]:.1f}): figures are noisier")
    return report


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None, out: IO[str] = sys.stdout) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_fleet", description=" ".join(
                                    (__doc__ or "").split("\n\n")[0].split()),
                                epilog="Needs redis-server (apt-get install -y redis-server). --quick takes about a "
                                       "minute, the full run about three.")
    p.add_argument("--quick", action="store_true", help="small counts")
    p.add_argument("--out", type=Path, help="write the results as JSON to this file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, sidecars)")
    args = p.parse_args(argv)
    fs = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="captcha-bench-fleet-"))
    try:
        report = run(fs, work)
    finally:
        if args.keep:
            log(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(report, markdown=True), file=out)
    for note in report.notes:
        print(f"note: {note}", file=out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_no_nan(report.as_json()), indent=2, default=str) + "\n")
        log(f"results written to {args.out}")
    return 1 if any(f.status == "MISSING" for f in report.figures) else 0


if __name__ == "__main__":
    sys.exit(main())
