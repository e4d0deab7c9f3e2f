"""Benchmark of the captcha addon: proxy overhead, cost per flow, answer latency, memory and event-loop lag.

    uv run python -m scripts.bench [--quick] [--out FILE.json] [--markdown] [--only SECTION ...] [--keep]

Everything runs on loopback: the test origin (``tests/kit/origin.py``) and the fake solving service
(``tests/kit/fake_omocaptcha.py``) each in a child process of their own (no GIL shared with the clients), real
``mitmdump`` processes (``tests/kit/proxy.py``, ``flow_detail=0`` so that printing flows costs nothing)
and simulated devices (``tests/kit/device.py``). Challenges come from ``tests/kit/synth.py``.

1. ``overhead``: ordinary traffic, ``GET /plain/json`` and ``GET /plain/bytes?n=50000`` over HTTPS (CONNECT
   tunnel, keep-alive HTTP/1.1, 8 concurrent connections of one httpx client) through mitmdump with the addon
   (``-s addon/main.py``) and without it (the same redirect script, nothing else), both running all along and
   measured in alternating rounds A B A B ...: throughput, p50/p99 latency, and mitmdump's CPU time per request
   (``/proc/PID/stat``). Ratios and the CPU difference are medians over the rounds of each adjacent pair, so a
   change of the machine's load during the run weighs little.
2. ``flowcost``: the addon's hooks timed in-process (``build_addons()`` under ``mitmproxy.test.taddons``, no
   proxy): ``CaptchaApi.request`` (with no response yet, as in a proxy) plus ``CaptchaCapture.response`` for a
   non-captcha API flow, a captcha get, the first image of the challenge it announced and the image that
   completes it (which emits ``captured`` and writes the sidecar; no key, so nothing is solved). Also the same
   non-captcha flow's four hook events through mitmproxy's addon manager with the default addons, with the addon
   loaded as mitmdump loads it against none (the hooks plus the dispatch to four more addons).
3. ``latency``: mitmdump with the addon, ``omocaptcha_url`` pointing at the fake (``solve_seconds=0``: a job is
   final when created) and ``captcha_poll_ms=10``. Per level, N warmed-up devices at once (one address each)
   run a whirl or a slide challenge: get, then a ``/v1/answer/wait?after=SEQ`` long poll started *before* the
   images are fetched, then both images. Measured from the moment a device holds its last image:
   (i) to the ``solved`` event's ``time`` (the addon's clock, 1-ms resolution, same host clock);
   (ii) to the long poll's answer in the device's hands. The service's share is taken per challenge from the
   fake's request log: from the arrival of createJob to the arrival of the getJobResult that got the final
   answer. It holds the fake's own work and the addon's one pause of ``captcha_poll_ms`` before its first poll,
   so the poll interval is counted as the service's (an answer cannot be known sooner with a polled API);
   "(ii) less the service's share" is what the addon and the proxy add around it. The JSON also splits it into
   last image -> createJob arrival (job slot wait, image check and base64 in a thread, the HTTP request) and final
   poll -> answer at the device.
4. ``memory``: VmRSS (``/proc/PID/status``) of mitmdump in capture-only mode (no key) after ``memory_low`` and
   after ``memory_high`` captured challenges (counted by ``/v1/stats``), driven by 100 devices over plain HTTP
   (get + both images back to back). The origin of this section (``BenchOrigin``) reuses the generated images
   but gives every challenge a fresh id and fresh image paths, as real traffic does. The same traffic also goes
   through mitmdump without the addon as a control, and the addon's own state after as many challenges is
   measured in-process (deep size of each attribute of the addon objects, which says what holds the memory).
5. ``looplag``: ``scripts/bench_looplag.py`` runs beside the addon in the latency section's mitmdump (a task
   sleeping 5 ms in a loop; the worst overshoot per quarter second goes to a file); the figure is the longest
   stall during the largest level, with the loop thread's CPU time during it (near the stall: the loop was busy;
   far below: it was not scheduled or waited for the GIL). A control runs the same devices' gets and images
   through mitmdump without the addon.

Goals: from the brief (throughput ratio >= 0.97, non-captcha flow < 20 µs, answer p99 beyond the service < 50 ms,
memory growth < 30 MB, loop stall < 50 ms) or chosen here
(``goal_source: bench`` in the JSON: latency ratios <= 1.10, every challenge solved,
the addon's in-process state < 30 MB). ``info`` rows have none. ``--quick`` runs every section with small counts
in under a minute; the full run takes about six minutes. The exit code is 1 when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gc
import importlib.util
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.kit.device import Device, Fleet
from tests.kit.proxy import MitmdumpProcess

ROOT = Path(__file__).resolve().parent.parent
ADDON_SCRIPT = "addon/main.py"
LOOPLAG_SCRIPT = "scripts/bench_looplag.py"
PLAIN_HOST = "api16-normal-c-useast1a.tiktokv.com"
VERIFY_HOST = "verification-va.tiktok.com"
CDN_HOST = "p16-rc-captcha-va.ibyteimg.com"
BACKUP_CDN_HOST = "p19-rc-captcha-va.ibyteimg.com"
SERVICE_KEY = "bench-key"
POLL_MS = 10
SECTIONS = ("overhead", "flowcost", "latency", "local", "outlets", "memory", "looplag", "fleet")
"""``fleet`` is ``scripts/bench_fleet.py`` (Redis): in a full run, and with ``--only fleet``."""

Json = dict[str, Any]

PLAIN_JSON_BODY = json.dumps({
    "status_code": 0, "status_msg": "", "extra": {"now": 1732170000000, "logid": "20241121063000ABCDEF0123"},
    "log_pb": {"impr_id": "20241121063000ABCDEF0123"}, "has_more": 1, "min_cursor": 0, "max_cursor": 0,
    "aweme_list": [{"aweme_id": str(7300000000000000000 + i), "desc": "a video", "create_time": 1732170000 - i,
                    "statistics": {"play_count": 1234 * i, "digg_count": 56 * i}} for i in range(6)],
}).encode()
"""An ordinary API answer, for the in-process cost of a flow that is no captcha."""


# -- settings ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    quick: bool
    concurrency: int
    """Concurrent keep-alive client connections of the overhead section."""
    rounds: int
    """Rounds per body size; each round measures with and without the addon once."""
    round_seconds: float
    warmup_seconds: float
    body_bytes: int
    flowcost_plain: int
    """Timed non-captcha flows in-process."""
    flowcost_captcha: int
    """Timed challenges (get + two images) in-process."""
    dispatch_rounds: int
    """Rounds of 200 flows through mitmproxy's addon manager, with and without the addon in turn."""
    levels: tuple[tuple[int, int], ...]
    """(devices, rounds) of the latency section; the largest level is the one the loop lag is taken from."""
    memory_low: int
    memory_high: int
    memory_devices: int
    memory_points: int
    """RSS readings between the low and the high mark (the curve in the JSON)."""
    memory_settle: float
    """Seconds mitmdump is left alone before each RSS reading."""
    manifest_per_mode: int
    """Generated whirl and slide challenges each (the latency section needs one per challenge it runs)."""


FULL = Settings(
    quick=False, concurrency=8, rounds=5, round_seconds=4.0, warmup_seconds=0.5, body_bytes=50_000,
    flowcost_plain=50_000, flowcost_captcha=2_000, dispatch_rounds=20, levels=((1, 40), (50, 2), (200, 1)),
    memory_low=100, memory_high=10_000, memory_devices=100, memory_points=5, memory_settle=1.0,
    manifest_per_mode=140,
)
QUICK = Settings(
    quick=True, concurrency=8, rounds=1, round_seconds=1.5, warmup_seconds=0.3, body_bytes=50_000,
    flowcost_plain=5_000, flowcost_captcha=200, dispatch_rounds=4, levels=((1, 4), (5, 1), (15, 1)),
    memory_low=50, memory_high=300, memory_devices=10, memory_points=1, memory_settle=0.3,
    manifest_per_mode=24,
)


def expected_keys(s: Settings, sections: Sequence[str] = SECTIONS) -> list[str]:
    """The key of every figure a run of ``sections`` reports (the test checks each is there and a number)."""
    keys: list[str] = []
    if "overhead" in sections:
        for kind in ("json", "50kB"):
            keys += [f"overhead.{kind}.{name}" for name in (
                "throughput_with", "throughput_without", "throughput_ratio", "p50_with", "p50_without", "p50_ratio",
                "p99_with", "p99_without", "p99_ratio", "proxy_cpu_delta", "cpu_implied_ratio")]
    if "flowcost" in sections:
        keys += [f"flowcost.{c}.{q}" for c in ("plain", "get", "image_first", "image_last") for q in ("mean", "p99")]
        keys.append("flowcost.dispatch_delta")
    if "latency" in sections:
        for n, _ in s.levels:
            keys.append(f"latency.n{n}.solved_share")
            keys += [f"latency.n{n}.{name}_{q}" for q in ("p50", "p99")
                     for name in ("to_event", "to_answer", "service", "net")]
    if "local" in sections:
        for prefix in LOCAL_GROUPS:
            for n in LOCAL_LEVELS:
                keys.append(f"{prefix}.n{n}.solved_share")
                keys += [f"{prefix}.n{n}.{name}_{q}" for q in ("p50", "p99") for name in ("to_event", "to_answer")]
                keys += [f"{prefix}.n{n}.looplag_max", f"{prefix}.n{n}.looplag_busy"]
            keys += [f"{prefix}.control.looplag_max", f"{prefix}.control.looplag_busy"]
    if "outlets" in sections:
        keys += [f"outlets.{name}" for name in ("bus_default", "bus_streams_1", "bus_streams_10", "tally_observe",
                                                "dashboard")]
    if "memory" in sections:
        keys += [f"memory.{name}" for name in ("rss_low", "rss_high", "growth", "growth_without", "growth_addon",
                                               "retained_in_process")]
    if "looplag" in sections:
        keys += ["looplag.max", "looplag.max_cpu", "looplag.control_max"]
    if "fleet" in sections:
        from scripts import bench_fleet

        keys += bench_fleet.expected_keys()
    return keys


# -- figures -----------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    section: str
    label: str
    value: float | None
    unit: str
    goal: str = ""
    """``"< 20"``, ``">= 0.95"``..., empty when the figure is for information only."""
    goal_source: str = ""
    """``brief`` (set by whoever asked for the benchmark) or ``bench`` (chosen here, see the docs)."""

    @property
    def status(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "MISSING"
        if not self.goal:
            return "info"
        op, _, limit_text = self.goal.partition(" ")
        limit = float(limit_text)
        ok = {"<": self.value < limit, "<=": self.value <= limit, ">": self.value > limit,
              ">=": self.value >= limit}[op]
        return "ok" if ok else "MISSED"

    def as_json(self) -> Json:
        return {**asdict(self), "status": self.status}


@dataclass
class Report:
    settings: Settings
    figures: list[Figure] = field(default_factory=list)
    details: Json = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, value: float | None, unit: str, goal: str = "",
            goal_source: str = "") -> None:
        section = key.partition(".")[0]
        self.figures.append(Figure(key, section, label, value, unit, goal, goal_source))

    def as_json(self) -> Json:
        return {
            "settings": asdict(self.settings),
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
            "notes": self.notes,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "req/s" or abs(value) >= 100:
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip() if unit not in ("x", "") else (f"{text}x" if unit == "x" else text)


def table(report: Report, markdown: bool) -> str:
    rows = [("section", "figure", "value", "goal", "status")]
    for f in report.figures:
        goal = f"{f.goal} {f.unit}".strip() if f.goal and f.unit != "x" else f.goal
        rows.append((f.section, f.label, fmt(f.value, f.unit), goal or "—", f.status))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) if j == 2 else c.ljust(w)
                             for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# -- small helpers -----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def parse_rfc3339(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def start_all(procs: Sequence[MitmdumpProcess]) -> None:
    """Starts several mitmdump processes at once (each start() blocks until its proxy listens)."""
    errors: list[BaseException] = []

    def run(p: MitmdumpProcess) -> None:
        try:
            p.start()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for p in procs:
            p.stop()
        raise errors[0]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- challenges and origins ---------------------------------------------------------------------------------------


def generate_manifest(directory: Path, per_mode: int, seed: int = 11) -> Json:
    """``per_mode`` whirl and slide challenges (and a few 3d ones) from the test kit's generator."""
    from tests.kit import synth

    synth.generate(directory, seed, per_mode)
    manifest: Json = json.loads((directory / "manifest.json").read_text())
    return manifest


def count_modes(manifest: Json) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in manifest["challenges"]:
        counts[ch["mode"]] = counts.get(ch["mode"], 0) + 1
    return counts


class ChildOrigin:
    """An origin server in a child process of its own (so it shares no GIL with the clients).

    ``kind="testkit"`` runs ``tests/kit/origin.py`` (every traffic of the overhead and latency sections).
    ``kind="bench"`` runs ``BenchOrigin`` below for the memory section: it gives every challenge a fresh id *and*
    fresh image paths, as real traffic does (the test kit's origin starts over under new ids but the same image
    paths, and the addon's per-path bookkeeping would then not grow as it does in real life).
    """

    def __init__(self, kind: str, manifest_dir: Path, workdir: Path) -> None:
        self.kind = kind
        self.manifest_dir = manifest_dir
        self.workdir = workdir
        self.http_port = 0
        self.https_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> ChildOrigin:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "testkit":
            args = [sys.executable, "-m", "tests.kit.origin", "--manifest", str(self.manifest_dir)]
        else:
            args = [sys.executable, "-c", "import scripts.bench as b; b.bench_origin_child()",
                    str(self.manifest_dir)]
        with open(self.workdir / "origin.log", "ab") as err:
            self._proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=err, start_new_session=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"origin ({self.kind}) did not start; see {self.workdir / 'origin.log'}")
        ports = json.loads(line)
        self.http_port, self.https_port = int(ports["http_port"]), int(ports["https_port"])
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ChildOrigin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


IMAGE_PREFIX = "/tos-maliva-i-b4yrtqhy5a-us/"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BenchOrigin:
    """ASGI app: ``/captcha/get?mode=whirl|slide&scheme=http|https`` answers shape A with a new challenge id and
    new image paths every time; the images are those of the manifest's challenges in turn (the path's first
    8 hex digits name the image, the other 24 count gets)."""

    def __init__(self, manifest_dir: Path) -> None:
        self.images: list[tuple[bytes, bytes, str]] = []  # (body, content type, path suffix)
        self.by_mode: dict[str, list[tuple[int, int, Json]]] = {}
        self.counter = 0
        self.run = random.getrandbits(32)
        manifest = json.loads((manifest_dir / "manifest.json").read_text())
        for ch in manifest["challenges"]:
            roles = {"whirl": ("outer", "inner"), "slide": ("background", "piece")}.get(ch["mode"])
            if roles is None:
                continue
            idx = []
            for role in roles:
                img = ch["images"][role]
                png = img["format"] == "png"
                self.images.append(((manifest_dir / img["file"]).read_bytes(),
                                    b"image/png" if png else b"image/jpeg",
                                    "~tplv-b4yrtqhy5a-1.png" if png else "~tplv-b4yrtqhy5a-2.jpeg"))
                idx.append(len(self.images) - 1)
            self.by_mode.setdefault(ch["mode"], []).append((idx[0], idx[1], ch))

    def get_body(self, mode: str, scheme: str) -> bytes:
        pool = self.by_mode[mode]
        self.counter += 1
        i1, i2, ch = pool[self.counter % len(pool)]
        cid = f"{self.run:08x}{self.counter:032x}"
        paths = [f"{IMAGE_PREFIX}{i:08x}{self.counter:024x}{self.images[i][2]}" for i in (i1, i2)]
        question = {
            "url1": f"{scheme}://{CDN_HOST}{paths[0]}", "url2": f"{scheme}://{CDN_HOST}{paths[1]}",
            "backup_url1": [f"{scheme}://{BACKUP_CDN_HOST}{paths[0]}"],
            "backup_url2": [f"{scheme}://{BACKUP_CDN_HOST}{paths[1]}"],
            "tip_y": ch.get("tip_y", 0) if mode == "slide" else 0,
        }
        data = {"id": cid, "mode": mode, "challenge_code": 99996 if mode == "whirl" else 99999, "version": 2,
                "question": question, "verify_id": f"Verify_{cid[:8]}-{cid[8:12]}-{cid[12:16]}-{cid[16:20]}-x"}
        return json.dumps({"code": 200, "message": "Success", "data": data}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        path: str = scope["path"]
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        status, ctype, out = 200, b"application/json", b'{"error": "not found"}'
        if path.endswith("/captcha/get") and query.get("mode") in self.by_mode:
            out = self.get_body(query["mode"], query.get("scheme", "https"))
        elif path.startswith(IMAGE_PREFIX):
            try:
                out, ctype, _ = self.images[int(path[len(IMAGE_PREFIX) : len(IMAGE_PREFIX) + 8], 16)]
            except (ValueError, IndexError):
                status = 404
        else:
            status = 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})


def bench_origin_child() -> None:
    """Entry point of the ``bench`` origin's process: serves plain HTTP and HTTPS (self-signed, h2 and
    HTTP/1.1), prints its ports as one JSON line, stops on SIGTERM."""
    from tests.kit.origin import listen, self_signed_cert

    app = BenchOrigin(Path(sys.argv[1]))

    async def main() -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        http_sock, https_sock = listen(0), listen(0)
        ports = {"http_port": http_sock.getsockname()[1], "https_port": https_sock.getsockname()[1]}
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = self_signed_cert(Path(tmp))
            config = Config()
            config.certfile, config.keyfile = str(cert), str(key)
            config.alpn_protocols = ["h2", "http/1.1"]
            config.bind = [f"fd://{https_sock.detach()}"]
            config.insecure_bind = [f"fd://{http_sock.detach()}"]
            config.accesslog = None
            config.errorlog = None
            config.keep_alive_timeout = 600
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            print(json.dumps(ports), flush=True)
            await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(main())


# -- 1. proxy overhead -----------------------------------------------------------------------------------------------


@dataclass
class LoadRound:
    mode: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    proxy_cpu_s: float
    client_cpu_s: float
    origin_cpu_s: float
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan


async def run_load(proxy: MitmdumpProcess, url: str, concurrency: int, seconds: float, warmup: float,
                   origin_pid: int) -> LoadRound:
    """``concurrency`` workers, each on its own keep-alive HTTP/1.1 connection, GET ``url`` back to back."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca_path))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=600)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop = False
    async with httpx.AsyncClient(proxy=proxy.proxy_url, verify=ctx, http1=True, http2=False, limits=limits,
                                 timeout=httpx.Timeout(30.0), trust_env=False) as client:

        async def worker() -> int:
            nonlocal errors
            done = 0
            while not stop:
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    r.raise_for_status()
                except httpx.HTTPError:
                    errors += 1
                    continue
                if measuring:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    done += 1
            return done

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        cpu0, client0, origin0 = cpu_seconds(proxy.pid), time.process_time(), cpu_seconds(origin_pid)
        t0 = time.perf_counter()
        measuring = True
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - t0
        cpu1, client1, origin1 = cpu_seconds(proxy.pid), time.process_time(), cpu_seconds(origin_pid)
        stop = True
        counts = await asyncio.gather(*tasks)
    return LoadRound("", sum(counts), elapsed, latencies, cpu1 - cpu0, client1 - client0, origin1 - origin0,
                     errors)


def bench_overhead(s: Settings, report: Report, origin: ChildOrigin, work: Path) -> None:
    common = {"flow_detail": 0}
    with_addon = MitmdumpProcess([ADDON_SCRIPT], origin=(origin.http_port, origin.https_port),
                                 workdir=work / "with", options={**common,
                                                                 "captcha_sidecar": str(work / "with.jsonl")})
    without = MitmdumpProcess([], origin=(origin.http_port, origin.https_port), workdir=work / "without",
                              options=common)
    start_all([with_addon, without])
    details: Json = {"concurrency": s.concurrency, "rounds": s.rounds, "round_seconds": s.round_seconds,
                     "scheme": "https", "http_version": "HTTP/1.1", "bodies": {}}
    try:
        for kind, path in (("json", "/plain/json"), ("50kB", f"/plain/bytes?n={s.body_bytes}")):
            url = f"https://{PLAIN_HOST}{path}"
            rounds: dict[str, list[LoadRound]] = {"with": [], "without": []}
            for r in range(s.rounds):
                for mode, proxy in (("with", with_addon), ("without", without)):
                    res = asyncio.run(run_load(proxy, url, s.concurrency, s.round_seconds, s.warmup_seconds,
                                               origin.pid))
                    res.mode = mode
                    rounds[mode].append(res)
                    log(f"overhead {kind} round {r + 1} {mode}: {res.throughput:.0f} req/s, "
                        f"proxy cpu {res.proxy_cpu_s / res.seconds:.0%}, errors {res.errors}")
            summary: Json = {}
            for mode, rs in rounds.items():
                lat = [x for rr in rs for x in rr.latencies_ms]
                n = sum(rr.requests for rr in rs)
                secs = sum(rr.seconds for rr in rs)
                summary[mode] = {
                    "requests": n, "seconds": secs, "throughput": n / secs if secs else math.nan,
                    "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                    "proxy_cpu_us_per_request": sum(rr.proxy_cpu_s for rr in rs) / n * 1e6 if n else math.nan,
                    "proxy_cpu_share": sum(rr.proxy_cpu_s for rr in rs) / secs if secs else math.nan,
                    "client_cpu_share": sum(rr.client_cpu_s for rr in rs) / secs if secs else math.nan,
                    "origin_cpu_share": sum(rr.origin_cpu_s for rr in rs) / secs if secs else math.nan,
                    "errors": sum(rr.errors for rr in rs),
                    "rounds": [{"throughput": rr.throughput, "p50_ms": percentile(rr.latencies_ms, 50),
                                "p99_ms": percentile(rr.latencies_ms, 99),
                                "proxy_cpu_us": rr.proxy_cpu_s / rr.requests * 1e6 if rr.requests else math.nan}
                               for rr in rs],
                }
            pairs = list(zip(summary["with"]["rounds"], summary["without"]["rounds"], strict=True))

            def paired(name: str, ratio: bool = True, pairs: list[tuple[Json, Json]] = pairs) -> float:
                """Median over the rounds of with/without (or with - without) of adjacent rounds: robust to
                the machine's load drifting during the run."""
                return percentile([a[name] / b[name] if ratio else a[name] - b[name] for a, b in pairs], 50)

            summary["paired"] = {"throughput_ratio": paired("throughput"), "p50_ratio": paired("p50_ms"),
                                 "p99_ratio": paired("p99_ms"), "proxy_cpu_delta_us": paired("proxy_cpu_us", False)}
            details["bodies"][kind] = summary
            w, wo, pr = summary["with"], summary["without"], summary["paired"]
            label = "small JSON" if kind == "json" else f"{s.body_bytes // 1000} kB body"
            key = f"overhead.{kind}"
            report.add(f"{key}.throughput_with", f"{label}: throughput with addon", w["throughput"], "req/s")
            report.add(f"{key}.throughput_without", f"{label}: throughput without addon", wo["throughput"], "req/s")
            report.add(f"{key}.throughput_ratio", f"{label}: throughput ratio with/without",
                       pr["throughput_ratio"], "x", ">= 0.97", "brief")
            for q in ("p50", "p99"):
                report.add(f"{key}.{q}_with", f"{label}: {q} latency with addon", w[f"{q}_ms"], "ms")
                report.add(f"{key}.{q}_without", f"{label}: {q} latency without addon", wo[f"{q}_ms"], "ms")
                report.add(f"{key}.{q}_ratio", f"{label}: {q} latency ratio with/without",
                           pr[f"{q}_ratio"], "x", "<= 1.10", "bench")
            report.add(f"{key}.proxy_cpu_delta", f"{label}: mitmdump CPU per request, with - without",
                       pr["proxy_cpu_delta_us"], "µs")
            # Throughput on a shared 2-core machine swings by about 10% between rounds; the CPU each request
            # costs the proxy is steadier, and the throughput it implies is what a CPU-bound proxy would reach.
            cpu_ratio = wo["proxy_cpu_us_per_request"] / (wo["proxy_cpu_us_per_request"] + pr["proxy_cpu_delta_us"])
            report.add(f"{key}.cpu_implied_ratio", f"{label}: throughput ratio implied by CPU per request",
                       cpu_ratio, "x", ">= 0.97", "brief")
    finally:
        with_addon.stop()
        without.stop()
    report.details["overhead"] = details


# -- 2. cost per flow, in-process -------------------------------------------------------------------------------------


def _challenge_images(manifest_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    """mode -> (url1 image, url2 image) of the manifest's first whirl (PNG variant) and first slide."""
    out: dict[str, tuple[bytes, bytes]] = {}
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    for ch in manifest["challenges"]:
        roles = {"whirl": ("outer", "inner"), "slide": ("background", "piece")}.get(ch["mode"])
        if roles and ch["mode"] not in out:
            first, second = ((manifest_dir / ch["images"][r]["file"]).read_bytes() for r in roles)
            out[ch["mode"]] = (first, second)
    return out


class FlowFactory:
    """mitmproxy test flows as the addon sees them in a real proxy: API traffic and whole challenges."""

    def __init__(self, images: dict[str, tuple[bytes, bytes]], clients: int = 100) -> None:
        self.images = images
        self.clients = clients
        """Challenges come from this many client addresses in turn (as from the proxy runs' devices)."""

    @staticmethod
    def make(host: str, path: str, body: bytes, client: str, ctype: str) -> Any:
        from mitmproxy.test import tflow, tutils

        f = tflow.tflow(resp=True)
        f.client_conn.peername = (client, 40000)
        f.request = tutils.treq(host=host, port=443, scheme=b"https", path=path.encode(),
                                headers=((b"user-agent", b"okhttp/3.12.13"), (b"accept-encoding", b"gzip")))
        f.request.headers["host"] = host
        f.response = tutils.tresp(status_code=200, content=body,
                                  headers=((b"content-type", ctype.encode()),
                                           (b"content-length", str(len(body)).encode())))
        return f

    def plain(self, i: int) -> Any:
        return self.make(PLAIN_HOST, f"/aweme/v1/feed/?count=6&cursor={i}&aid=1233", PLAIN_JSON_BODY,
                         f"10.0.{i // 250 % 250}.{i % 250 + 1}", "application/json; charset=utf-8")

    def challenge(self, i: int) -> tuple[Any, Any, Any]:
        """The get, the first image and the image that completes challenge ``i`` (whirl or slide in turn)."""
        mode = ("whirl", "slide")[i % 2]
        client = f"10.1.0.{i % self.clients + 1}"
        cid = f"{i:040x}"
        suffixes = ("~tplv-b4yrtqhy5a-1.png", "~tplv-b4yrtqhy5a-1.png") if mode == "whirl" else (
            "~tplv-b4yrtqhy5a-2.jpeg", "~tplv-b4yrtqhy5a-1.png")
        paths = [f"{IMAGE_PREFIX}{2 * i + k:032x}{suffixes[k]}" for k in (0, 1)]
        question = {"url1": f"https://{CDN_HOST}{paths[0]}", "url2": f"https://{CDN_HOST}{paths[1]}",
                    "backup_url1": [f"https://{BACKUP_CDN_HOST}{paths[0]}"],
                    "backup_url2": [f"https://{BACKUP_CDN_HOST}{paths[1]}"],
                    "tip_y": 87 if mode == "slide" else 0}
        body = json.dumps({"code": 200, "message": "Success", "data": {
            "id": cid, "mode": mode, "challenge_code": 99996 if mode == "whirl" else 99999, "version": 2,
            "question": question, "verify_id": f"Verify_{i:08x}-0000-4000-8000-000000000000"}}).encode()
        get = self.make(VERIFY_HOST, f"/captcha/get?aid=1988&mode={mode}&os_type=0", body, client,
                        "application/json")
        first = self.make(CDN_HOST, paths[0], self.images[mode][0], client, "image/png")
        last = self.make(CDN_HOST, paths[1], self.images[mode][1], client, "image/png")
        return get, first, last


def _addons(sidecar: Path) -> tuple[list[Any], Any, Any]:
    from addon.mitm.api import CaptchaApi
    from addon.mitm.capture import CaptchaCapture
    from addon.wiring import build_addons

    addons = build_addons()
    capture = next(a for a in addons if isinstance(a, CaptchaCapture))
    api = next(a for a in addons if isinstance(a, CaptchaApi))
    return addons, capture, api


async def _flowcost(s: Settings, factory: FlowFactory, sidecar: Path) -> Json:
    from mitmproxy.test import taddons

    addons, capture, api = _addons(sidecar)
    timings: dict[str, dict[str, list[float]]] = {}

    def record(category: str, hook: str, ns: int) -> None:
        timings.setdefault(category, {}).setdefault(hook, []).append(ns / 1000)

    async def timed(category: str, flow: Any) -> None:
        # In a proxy the request hook runs before there is a response: hide it meanwhile.
        response, flow.response = flow.response, None
        t0 = time.perf_counter_ns()
        await api.request(flow)
        t1 = time.perf_counter_ns()
        flow.response = response
        await capture.response(flow)
        t2 = time.perf_counter_ns()
        record(category, "request", t1 - t0)
        record(category, "response", t2 - t1)
        record(category, "total", t2 - t0)

    with taddons.context(*addons) as tctx:
        tctx.configure(capture, captcha_sidecar=str(sidecar), captcha_solvers="none")
        plain = [factory.plain(i) for i in range(500)]
        for i in range(min(2000, s.flowcost_plain)):  # warm-up
            await timed("warmup", plain[i % len(plain)])
        for i in range(s.flowcost_plain):
            await timed("plain", plain[i % len(plain)])
        for i in range(s.flowcost_captcha):
            get, first, last = factory.challenge(i)
            await timed("get", get)
            await timed("image_first", first)
            await timed("image_last", last)
            if i % 50 == 49:
                await asyncio.sleep(0)  # lets the addon's periodic tick run now and then, as it would
        captured = api.handler.stats(None)["captured"]
    out: Json = {"captured": captured, "image_bytes": {m: [len(b) for b in pair]
                                                       for m, pair in factory.images.items()}, "hooks": {}}
    for category, hooks_ in timings.items():
        if category == "warmup":
            continue
        out["hooks"][category] = {
            hook: {"n": len(v), "mean_us": mean(v), "p50_us": percentile(v, 50), "p99_us": percentile(v, 99),
                   "max_us": max(v)}
            for hook, v in hooks_.items()
        }
    return out


async def _dispatch_cost(s: Settings, factory: FlowFactory, sidecar: Path) -> Json:
    """Per ordinary flow, the cost of its four hook events (requestheaders, request, responseheaders, response)
    through mitmproxy's addon manager, with mitmproxy's default addons, the addon loaded as mitmdump loads it
    (``scripts=[addon/main.py]``) against none: the hooks themselves plus mitmproxy's dispatch to the addon."""
    from mitmproxy import eventsequence, hooks, master, options
    from mitmproxy.addons import default_addons

    async def build(scripts: list[str]) -> Any:
        opts = options.Options()
        m = master.Master(opts, event_loop=asyncio.get_running_loop())
        m.addons.add(*default_addons())
        opts.update_defer(captcha_sidecar=str(sidecar), captcha_solvers="none")
        opts.update(scripts=scripts)
        await m.addons.trigger_event(hooks.RunningHook())
        await asyncio.sleep(0.1)
        return m

    masters = {"without": await build([]), "with": await build([str(ROOT / ADDON_SCRIPT)])}
    flows = [factory.plain(i) for i in range(200)]
    per_flow: dict[str, list[float]] = {"with": [], "without": []}
    for rnd in range(s.dispatch_rounds + 1):
        for name, m in masters.items():
            for f in flows:
                events = list(eventsequence.iterate(f))
                t0 = time.perf_counter_ns()
                for event in events:
                    await m.addons.handle_lifecycle(event)
                if rnd:  # the first round warms up
                    per_flow[name].append((time.perf_counter_ns() - t0) / 1000)
    for m in masters.values():
        await m.addons.trigger_event(hooks.DoneHook())
    out: Json = {name: {"median_us": percentile(v, 50), "mean_us": mean(v), "n": len(v)}
                 for name, v in per_flow.items()}
    out["delta_median_us"] = out["with"]["median_us"] - out["without"]["median_us"]
    return out


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of ``root`` and everything it references that ``seen`` does not hold yet (modules, classes,
    functions and methods are not followed)."""
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
            types.CodeType, types.FrameType)
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def addon_state_sizes(addons: Sequence[Any]) -> dict[str, int]:
    """Deep size of each attribute of the addon objects and of the state objects they share (one walk, so an
    object referenced from two places counts once, where it is met first)."""
    import logging

    seen: set[int] = set()
    out: dict[str, int] = {}
    # Objects that are configuration or infrastructure, not state that grows with traffic.
    for obj in (logging.getLogger("addon"), logging.getLogger(), *addons):
        seen.add(id(obj))
    capture = next(a for a in addons if type(a).__name__ == "CaptchaCapture")
    api = next(a for a in addons if type(a).__name__ == "CaptchaApi")
    roots: list[tuple[str, Any]] = [(type(a).__name__, a) for a in addons]
    roots += [("Board", api.handler.board), ("Assembler", capture.assembler), ("EventBus", capture.bus),
              ("Scheduler", capture.scheduler), ("ClientKeyer", capture.keyer)]
    for obj in (o for _, o in roots[len(addons):]):
        seen.add(id(obj))
    for name, obj in roots:
        attrs = vars(obj) if hasattr(obj, "__dict__") else {
            slot: getattr(obj, slot) for slot in getattr(type(obj), "__slots__", ()) if hasattr(obj, slot)}
        for attr, value in attrs.items():
            out[f"{name}.{attr}"] = deep_size(value, seen)
    return out


async def _retained(count: int, factory: FlowFactory, sidecar: Path) -> Json:
    """What the addon's state holds after ``count`` captured challenges (capture only), attribute by attribute."""
    from mitmproxy.test import taddons

    addons, capture, api = _addons(sidecar)
    with taddons.context(*addons) as tctx:
        tctx.configure(capture, captcha_sidecar=str(sidecar), captcha_solvers="none")
        for i in range(20):  # warm-up: imports, caches
            for f in factory.challenge(10_000_000 + i):
                await capture.response(f)
        gc.collect()
        before = addon_state_sizes(addons)
        for i in range(count):
            for f in factory.challenge(i):
                response, f.response = f.response, None
                await api.request(f)
                f.response = response
                await capture.response(f)
        gc.collect()
        after = addon_state_sizes(addons)
        captured = api.handler.stats(None)["captured"]
    diff = {name: after[name] - before.get(name, 0) for name in after}
    total = sum(diff.values())
    top = sorted(((n, d) for n, d in diff.items() if d), key=lambda kv: -kv[1])[:12]
    return {"challenges": count, "captured": captured, "clients": factory.clients, "retained_mb": total / 2**20,
            "per_challenge_bytes": total / max(count, 1), "by_attribute_kb": {n: round(d / 1024, 1) for n, d in top}}


def bench_flowcost(s: Settings, report: Report, manifest_dir: Path, work: Path) -> None:
    factory = FlowFactory(_challenge_images(manifest_dir))
    result = asyncio.run(_flowcost(s, factory, work / "flowcost.jsonl"))
    result["dispatch"] = asyncio.run(_dispatch_cost(s, factory, work / "dispatch.jsonl"))
    report.details["flowcost"] = result
    labels = {"plain": "non-captcha flow", "get": "captcha get", "image_first": "captcha image, first part",
              "image_last": "captcha image completing it"}
    for category, label in labels.items():
        total = result["hooks"][category]["total"]
        goal = "< 20" if category == "plain" else ""
        report.add(f"flowcost.{category}.mean", f"{label}: hooks, mean", total["mean_us"], "µs", goal,
                   "brief" if goal else "")
        report.add(f"flowcost.{category}.p99", f"{label}: hooks, p99", total["p99_us"], "µs")
    report.add("flowcost.dispatch_delta", "non-captcha flow via mitmproxy's dispatch, with - without",
               result["dispatch"]["delta_median_us"], "µs")
    if result["captured"] != s.flowcost_captcha:
        report.notes.append(f"flowcost: {result['captured']} of {s.flowcost_captcha} challenges were captured")


# -- 3 and 5. answer latency, event-loop lag ---------------------------------------------------------------------------


@dataclass
class Sample:
    level: int
    client: str
    mode: str
    challenge: str
    t_last_wall: float
    t_last_mono: float
    t_answer_mono: float = math.nan
    t_answer_wall: float = math.nan
    event: Json | None = None
    status: int = 0

    @property
    def to_answer_ms(self) -> float:
        return (self.t_answer_mono - self.t_last_mono) * 1000

    @property
    def to_event_ms(self) -> float:
        if self.event is None or "time" not in self.event:
            return math.nan
        return (parse_rfc3339(self.event["time"]) - self.t_last_wall) * 1000


async def _one_challenge(dev: Device, mode: str, after: int, level: int) -> Sample:
    ch = await dev.get_challenge(mode)
    wait = asyncio.create_task(dev.api("/v1/answer/wait", after=after, timeout=30))
    await asyncio.sleep(0)
    await dev.fetch_images(ch, order="normal")
    sample = Sample(level, dev.ip, mode, ch.id, time.time(), time.monotonic())
    resp = await wait
    sample.t_answer_mono, sample.t_answer_wall = time.monotonic(), time.time()
    sample.status = resp.status_code
    if resp.status_code == 200:
        sample.event = resp.json()
    return sample


async def _latency_level(proxy: MitmdumpProcess, n: int, rounds: int, first_ip: int, level_index: int,
                         modes: Sequence[str] = ("whirl", "slide")) -> tuple[list[Sample], float, float]:
    """``rounds`` rounds of ``n`` devices at once, each with one challenge of ``modes`` (in turn across devices,
    rounds and levels)."""
    fleet = Fleet(n, proxy.proxy_url, proxy.ca_path, first=first_ip, timeout=60.0)
    samples: list[Sample] = []
    last_seq = {d.ip: 0 for d in fleet}
    try:
        async def warm(d: Device) -> None:
            # Opens the device's connections (the tunnels to both hosts, the API) before anything is timed.
            await d.get_plain("/plain/json", host=VERIFY_HOST)
            await d.get_plain("/plain/json", host=CDN_HOST)
            await d.api("/v1/stats")

        await asyncio.gather(*(warm(d) for d in fleet))
        await asyncio.sleep(0.5)
        t_start = time.time()
        for r in range(rounds):
            batch = await asyncio.gather(*(
                _one_challenge(d, modes[(i + r + level_index) % len(modes)], last_seq[d.ip], n)
                for i, d in enumerate(fleet)))
            for smp in batch:
                if smp.event is not None:
                    last_seq[smp.client] = int(smp.event["seq"])
            samples.extend(batch)
        t_end = time.time()
    finally:
        await fleet.aclose()
    return samples, t_start, t_end


def _service_breakdown(samples: list[Sample], fake_log: list[Json]) -> None:
    """Adds the fake's view (when createJob and the final getJobResult arrived there) to each sample's event,
    matched by the ``job_id`` of the ``solved`` event."""
    created: dict[int, float] = {}
    final_poll: dict[int, float] = {}
    for entry in fake_log:
        path = entry.get("path", "")
        response = entry.get("response")
        job = entry.get("job_id")
        if not isinstance(response, dict) or not isinstance(job, int):
            continue
        if path.endswith("/createJob"):
            created.setdefault(job, float(entry["time"]))
        elif path.endswith("/getJobResult") and response.get("status") in ("success", "fail"):
            final_poll.setdefault(job, float(entry["time"]))
    for smp in samples:
        job = smp.event.get("job_id") if smp.event is not None else None
        if smp.event is not None and isinstance(job, int) and job in created and job in final_poll:
            smp.event["_bench"] = {"create_arrival": created[job], "final_poll_arrival": final_poll[job]}


def _level_summary(samples: list[Sample]) -> Json:
    ok = [x for x in samples if x.event is not None and x.event.get("event") == "solved"]
    to_event = [x.to_event_ms for x in ok]
    to_answer = [x.to_answer_ms for x in ok]
    elapsed = [float(x.event["elapsed_ms"]) for x in ok if x.event is not None]
    a, b, c, net = [], [], [], []
    for x in ok:
        assert x.event is not None
        bench = x.event.get("_bench") or {}
        if bench.get("final_poll_arrival") is not None:
            a.append((bench["create_arrival"] - x.t_last_wall) * 1000)
            b.append((bench["final_poll_arrival"] - bench["create_arrival"]) * 1000)
            c.append((x.t_answer_wall - bench["final_poll_arrival"]) * 1000)
            net.append(x.to_answer_ms - b[-1])
    outcomes: dict[str, int] = {}
    for x in samples:
        name = x.event.get("event", "?") if x.event is not None else f"http_{x.status}"
        if x.event is not None and name == "failed":
            name = f"failed:{x.event.get('reason')}"
        outcomes[name] = outcomes.get(name, 0) + 1
    out: Json = {"challenges": len(samples), "solved": len(ok), "outcomes": outcomes}
    for name, values in (("to_event_ms", to_event), ("to_answer_ms", to_answer), ("addon_elapsed_ms", elapsed),
                         ("capture_to_create_ms", a), ("create_to_final_poll_ms", b),
                         ("final_poll_to_answer_ms", c), ("net_of_service_ms", net)):
        out[name] = {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values, default=math.nan),
                     "n": len(values)}
    return out


def _read_looplag(path: Path, t_start: float, t_end: float) -> Json:
    windows: list[Json] = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                windows.append(json.loads(line))
    inside = [w for w in windows if t_start <= w["t"] <= t_end + 0.3]
    worst = max(inside, key=lambda w: float(w["max_ms"]), default=None)
    return {
        "max_ms": worst["max_ms"] if worst else math.nan,
        "max_cpu_ms": worst.get("max_cpu_ms", math.nan) if worst else math.nan,
        "max_busy_ms": max((w.get("max_busy_ms", math.nan) for w in inside), default=math.nan),
        "windows": len(inside),
        "max_over_whole_run_ms": max((w["max_ms"] for w in windows), default=math.nan),
        "per_window_max_ms": [round(w["max_ms"], 2) for w in inside],
    }


async def _burst(proxy: MitmdumpProcess, n: int, first_ip: int,
                 modes: Sequence[str] = ("whirl", "slide")) -> tuple[float, float]:
    """The traffic of the largest latency level without the solving: ``n`` warmed-up devices each fetch a
    challenge of ``modes`` (in turn) and its images at once."""
    fleet = Fleet(n, proxy.proxy_url, proxy.ca_path, first=first_ip, timeout=60.0)
    try:
        async def warm(d: Device) -> None:
            await d.get_plain("/plain/json", host=VERIFY_HOST)
            await d.get_plain("/plain/json", host=CDN_HOST)

        async def one(d: Device, mode: str) -> None:
            await d.fetch_images(await d.get_challenge(mode), order="normal")

        await asyncio.gather(*(warm(d) for d in fleet))
        await asyncio.sleep(0.5)
        t_start = time.time()
        await asyncio.gather(*(one(d, modes[i % len(modes)]) for i, d in enumerate(fleet)))
        return t_start, time.time()
    finally:
        await fleet.aclose()


def looplag_control(s: Settings, origin: ChildOrigin, work: Path) -> Json:
    """Event-loop lag of mitmdump *without* the addon under the same burst of devices (capture traffic only)."""
    looplag = work / "looplag-control.jsonl"
    proxy = MitmdumpProcess([LOOPLAG_SCRIPT], origin=(origin.http_port, origin.https_port),
                            workdir=work / "looplag-control", options={"flow_detail": 0, "looplag_file": str(looplag)})
    proxy.start()
    try:
        n = max(n for n, _ in s.levels)
        t_start, t_end = asyncio.run(_burst(proxy, n, 2))
        time.sleep(0.5)
        return {"devices": n, "seconds": t_end - t_start, **_read_looplag(looplag, t_start, t_end)}
    finally:
        proxy.stop()


def bench_latency(s: Settings, report: Report, origin: ChildOrigin, fake_url: str, work: Path,
                  sections: set[str]) -> None:
    looplag = work / "looplag.jsonl"
    proxy = MitmdumpProcess([ADDON_SCRIPT, LOOPLAG_SCRIPT], origin=(origin.http_port, origin.https_port),
                            workdir=work / "latency", options={
                                "flow_detail": 0, "omocaptcha_key": SERVICE_KEY, "omocaptcha_url": fake_url + "/api/",
                                "captcha_poll_ms": POLL_MS, "captcha_sidecar": str(work / "latency.jsonl"),
                                "looplag_file": str(looplag)})
    proxy.start()
    details: Json = {"poll_ms": POLL_MS, "levels": {}}
    first_ip = 2
    try:
        proxy.wait_for_log("omocaptcha-v1 key accepted", timeout=10)
        for index, (n, rounds) in enumerate(s.levels):
            httpx.post(f"{fake_url}/_log/clear", timeout=5, trust_env=False)
            samples, t_start, t_end = asyncio.run(_latency_level(proxy, n, rounds, first_ip, index))
            time.sleep(0.5)  # the lag probe writes a line every quarter of a second
            first_ip += n
            fake_log = httpx.get(f"{fake_url}/_log", timeout=30, trust_env=False).json()["requests"]
            _service_breakdown(samples, fake_log)
            summary = _level_summary(samples)
            summary["devices"], summary["rounds"], summary["seconds"] = n, rounds, t_end - t_start
            summary["proxy_rss_mb"] = rss_mb(proxy.pid)
            summary["looplag"] = _read_looplag(looplag, t_start, t_end)
            details["levels"][str(n)] = summary
            log(f"latency N={n}: {summary['solved']}/{summary['challenges']} solved, "
                f"answer p50 {summary['to_answer_ms']['p50']:.1f} ms p99 {summary['to_answer_ms']['p99']:.1f} ms, "
                f"loop lag max {summary['looplag']['max_ms']:.1f} ms")
    finally:
        proxy.stop()
    if "looplag" in sections:
        details["looplag_control"] = looplag_control(s, origin, work)
        log(f"loop lag without the addon, same burst: max {details['looplag_control']['max_ms']:.1f} ms")
    report.details["latency"] = details
    if "latency" in sections:
        for n_text, summary in details["levels"].items():
            key = f"latency.n{n_text}"
            lbl = f"N={n_text}"
            report.add(f"{key}.solved_share", f"{lbl}: share of challenges solved",
                       summary["solved"] / summary["challenges"] if summary["challenges"] else math.nan, "",
                       ">= 1", "bench")
            for q in ("p50", "p99"):
                report.add(f"{key}.to_event_{q}", f"{lbl}: (i) last image -> solved event, {q}",
                           summary["to_event_ms"][q], "ms")
                report.add(f"{key}.to_answer_{q}", f"{lbl}: (ii) last image -> answer at the client, {q}",
                           summary["to_answer_ms"][q], "ms")
                report.add(f"{key}.service_{q}", f"{lbl}: service's share (createJob -> final poll), {q}",
                           summary["create_to_final_poll_ms"][q], "ms")
                goal = ("< 50", "brief") if q == "p99" else ("", "")
                report.add(f"{key}.net_{q}", f"{lbl}: (ii) less the service's share, {q}",
                           summary["net_of_service_ms"][q], "ms", *goal)
    if "looplag" in sections and details["levels"]:
        n_max = str(max(n for n, _ in s.levels))
        lag = details["levels"][n_max]["looplag"]
        report.add("looplag.max", f"longest event-loop stall, N={n_max} run", lag["max_ms"], "ms",
                   "< 50", "brief")
        report.add("looplag.max_cpu", "loop thread's CPU time during that stall", lag["max_cpu_ms"], "ms")
        control = details["looplag_control"]
        report.add("looplag.control_max", f"control: same {control['devices']} devices' gets and images, no addon",
                   control["max_ms"], "ms")


# -- local solver: answers without a key ----------------------------------------------------------------------------

LOCAL_LEVELS = (1, 20)
LOCAL_GROUPS: dict[str, tuple[str, ...]] = {"local": ("whirl", "slide"), "local.3d": ("3d",)}
"""Key prefix -> the modes its challenges take in turn. 3d runs apart from rotate and slide (its model costs far
more per solve than theirs), so each has its own latencies and loop stalls."""


def local_rounds(s: Settings) -> dict[int, int]:
    """Devices at once -> rounds, per group of the local section."""
    return {1: 3, 20: 1} if s.quick else {1: 40, 20: 3}


def local_manifest(manifest_dir: Path, directory: Path, s: Settings) -> Json:
    """The shared manifest plus one real labelled 3d picture (`../shared/samples/3d-train`, one per source
    picture, its own JPEG bytes) per 3d challenge the section runs: the origin hands them out in turn, and a
    picture seen twice would be answered from the addon's cache. The generated 3d scenes have no truth and look
    less real; they are dropped. Without the samples there are no 3d challenges (their figures are missing)."""
    from tests.kit import synth

    shutil.copytree(manifest_dir, directory)
    if (synth.SAMPLES_3D / "labels.json").exists():
        count = sum(n * rounds for n, rounds in local_rounds(s).items())
        synth.add_object_challenges(directory, real_3d=[(name, "jpeg") for name in synth.real_3d_names(count)])
    manifest: Json = json.loads((directory / "manifest.json").read_text())
    return manifest


def bench_local(s: Settings, report: Report, origin: ChildOrigin, work: Path, modes: dict[str, int]) -> None:
    """Capture to answer with the embedded solver (no key, no service), and the event loop's longest stall while
    it solves: the solves run in worker processes, so the loop should not feel them. Timed from the moment the
    workers are warm, as in a proxy that runs before its devices come. Rotate and slide first, then 3d, each at
    every level; ``modes`` counts the origin's challenges per mode (3d needs the real samples)."""
    looplag = work / "looplag-local.jsonl"
    proxy = MitmdumpProcess([ADDON_SCRIPT, LOOPLAG_SCRIPT], origin=(origin.http_port, origin.https_port),
                            workdir=work / "local", options={
                                "flow_detail": 0, "captcha_solvers": "local",
                                "captcha_sidecar": str(work / "local.jsonl"), "looplag_file": str(looplag)})
    groups = {prefix: kinds for prefix, kinds in LOCAL_GROUPS.items() if all(modes.get(m) for m in kinds)}
    for prefix in LOCAL_GROUPS.keys() - groups.keys():
        report.notes.append(f"local: no {'/'.join(LOCAL_GROUPS[prefix])} challenges (the real 3d samples sit in "
                            f"../shared/samples/3d-train): the {prefix}.* figures are missing")
    proxy.start()
    details: Json = {prefix: {"modes": list(kinds), "levels": {}} for prefix, kinds in groups.items()}
    rounds = local_rounds(s)
    first_ip = 2
    try:
        proxy.wait_for_log("worker processes started and warmed up", timeout=120)
        for prefix, kinds in groups.items():
            for index, n in enumerate(LOCAL_LEVELS):
                samples, t_start, t_end = asyncio.run(_latency_level(proxy, n, rounds[n], first_ip, index, kinds))
                time.sleep(0.5)
                first_ip += n
                summary = _level_summary(samples)
                summary["looplag"] = _read_looplag(looplag, t_start, t_end)
                details[prefix]["levels"][str(n)] = summary
                log(f"{prefix} N={n}: {summary['solved']}/{summary['challenges']} solved, answer p50 "
                    f"{summary['to_answer_ms']['p50']:.1f} ms, loop lag max {summary['looplag']['max_ms']:.1f} ms")
    finally:
        proxy.stop()
    controls = _local_control(origin, work, max(LOCAL_LEVELS), first_ip, groups)
    for prefix, control in controls.items():
        details[prefix]["control"] = control
        log(f"{prefix} control, N={max(LOCAL_LEVELS)} without the addon: loop lag max {control['max_ms']:.1f} ms, "
            f"busy {control['max_busy_ms']:.1f} ms")
    report.details["local"] = details
    for prefix, kinds in LOCAL_GROUPS.items():
        group = details.get(prefix, {"levels": {}, "control": {"devices": max(LOCAL_LEVELS)}})
        what = "local solver" if prefix == "local" else f"local solver, {'/'.join(kinds)}"
        for n in LOCAL_LEVELS:
            summary = group["levels"].get(str(n))
            key, lbl = f"{prefix}.n{n}", f"{what}, N={n}"
            value = functools.partial(_summary_figure, summary)
            share = summary["solved"] / summary["challenges"] if summary and summary["challenges"] else math.nan
            report.add(f"{key}.solved_share", f"{lbl}: share of challenges solved", share, "", ">= 1", "bench")
            for q in ("p50", "p99"):
                report.add(f"{key}.to_event_{q}", f"{lbl}: last image -> solved event, {q}", value("to_event_ms", q),
                           "ms")
                goal = ("< 150", "brief") if (q, n) in (("p50", 1), ("p99", 20)) else ("", "")
                report.add(f"{key}.to_answer_{q}", f"{lbl}: last image -> answer at the client, {q}",
                           value("to_answer_ms", q), "ms", *goal)
            goal = ("<= 10", "brief") if n == 20 else ("", "")
            report.add(f"{key}.looplag_max", f"{lbl}: longest event-loop stall", value("looplag", "max_ms"), "ms",
                       *goal)
            report.add(f"{key}.looplag_busy", f"{lbl}: most CPU the loop's thread spent between two wake-ups",
                       value("looplag", "max_busy_ms"), "ms")
        control = group["control"]
        lbl = f"control: the same {control['devices']} devices' {'/'.join(kinds)} gets and images, no addon"
        report.add(f"{prefix}.control.looplag_max", f"{lbl}: longest event-loop stall",
                   control.get("max_ms", math.nan), "ms")
        report.add(f"{prefix}.control.looplag_busy", f"{lbl}: most CPU between two wake-ups",
                   control.get("max_busy_ms", math.nan), "ms")


def _summary_figure(summary: Json | None, name: str, q: str) -> float:
    """``summary[name][q]``, NaN for a level that did not run."""
    return float(summary[name][q]) if summary is not None else math.nan


def _local_control(origin: ChildOrigin, work: Path, n: int, first_ip: int,
                   groups: dict[str, tuple[str, ...]]) -> dict[str, Json]:
    """Per group, the loop's stalls under the same burst of devices through mitmdump without the addon: what the
    proxy itself costs, which no solver can take away."""
    looplag = work / "looplag-local-control.jsonl"
    proxy = MitmdumpProcess([LOOPLAG_SCRIPT], origin=(origin.http_port, origin.https_port),
                            workdir=work / "local-control", options={"flow_detail": 0, "looplag_file": str(looplag)})
    proxy.start()
    out: dict[str, Json] = {}
    try:
        for prefix, kinds in groups.items():
            t_start, t_end = asyncio.run(_burst(proxy, n, first_ip, kinds))
            time.sleep(0.5)
            first_ip += n
            out[prefix] = {"devices": n, "seconds": t_end - t_start, **_read_looplag(looplag, t_start, t_end)}
        return out
    finally:
        proxy.stop()


# -- outlets: what each event costs the proxy's loop -----------------------------------------------------------------


def bench_outlets(s: Settings, report: Report) -> None:
    """In-process: the bus with the default outlets (tally, board, log line, dashboard, event stream), with 0, 1
    and 10 open event streams on loopback; and the tally and dashboard outlets alone."""
    result = asyncio.run(_outlets(2_000 if s is QUICK else 20_000))
    report.details["outlets"] = result
    report.add("outlets.bus_default", "bus.emit with the default outlets, per event", result["bus"]["0"], "µs")
    report.add("outlets.bus_streams_1", "same, with 1 open event stream (its socket writes included)",
               result["bus"]["1"], "µs")
    report.add("outlets.bus_streams_10", "same, with 10 open event streams", result["bus"]["10"], "µs")
    report.add("outlets.tally_observe", "Tally.observe alone, per event", result["tally"], "µs")
    report.add("outlets.dashboard", "dashboard outlet (image store) alone, per event", result["dashboard"], "µs")


async def _outlets(n: int) -> Json:
    from addon.publish import events as ev
    from addon.publish.board import Board
    from addon.publish.bus import EventBus
    from addon.publish.dashboard_api import Dashboard
    from addon.publish.event_stream import SECRET_HEADER, EventStreamServer
    from addon.publish.logline import log_event
    from addon.publish.tally import Tally
    from addon.solving.base import RotateAnswer

    logging.getLogger("addon").setLevel(logging.WARNING)  # the log line's formatting, not a console, is timed

    def events(count: int) -> list[ev.Event]:
        out: list[ev.Event] = []
        for i in range(count):
            common = {"client": f"10.0.{i % 50}.1", "challenge": f"ch{i}", "kind": "rotate"}
            if i % 2:
                out.append(ev.Solved(**common, service="local", job_id=None, result="90",  # type: ignore[arg-type]
                                     answer=RotateAnswer.from_angle(90), elapsed_ms=12, tried=("local",)))
            else:
                out.append(ev.Captured(**common, images={}, source="get"))  # type: ignore[arg-type]
        return out

    async def run(streams: int) -> float:
        bus, board = EventBus(), Board()
        server = EventStreamServer(board)
        await server.start()
        tally = Tally()
        dashboard = Dashboard(tally, in_flight=lambda: 0, waiting=lambda: 0, balance=dict)
        for name, outlet in (("tally", tally), ("board", board.add), ("log", log_event), ("dashboard", dashboard),
                             ("stream", server.publish)):
            bus.subscribe(name, outlet)
        readers = []
        for _ in range(streams):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(f"GET /v1/events/stream HTTP/1.1\r\n{SECRET_HEADER}: {server.secret}\r\n\r\n".encode())
            await w.drain()
            await r.readuntil(b"\r\n\r\n")
            readers.append(asyncio.create_task(_drain_reader(r)))
        batch = events(n)
        started = time.perf_counter()
        cpu = time.process_time()
        for i, event in enumerate(batch):
            bus.emit(event)
            if i % 50 == 49:
                await asyncio.sleep(0)  # the streams write what was queued, as the loop would between flows
        while server.readers and any(not q.empty() for q in server._readers):
            await asyncio.sleep(0.001)
        spent = time.process_time() - cpu
        _ = time.perf_counter() - started
        for task in readers:
            task.cancel()
        await server.stop()
        return spent / n * 1e6

    bus_cost = {str(k): await run(k) for k in (0, 1, 10)}
    tally = Tally()
    docs = [e.to_json() for e in events(n)]
    t = time.perf_counter()
    for doc in docs:
        tally.observe(doc)
    tally_cost = (time.perf_counter() - t) / n * 1e6
    dashboard = Dashboard(Tally(), in_flight=lambda: 0, waiting=lambda: 0, balance=dict)
    batch = events(n)
    for e in batch:
        e.to_json()
    t = time.perf_counter()
    for e in batch:
        dashboard(e)
    dashboard_cost = (time.perf_counter() - t) / n * 1e6
    return {"events": n, "bus": bus_cost, "tally": tally_cost, "dashboard": dashboard_cost}


async def _drain_reader(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


# -- 4. memory --------------------------------------------------------------------------------------------------------


async def _drive(proxy: MitmdumpProcess, devices: int, checkpoints: Sequence[int], with_api: bool,
                 settle: float) -> list[Json]:
    """Devices run get + both images (plain HTTP) back to back; at each checkpoint (challenges run so far) the
    run pauses, waits until the addon has captured them all (``/v1/stats``, when ``with_api``), lets mitmdump
    settle for a second and reads its VmRSS."""
    fleet = Fleet(devices, proxy.proxy_url, proxy.ca_path, http2=False, timeout=60.0)
    curve: list[Json] = []
    done = 0

    async def captured() -> int:
        r = await fleet[0].api("/v1/stats")
        return int(r.json()["captured"])

    try:
        for target in checkpoints:
            remaining = target - done

            async def run(d: Device) -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    ch = await d.get_challenge(("whirl", "slide")[remaining % 2], scheme="http")
                    await d.fetch_images(ch, order="normal")

            await asyncio.gather(*(run(d) for d in fleet))
            done = target
            count = None
            if with_api:
                deadline = time.monotonic() + 10
                count = await captured()
                while count < target and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    count = await captured()
            await asyncio.sleep(settle)
            curve.append({"challenges": target, "captured": count, "rss_mb": rss_mb(proxy.pid)})
            log(f"memory ({'with' if with_api else 'without'} addon): {target} challenges, "
                f"captured {count}, VmRSS {curve[-1]['rss_mb']:.1f} MB")
    finally:
        await fleet.aclose()
    return curve


def bench_memory(s: Settings, report: Report, manifest_dir: Path, work: Path) -> None:
    step = max(1, (s.memory_high - s.memory_low) // s.memory_points)
    checkpoints = [s.memory_low, *range(s.memory_low + step, s.memory_high, step), s.memory_high]
    details: Json = {
        "mode": "capture only (no omocaptcha key); plain HTTP; every get hands out a fresh challenge id and fresh "
                "image paths, the image bytes cycling through the generated manifest; the same traffic also "
                "through mitmdump without the addon, as a control",
        "devices": s.memory_devices,
    }
    with ChildOrigin("bench", manifest_dir, work / "memory-origin") as origin:
        for mode, scripts in (("with", [ADDON_SCRIPT]), ("without", [])):
            options: dict[str, str | int] = {"flow_detail": 0}
            if scripts:
                options["captcha_sidecar"] = str(work / "memory.jsonl")
                options["captcha_solvers"] = "none"  # capture only, as the figure says
            proxy = MitmdumpProcess(scripts, origin=(origin.http_port, origin.https_port),
                                    workdir=work / f"memory-{mode}", options=options)
            proxy.start()
            try:
                t0 = time.monotonic()
                rss_start = rss_mb(proxy.pid)
                curve = asyncio.run(_drive(proxy, s.memory_devices, checkpoints, with_api=bool(scripts),
                                           settle=s.memory_settle))
                details[mode] = {"rss_start_mb": rss_start, "curve": curve, "seconds": time.monotonic() - t0}
            finally:
                proxy.stop()
    report.details["memory"] = details
    w, wo = details["with"]["curve"], details["without"]["curve"]
    low, high = w[0], w[-1]
    growth = high["rss_mb"] - low["rss_mb"]
    control = wo[-1]["rss_mb"] - wo[0]["rss_mb"]
    report.add("memory.rss_low", f"mitmdump VmRSS after {low['captured']:,} captured challenges", low["rss_mb"],
               "MB")
    report.add("memory.rss_high", f"mitmdump VmRSS after {high['captured']:,} captured challenges",
               high["rss_mb"], "MB")
    report.add("memory.growth", f"growth from {low['captured']:,} to {high['captured']:,} captured",
               growth, "MB", "< 30", "brief")
    report.add("memory.growth_without", "same traffic without the addon: growth", control, "MB")
    report.add("memory.growth_addon", "growth due to the addon (with minus without)", growth - control, "MB")
    retained = asyncio.run(_retained(s.memory_high, FlowFactory(_challenge_images(manifest_dir)),
                                     work / "retained.jsonl"))
    details["in_process"] = retained
    report.add("memory.retained_in_process", f"in-process: addon state after {s.memory_high:,} challenges",
               retained["retained_mb"], "MB", "< 30", "bench")
    if low["captured"] != s.memory_low or high["captured"] != s.memory_high:
        report.notes.append(f"memory: captured {low['captured']} and {high['captured']} rather than "
                            f"{s.memory_low} and {s.memory_high}")


# -- fake omocaptcha -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_service(manifest_dir: Path, work: Path) -> Iterator[str]:
    """The fake solving service in a child process; yields its base URL (``http://127.0.0.1:PORT``)."""
    args = [sys.executable, "-m", "tests.kit.fake_omocaptcha", "--port", "0", "--key", SERVICE_KEY,
            "--manifest", str(manifest_dir), "--solve-seconds", "0", "--balance", "1000"]
    with open(work / "fake.log", "ab") as err:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake omocaptcha did not start; see {work / 'fake.log'}")
        port = json.loads(line)["port"]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- main -------------------------------------------------------------------------------------------------------------


def lighten_httpx() -> None:
    """httpcore tries ``import sniffio`` on every request; when it is not installed, each failed import walks
    ``sys.path`` again (about 100 µs). A ``None`` entry in ``sys.modules`` makes the import fail at once."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def run(s: Settings, sections: set[str], work: Path) -> Report:
    lighten_httpx()
    report = Report(s)
    report.details["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "loadavg_start": os.getloadavg()}
    report.details["started"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    manifest_dir = work / "manifest"
    manifest = generate_manifest(manifest_dir, s.manifest_per_mode)
    report.details["manifest"] = {"modes": count_modes(manifest), "seconds": time.monotonic() - t0}
    log(f"manifest: {count_modes(manifest)} in {time.monotonic() - t0:.1f} s")
    if "flowcost" in sections:
        t = time.monotonic()
        bench_flowcost(s, report, manifest_dir, work)
        log(f"flowcost: {time.monotonic() - t:.1f} s")
    if sections & {"overhead", "latency", "looplag"}:
        with ChildOrigin("testkit", manifest_dir, work / "origin") as origin:
            if "overhead" in sections:
                t = time.monotonic()
                bench_overhead(s, report, origin, work)
                log(f"overhead: {time.monotonic() - t:.1f} s")
            if sections & {"latency", "looplag"}:
                t = time.monotonic()
                with fake_service(manifest_dir, work) as fake_url:
                    bench_latency(s, report, origin, fake_url, work, sections)
                log(f"latency: {time.monotonic() - t:.1f} s")
    if "local" in sections:
        t = time.monotonic()
        local_dir = work / "manifest-local"
        local_modes = count_modes(local_manifest(manifest_dir, local_dir, s))
        with ChildOrigin("testkit", local_dir, work / "origin-local") as origin:
            bench_local(s, report, origin, work, local_modes)
        log(f"local: {time.monotonic() - t:.1f} s")
    if "outlets" in sections:
        t = time.monotonic()
        bench_outlets(s, report)
        log(f"outlets: {time.monotonic() - t:.1f} s")
    if "memory" in sections:
        t = time.monotonic()
        bench_memory(s, report, manifest_dir, work)
        log(f"memory: {time.monotonic() - t:.1f} s")
    if "fleet" in sections:
        t = time.monotonic()
        from scripts import bench_fleet

        fs = bench_fleet.QUICK if s is QUICK else bench_fleet.FULL
        fleet_manifest = work / "fleet-manifest"
        bench_fleet.plain_manifest(fleet_manifest, fs.per_mode)
        (work / "fleet-fake").mkdir(parents=True, exist_ok=True)
        with ChildOrigin("testkit", fleet_manifest, work / "fleet-origin") as origin, \
                fake_service(fleet_manifest, work / "fleet-fake") as fake_url:
            bench_fleet.bench_fleet(fs, report, origin, fake_url, work / "fleet")
        log(f"fleet: {time.monotonic() - t:.1f} s")
    report.details["seconds"] = time.monotonic() - t0
    report.details["machine"]["loadavg_end"] = os.getloadavg()
    busy = report.details["machine"]["loadavg_start"][0]
    if busy > 0.5:
        report.notes.append(f"the machine was not idle when the benchmark started (1-minute load average "
                            f"{busy:.1f}): figures are noisier than on a quiet machine")
    order = {name: i for i, name in enumerate(SECTIONS)}
    report.figures.sort(key=lambda f: order.get(f.section, 99))
    return report


def _no_nan(value: Any) -> Any:
    """NaN (a figure that could not be measured) becomes null, so the file is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts: every figure in well under a minute")
    p.add_argument("--out", type=Path, help="write the results as JSON to this file")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, sidecars)")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    sections = set(args.only or SECTIONS)
    work = Path(tempfile.mkdtemp(prefix="captcha-bench-"))
    try:
        report = run(s, sections, work)
    finally:
        if args.keep:
            log(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(report, args.markdown))
    for note in report.notes:
        print(f"note: {note}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_no_nan(report.as_json()), indent=2, default=str) + "\n")
        log(f"results written to {args.out}")
    missing = [f.key for f in report.figures if f.status == "MISSING"]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
