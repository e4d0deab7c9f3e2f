"""A local origin that plays ByteDance's captcha service and image CDN for a manifest (see CONTRACT.md).

    uv run python -m tests.kit.origin --manifest DIR [--http-port 0] [--https-port 0]

Prints one JSON line `{"http_port", "https_port", "cert"}` on stdout, then serves until SIGTERM/SIGINT. It answers
for every host name: the proxy's redirect script sends all test traffic here. In tests:

    with OriginServer(manifest_dir) as origin:   # background thread with its own event loop
        httpx.get(f"http://127.0.0.1:{origin.http_port}/captcha/get?mode=whirl")
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import itertools
import json
import logging
import signal
import socket
import tempfile
import threading
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from tests.kit.edata_codec import EdataError, decode_edata, encode_edata, find_edata
from tests.kit.synth import AnyChallenge, Manifest, SlideChallenge, ThreeDChallenge, WhirlChallenge

logger = logging.getLogger("tests.kit.origin")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CDN_HOST = "p16-rc-captcha-va.ibyteimg.com"
BACKUP_HOST = "p19-rc-captcha-va.ibyteimg.com"
CHALLENGE_CODES = {"whirl": 99996, "slide": 99999, "3d": 99997}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
PASS = {"code": 200, "data": None, "message": "Verification complete", "msg_code": "200", "msg_sub_code": "success"}
FAIL = {"code": 500, "data": {"msg": "VerifyErr"}, "message": "Unable to verify. Please try again.",
        "msg_code": "500", "msg_sub_code": "verify_err"}
FAIL_LEGACY = {"code": 500, "data": None, "message": "Verification failed. Please try again."}
SLIDE_NATURAL_WIDTH = 552
SLIDE_TOLERANCE_PX = 4.0
WHIRL_TOLERANCE_DEG = 6.0
DEFAULT_WIDTH = 340
MAX_BODY = 1 << 20
MAX_PLAIN_BYTES = 64 << 20
SHAPES = ("single", "list", "edata")
SCHEMES = ("https", "http")
VERIFICATION_LOG = 1000
WIDGET_DIR = Path(__file__).resolve().with_name("widget")
WIDGET_PATH = "/captcha/widget"
WIDGET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# How the origin judges a web widget's trajectory (a verify with `platform=pc`), the way sites tell a bot's drag.
TRAJECTORY_MIN_POINTS = 5
TRAJECTORY_MIN_MS = 300.0
TRAJECTORY_MIN_WOBBLE_PX = 1.0
TRAJECTORY_MIN_PEAK_RATIO = 1.3
"""The fastest fifth of the drag (by time) must be at least this much faster than the drag's average speed."""
TRAJECTORY_BINS = 5
CLICKS_MIN_SPAN_MS = 150.0
"""A web widget's clicks on an object picture: all of them within this time of the first is a bot's burst..."""
CLICKS_MIN_GAP_MS = 80.0
"""... and so is any two in a row closer than this (a person moves the mouse to the next object)."""
CERT_NAMES = ("localhost", "*.tiktokv.com", "*.tiktok.com", "*.tiktokv.eu", "*.tiktokv.us", "*.tiktokw.eu",
              "*.ibyteimg.com", "*.tiktokcdn-eu.com", "*.byteimg.com", "*.byteoversea.com", "*.zijieapi.com",
              "*.snssdk.com")


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(obj: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json", headers)


def _error(status: int, message: str) -> Response:
    return _json({"code": status, "message": message}, status)


class Origin:
    """The ASGI app. Each get hands out the next unused challenge of its mode; when a mode runs out it starts
    over under fresh ids (same images), so every get of a run names a distinct challenge."""

    def __init__(self, manifest_dir: Path | str):
        self.dir = Path(manifest_dir)
        raw = json.loads((self.dir / "manifest.json").read_text())
        self.manifest = Manifest.from_json(raw, root=self.dir)
        self.travel = float(self.manifest.widget.travel)
        self.challenges: dict[str, dict[str, Any]] = {c["id"]: c for c in raw["challenges"]}
        """Ground truth by id, as the manifest's JSON (challenges handed out again under fresh ids included)."""
        self.typed: dict[str, AnyChallenge] = {c.id: c for c in self.manifest.challenges}
        self.by_mode: dict[str, list[AnyChallenge]] = {}
        for c in self.manifest.challenges:
            self.by_mode.setdefault(c.mode, []).append(c)
        self.images: dict[str, tuple[bytes, str]] = {}
        for c in self.manifest.challenges:
            for img in c.images.values():
                data = (self.dir / img.file).read_bytes()
                self.images[img.path] = (data, CONTENT_TYPES[img.format])
        self._lock = threading.Lock()
        self.handed: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.verified: Counter[str] = Counter({"pass": 0, "fail": 0})
        self.hosts: Counter[str] = Counter()
        self.verifications: deque[dict[str, Any]] = deque(maxlen=VERIFICATION_LOG)
        self._edata_turn = 0
        self.started = threading.Event()

    # -- state ------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"served": dict(self.served), "handed": dict(self.handed), "status": dict(self.statuses),
                    "verified": dict(self.verified), "hosts": dict(self.hosts),
                    "verifications": list(self.verifications)}

    def truth(self, challenge_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.challenges.get(challenge_id)

    def next_challenge(self, mode: str) -> AnyChallenge | None:
        with self._lock:
            pool = self.by_mode.get(mode)
            if not pool:
                return None
            n = self.handed[mode]
            self.handed[mode] += 1
            base = pool[n % len(pool)]
            if n < len(pool):
                return base
            fresh_id = hashlib.sha1(f"{base.id}/{n // len(pool)}".encode()).hexdigest()
            fresh = dataclasses.replace(base, id=fresh_id)
            self.typed[fresh_id] = fresh
            self.challenges[fresh_id] = dict(self.challenges[base.id], id=fresh_id)
            return fresh

    # -- bodies -----------------------------------------------------------------------------------------------

    def get_body(self, c: AnyChallenge, shape: str, scheme: str, inline: bool = False) -> dict[str, Any]:
        """`inline`: the images travel in the get as `question.object1`, ... (`data:` URIs), not as URLs."""
        question: dict[str, Any] = {}
        for n, img in enumerate((c.url1, c.url2), start=1):
            if img is not None and inline:
                data, content_type = self.images[img.path]
                question[f"object{n}"] = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
            elif img is not None:
                question[f"url{n}"] = f"{scheme}://{CDN_HOST}{img.path}"
        question["tip_y"] = c.tip_y if isinstance(c, SlideChallenge) else 0
        if isinstance(c, ThreeDChallenge) and c.question:
            question["tip"] = c.question  # where an icon get keeps its prompt is unknown (captcha-traffic.md §8)
        for n, img in enumerate((c.url1, c.url2), start=1):
            if img is not None and not inline:
                question[f"backup_url{n}"] = [f"{scheme}://{BACKUP_HOST}{img.path}"]
        item = {"id": c.id, "mode": c.mode, "challenge_code": CHALLENGE_CODES.get(c.mode, 0), "question": question}
        verify_id = f"Verify_{uuid.uuid4()}"
        if shape == "single":
            return {"code": 200, "message": "Success", "data": {**item, "version": 2, "verify_id": verify_id}}
        listed = {"code": 200, "message": "Success", "data": {"challenges": [item], "verify_id": verify_id}}
        if shape == "list":
            return listed
        with self._lock:
            self._edata_turn += 1
            turn = self._edata_turn
        sealed = encode_edata(listed)
        return {"data": {"edata": sealed}} if turn % 2 else {"edata": sealed}

    def judge(self, request: dict[str, Any], web: bool = False) -> tuple[bool, str]:
        """Whether the drag in a verify request solves its challenge, and why not. `web`: the web widget's verify,
        whose trajectory is judged too (once the answer is right)."""
        with self._lock:
            c = self.typed.get(str(request.get("id")))
        if c is None:
            return False, "unknown_id"
        mode = request.get("mode")
        if mode is not None and mode != c.mode:
            return False, "wrong_mode"
        reply = request.get("reply")
        if not isinstance(reply, list) or not reply or not isinstance(reply[-1], dict):
            return False, "no_reply"
        if isinstance(c, ThreeDChallenge):
            passed, reason = self._judge_clicks(c, reply, request.get("modified_img_width", DEFAULT_WIDTH))
            if passed and web:
                why, _ = judge_click_timing(reply)
                if why:
                    return False, why
            return passed, reason
        x, width = _number(reply[-1].get("x")), _number(request.get("modified_img_width", DEFAULT_WIDTH))
        if x is None or width is None or width <= 0:
            return False, "bad_numbers"
        if isinstance(c, SlideChallenge):
            ok = abs(x * SLIDE_NATURAL_WIDTH / width - c.gap_x) <= SLIDE_TOLERANCE_PX
        elif isinstance(c, WhirlChallenge):
            diff = abs(x * 360.0 / self.travel - c.angle) % 360
            ok = min(diff, 360 - diff) <= WHIRL_TOLERANCE_DEG
        else:
            return False, "not_draggable"
        if not ok:
            return False, "wrong_answer"
        if web:
            why, _ = judge_trajectory(reply)
            if why:
                return False, why
        return True, ""

    @staticmethod
    def _judge_clicks(c: ThreeDChallenge, reply: list[Any], width_value: Any) -> tuple[bool, str]:
        """Object captchas: one click (x and y in `modified_img_width` units) inside each target box."""
        width = _number(width_value)
        if c.targets is None:
            return False, "no_truth"
        if width is None or width <= 0:
            return False, "bad_numbers"
        scale = c.url1.width / width
        clicks = []
        for point in reply:
            x, y = (_number(point.get("x")), _number(point.get("y"))) if isinstance(point, dict) else (None, None)
            if x is None or y is None:
                return False, "bad_numbers"
            clicks.append((x * scale, y * scale))
        if len(clicks) != len(c.targets):
            return False, "wrong_count"
        left = list(c.targets)
        for x, y in clicks:
            hit = next((box for box in left if abs(x - box[0]) <= box[2] / 2 and abs(y - box[1]) <= box[3] / 2), None)
            if hit is None:
                return False, "wrong_answer"
            left.remove(hit)
        return True, ""

    def verify(self, body: bytes, query: dict[str, str]) -> Response:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, "body is not JSON")
        if not isinstance(doc, dict):
            return _error(400, "body is not a JSON object")
        sealed = find_edata(doc)
        request: Any = doc
        if sealed is not None:
            try:
                request = decode_edata(sealed)
            except EdataError as e:
                return _error(400, str(e))
        web = query.get("platform") == "pc"
        passed, reason = self.judge(request, web) if isinstance(request, dict) else (False, "not_an_object")
        reply = request.get("reply") if isinstance(request, dict) else None
        trajectory: dict[str, Any] | None = None
        if web and isinstance(reply, list):
            with self._lock:
                clicked = isinstance(self.typed.get(str(request.get("id"))), ThreeDChallenge)
            why, trajectory = judge_click_timing(reply) if clicked else judge_trajectory(reply)
            logger.info("web verify %s: %s; %s %s (%s)",
                        request.get("id") if isinstance(request, dict) else None,
                        "clicks" if clicked else "trajectory",
                        "pass" if passed else f"fail, {reason}", why or "human-like",
                        ", ".join(f"{k} {v}" for k, v in trajectory.items()))
        with self._lock:
            self.verified["pass" if passed else "fail"] += 1
            self.verifications.append({
                "id": request.get("id") if isinstance(request, dict) else None, "pass": passed,
                "reason": reason or None, "edata": sealed is not None,
                "x": reply[-1].get("x") if isinstance(reply, list) and reply and isinstance(reply[-1], dict) else None,
                "width": request.get("modified_img_width") if isinstance(request, dict) else None,
                **({"trajectory": trajectory} if trajectory is not None else {})})
        answer = PASS if passed else FAIL_LEGACY if query.get("fail_body") == "legacy" else FAIL
        if sealed is None:
            return _json(answer)
        envelope = encode_edata(answer)
        return _json({"edata": envelope} if "edata" in doc else {"data": {"edata": envelope}})

    # -- ASGI -------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, too_large = await _read_body(receive)
        host = _header(scope, b"host") or _header(scope, b":authority") or ""
        with self._lock:
            self.hosts[_strip_port(host)] += 1
        if too_large:
            response = _error(413, "body too large")
        else:
            try:
                response = self.route(scope, body)
            except Exception as e:  # the origin must answer, whatever a test sends
                response = _error(500, f"origin error: {type(e).__name__}")
        with self._lock:
            self.statuses[str(response.status)] += 1
        query = _query(scope)
        if response.status == 200 and scope["path"] == "/plain/bytes":
            await _stream_bytes(send, int(query.get("n", "51200")), scope["method"] == "HEAD")
            return
        headers = [(b"content-type", response.content_type.encode()),
                   (b"content-length", str(len(response.body)).encode()), *response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})

    def route(self, scope: Scope, body: bytes) -> Response:
        path: str = scope["path"]
        method: str = scope["method"]
        query = _query(scope)
        reading = method in ("GET", "HEAD")
        if path in self.images:
            if not reading:
                return _error(405, "method not allowed")
            data, content_type = self.images[path]
            self._count("image")
            return Response(200, data, content_type)
        if path == WIDGET_PATH or path.startswith(WIDGET_PATH + "/"):
            return _widget_file(path[len(WIDGET_PATH):]) if reading else _error(405, "method not allowed")
        if path == "/captcha/get":
            return self._get(query) if method == "GET" else _error(405, "method not allowed")
        if path == "/captcha/verify":
            if method != "POST":
                return _error(405, "method not allowed")
            self._count("verify")
            return self.verify(body, query)
        if path == "/plain/json" and reading:
            self._count("plain")
            return _json({"status_code": 0, "data": {"items": list(range(20)), "cursor": 42, "has_more": True}})
        if path == "/plain/bytes" and reading:
            n = query.get("n", "51200")
            if not n.isdigit() or int(n) > MAX_PLAIN_BYTES:
                return _error(400, f"n must be an integer from 0 to {MAX_PLAIN_BYTES}")
            self._count("plain")
            return Response(200, b"", "image/jpeg")
        if path == "/_stats" and reading:
            return _json(self.stats())
        self._count("not_found")
        return Response(404, b"not found", "text/plain")

    def _get(self, query: dict[str, str]) -> Response:
        mode = query.get("mode", "whirl")
        shape, scheme = query.get("shape", "single"), query.get("scheme", "https")
        if shape not in SHAPES or scheme not in SCHEMES:
            return _error(400, f"shape must be one of {SHAPES} and scheme one of {SCHEMES}")
        c = self.next_challenge(mode)
        if c is None:
            return _error(404, f"no challenge of mode {mode!r}")
        self._count("get")
        return _json(self.get_body(c, shape, scheme, inline=query.get("inline") == "1"), headers=((b"x-testkit-challenge", c.id.encode()),))

    def _count(self, what: str) -> None:
        with self._lock:
            self.served[what] += 1


def _widget_file(rest: str) -> Response:
    """The widget's page (`/captcha/widget/`) and its files, from tests/kit/widget/."""
    name = rest.strip("/") or "index.html"
    target = WIDGET_DIR / name
    if "/" in name or target.suffix not in WIDGET_TYPES or not target.is_file():
        return Response(404, b"not found", "text/plain")
    return Response(200, target.read_bytes(), WIDGET_TYPES[target.suffix], ((b"cache-control", b"no-store"),))


def judge_trajectory(reply: list[Any]) -> tuple[str, dict[str, Any]]:
    """Why a drag's trajectory looks like a bot's (`""` when it looks like a hand's), and what was measured.

    Rejected, in this order: fewer than 5 points; shorter than 300 ms; no vertical wobble (the pointer's y spans
    less than a pixel); constant speed (cut in five by time, no fifth is 1.3 times faster than the average).
    """
    points: list[tuple[float, float, float]] = []
    for p in reply:
        if isinstance(p, dict):
            t, x, y = _number(p.get("relative_time")), _number(p.get("x")), _number(p.get("y"))
            if t is not None and x is not None and y is not None:
                points.append((t, x, y))
    points.sort()
    if len(points) < TRAJECTORY_MIN_POINTS:
        return "trajectory_too_few_points", {"points": len(points)}
    duration = points[-1][0] - points[0][0]
    ys = [p[2] for p in points]
    wobble = max(ys) - min(ys)
    edges = [points[0][0] + duration * k / TRAJECTORY_BINS for k in range(TRAJECTORY_BINS + 1)]
    xs = [_x_at(points, t) for t in edges]
    bins = [abs(b - a) for a, b in itertools.pairwise(xs)]
    ratio = max(bins) / (sum(bins) / TRAJECTORY_BINS) if sum(bins) > 0 else 0.0
    measured = {"points": len(points), "duration_ms": round(duration), "wobble_px": round(wobble, 2),
                "peak_ratio": round(ratio, 2)}
    if duration < TRAJECTORY_MIN_MS:
        return "trajectory_too_fast", measured
    if wobble < TRAJECTORY_MIN_WOBBLE_PX:
        return "trajectory_no_wobble", measured
    if ratio < TRAJECTORY_MIN_PEAK_RATIO:
        return "trajectory_constant_speed", measured
    return "", measured


def judge_click_timing(reply: list[Any]) -> tuple[str, dict[str, Any]]:
    """Why a web widget's clicks on an object picture came like a bot's (`""` when like a hand's), and what was
    measured. Refused, in this order: a click without a numeric `relative_time` (`clicks_no_time`); two in a row
    (in time order) less than 80 ms apart (`clicks_too_close`); two clicks or more all within 150 ms
    (`clicks_too_fast`)."""
    times = [_number(p.get("relative_time")) if isinstance(p, dict) else None for p in reply]
    if any(t is None for t in times):
        return "clicks_no_time", {"clicks": len(reply)}
    ordered = sorted(cast(list[float], times))
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    span = ordered[-1] - ordered[0] if ordered else 0.0
    measured: dict[str, Any] = {"clicks": len(ordered), "span_ms": round(span),
                                "min_gap_ms": round(min(gaps)) if gaps else None}
    if gaps and min(gaps) < CLICKS_MIN_GAP_MS:
        return "clicks_too_close", measured
    if len(ordered) > 1 and span < CLICKS_MIN_SPAN_MS:
        return "clicks_too_fast", measured
    return "", measured


def _x_at(points: list[tuple[float, float, float]], t: float) -> float:
    """x at time t, linearly between the recorded points around it."""
    for (t0, x0, _), (t1, x1, _) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return x0 if t1 == t0 else x0 + (x1 - x0) * (t - t0) / (t1 - t0)
    return points[-1][1] if t >= points[-1][0] else points[0][1]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value).decode("latin-1")
    return None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size, too_large = 0, False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        too_large = too_large or size > MAX_BODY
        if not too_large:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), too_large


_BLOCK = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(8192))


async def _stream_bytes(send: Send, n: int, head: bool) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"image/jpeg"), (b"content-length", str(n).encode())]})
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    left = n
    while left > len(_BLOCK):
        await send({"type": "http.response.body", "body": _BLOCK, "more_body": True})
        left -= len(_BLOCK)
    await send({"type": "http.response.body", "body": _BLOCK[:left]})


# -- serving -----------------------------------------------------------------------------------------------------


def self_signed_cert(directory: Path, names: tuple[str, ...] = CERT_NAMES) -> tuple[Path, Path]:
    """A fresh EC key and self-signed certificate for `names` and 127.0.0.1: (cert PEM path, key PEM path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testkit origin")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "origin.pem", directory / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


async def serve(app: Origin, http_sock: socket.socket, https_sock: socket.socket, cert: Path, key: Path,
                stopping: asyncio.Event) -> None:
    """hypercorn on two listening sockets (plain, and TLS offering h2 and http/1.1) until `stopping` is set."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.certfile, config.keyfile = str(cert), str(key)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.bind = [f"fd://{https_sock.detach()}"]
    config.insecure_bind = [f"fd://{http_sock.detach()}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30
    config.keep_alive_max_requests = 1_000_000  # hypercorn's default (1000) ends h2 connections mid-load
    await hypercorn_serve(cast(Any, app), config, shutdown_trigger=stopping.wait, mode="asgi")


class OriginServer:
    """The origin on 127.0.0.1 (or `host`), served by hypercorn in a background thread with its own event loop.

    Ports are bound in the constructor's caller thread by `start()`, so `http_port`/`https_port` are known (and
    accepting) as soon as `start()` returns.
    """

    def __init__(self, manifest_dir: Path | str, http_port: int = 0, https_port: int = 0, host: str = "127.0.0.1"):
        self.app = Origin(manifest_dir)
        self.host = host
        self._ports = (http_port, https_port)
        self.http_port = self.https_port = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="testkit-origin-")
        self.cert_file, self.key_file = self_signed_cert(Path(self._tmp.name))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{self.host}:{self.https_port}"

    def start(self) -> Self:
        http_sock, https_sock = listen(self._ports[0], self.host), listen(self._ports[1], self.host)
        self.http_port, self.https_port = http_sock.getsockname()[1], https_sock.getsockname()[1]
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            ready.set()
            await serve(self.app, http_sock, https_sock, self.cert_file, self.key_file, self._stopping)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:
                self._error = e
            finally:
                ready.set()
                self.app.started.set()

        self._thread = threading.Thread(target=run, name="testkit-origin", daemon=True)
        self._thread.start()
        ready.wait(10)
        self.app.started.wait(10)
        if self._error is not None:
            raise RuntimeError("the test origin failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(10)
        self._thread = None
        self._tmp.cleanup()

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve a test kit manifest as ByteDance's captcha service and CDN.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--https-port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = OriginServer(args.manifest, args.http_port, args.https_port, args.host).start()
    print(json.dumps({"http_port": server.http_port, "https_port": server.https_port,
                      "cert": str(server.cert_file)}), flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
