"""End-to-end check of the test kit's proxy plumbing: a real mitmdump, redirect.py, devices on 127.0.0.N.

Runs without the addon: mitmdump loads redirect.py and a small recorder script written to tmp_path. The origin
is a tiny hypercorn app of this module (HTTP and HTTPS with a self-signed certificate, ALPN h2 + http/1.1).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.kit import proxy as proxy_mod
from tests.kit.device import Challenge, Device, Fleet, Order, parse_challenges
from tests.kit.proxy import MitmdumpProcess
from tests.kit.redirect import Redirect, parse_origin

pytestmark = pytest.mark.timeout(60)

VERIFY_HOST = "verification-va.tiktok.com"
IMAGE_HOST = "p16-rc-captcha-va.ibyteimg.com"
BACKUP_HOST = "p19-rc-captcha-va.ibyteimg.com"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def payload(n: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (both ends can compute them)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


# -- a tiny origin ---------------------------------------------------------------------------------------------


IMAGES = {
    "/tos-maliva-i-b4yrtqhy5a-us/" + "a" * 32 + "~tplv-b4yrtqhy5a-2.jpeg": b"\xff\xd8\xff\xe0outer" + payload(5000, 1),
    "/tos-maliva-i-b4yrtqhy5a-us/" + "b" * 32 + "~tplv-b4yrtqhy5a-1.png": b"\x89PNG\r\n\x1a\ninner" + payload(3000, 2),
}
OUTER, INNER = list(IMAGES)
CHALLENGE_ID = "c" * 40


class TinyOrigin:
    """Answers any host: /echo, /bytes, /captcha/get (shapes single, list), images, /captcha/verify."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.seen: list[dict[str, Any]] = []
        self.http_port = 0
        self.https_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path: str = scope["path"]
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        seen = {
            "host": headers.get("host", ""),
            "path": path,
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "client": scope["client"][0] if scope.get("client") else None,
        }
        self.seen.append(seen)
        status, ctype, out = 200, "application/json", b""
        if path == "/echo":
            out = json.dumps({**seen, "headers": headers, "body_sha256": hashlib.sha256(body).hexdigest()}).encode()
        elif path == "/bytes":
            out, ctype = payload(int(query.get("n", "1000")), int(query.get("seed", "0"))), "image/jpeg"
        elif path == "/captcha/get":
            question = {
                "url1": f"https://{IMAGE_HOST}{OUTER}",
                "url2": f"https://{IMAGE_HOST}{INNER}",
                "backup_url1": [f"https://{BACKUP_HOST}{OUTER}"],
                "backup_url2": [f"https://{BACKUP_HOST}{INNER}"],
                "tip_y": 0,
            }
            ch = {"id": CHALLENGE_ID, "mode": query.get("mode", "whirl"), "challenge_code": 99996, "question": question}
            if query.get("shape") == "list":
                data: dict[str, Any] = {"challenges": [ch], "verify_id": "Verify_list"}
            else:
                data = {**ch, "version": 2, "verify_id": "Verify_single"}
            out = json.dumps({"code": 200, "message": "", "data": data}).encode()
        elif path in IMAGES:
            out = IMAGES[path]
            ctype = "image/png" if path.endswith(".png") else "image/jpeg"
        elif path == "/captcha/verify":
            req = json.loads(body)
            ok = req["id"] == CHALLENGE_ID and req["reply"][-1]["x"] == 100 and req.get("drag_width") == 271
            if ok:
                res: dict[str, Any] = {
                    "code": 200,
                    "data": None,
                    "message": "Verification complete",
                    "msg_code": "200",
                    "msg_sub_code": "success",
                }
            else:
                res = {
                    "code": 500,
                    "data": {"msg": "VerifyErr"},
                    "message": "Unable to verify. Please try again.",
                    "msg_code": "500",
                    "msg_sub_code": "verify_err",
                }
            out = json.dumps(res).encode()
        else:
            status, out = 404, b'{"error": "not found"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})

    def _make_cert(self) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testkit origin")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = self.workdir / "origin.crt", self.workdir / "origin.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def start(self) -> None:
        cert_path, key_path = self._make_cert()
        socks = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(100)
            socks.append(s)
        self.https_port, self.http_port = socks[0].getsockname()[1], socks[1].getsockname()[1]
        config = Config()
        config.certfile, config.keyfile = str(cert_path), str(key_path)
        config.bind = [f"fd://{socks[0].detach()}"]
        config.insecure_bind = [f"fd://{socks[1].detach()}"]
        config.accesslog = None
        config.errorlog = None

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._ready.set()
                await serve(self, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="tiny-origin", daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


RECORDER = """
import json
from mitmproxy import http

RECORD = {record!r}
SELF_HOST = "selfanswer.mitm"


class Recorder:
    def _write(self, kind, flow):
        with open(RECORD, "a") as f:
            f.write(json.dumps({{
                "kind": kind,
                "pretty_host": flow.request.pretty_host,
                "host": flow.request.host,
                "port": flow.request.port,
                "scheme": flow.request.scheme,
                "path": flow.request.path,
                "http_version": flow.request.http_version,
                "client_ip": flow.client_conn.peername[0],
                "server_address": list(flow.server_conn.address) if flow.server_conn.address else None,
                "server_peername": list(flow.server_conn.peername) if flow.server_conn.peername else None,
                "status": flow.response.status_code if flow.response else None,
                "error": flow.error.msg if flow.error else None,
            }}) + "\\n")

    def request(self, flow):
        # like the addon's HTTP API: answered by the proxy itself, never connected upstream
        if flow.request.pretty_host == SELF_HOST:
            flow.response = http.Response.make(200, b"answered by the proxy", {{"content-type": "text/plain"}})

    def response(self, flow):
        self._write("response", flow)

    def error(self, flow):
        self._write("error", flow)

    def http_connect(self, flow):
        self._write("connect", flow)
        # answering the CONNECT keeps mitmproxy from failing the tunnel when it cannot reach the host
        if flow.request.pretty_host == SELF_HOST:
            flow.response = http.Response.make(200)

    def done(self):
        with open(RECORD + ".done", "w") as f:
            f.write("done")


addons = [Recorder()]
"""


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testkit-proxy")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[TinyOrigin]:
    o = TinyOrigin(workdir)
    o.start()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def record_path(workdir: Path) -> Path:
    return workdir / "flows.jsonl"


@pytest.fixture(scope="module")
def mitm(workdir: Path, origin: TinyOrigin, record_path: Path) -> Iterator[MitmdumpProcess]:
    script = workdir / "recorder.py"
    script.write_text(RECORDER.format(record=str(record_path)))
    proc = MitmdumpProcess(
        [script],
        origin=(origin.http_port, origin.https_port),
        workdir=workdir / "mitm",
        options={"testkit_local_hosts": ["selfanswer.mitm"]},
    )
    with proc:
        yield proc
    print(f"mitmdump start-up: {proc.startup_seconds:.2f}s")


@pytest.fixture
def records(record_path: Path) -> Callable[[], list[dict[str, Any]]]:
    start = len(read_records(record_path))
    return lambda: read_records(record_path)[start:]


async def wait_records(
    records: Callable[[], list[dict[str, Any]]],
    n: int,
    kinds: tuple[str, ...] = ("response",),
    timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """The first ``n`` records of those kinds. The recorder writes in the response hook, which may run a moment
    after the client has its answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in records() if r["kind"] in kinds]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.02)


# -- unit checks (no processes) --------------------------------------------------------------------------------


def test_parse_origin() -> None:
    assert parse_origin("127.0.0.1:8080,8443") == ("127.0.0.1", 8080, 8443)
    assert parse_origin("127.0.0.1:8080,127.0.0.1:8443") == ("127.0.0.1", 8080, 8443)
    assert parse_origin("") is None
    for bad in ("10.0.0.1:80,443", "127.0.0.1:80", "example.com:80,443", "127.0.0.1:0,443"):
        with pytest.raises(ValueError):
            parse_origin(bad)


def test_redirect_targets() -> None:
    r = Redirect()
    r.origin = ("127.0.0.1", 1080, 1443)
    assert r.target((VERIFY_HOST, 443), tls=False) == ("127.0.0.1", 1443)
    assert r.target((IMAGE_HOST, 80), tls=False) == ("127.0.0.1", 1080)
    assert r.target((VERIFY_HOST, 8443), tls=True) == ("127.0.0.1", 1443)
    assert r.target(("127.0.0.1", 5555), tls=False) == ("127.0.0.1", 5555)
    assert isinstance(r.target((VERIFY_HOST, 8080), tls=False), str)
    assert isinstance(r.target(("captcha.mitm", 443), tls=False), str)
    assert isinstance(r.target(("mitm.it", 80), tls=False), str)
    r.origin = None
    assert isinstance(r.target((VERIFY_HOST, 443), tls=False), str)


def test_parse_challenge_shapes() -> None:
    q = {"url1": "https://a/1", "url2": "https://a/2", "tip_y": 87, "backup_url1": ["https://b/1"]}
    single = parse_challenges({"code": 200, "data": {"id": "x", "mode": "slide", "question": q, "verify_id": "V"}})
    assert single == [Challenge("x", "slide", "https://a/1", "https://a/2", "https://b/1", None, 87, "V")]
    assert single[0].urls() == {"background": "https://a/1", "piece": "https://a/2"}
    assert single[0].urls(use_backup=True) == {"background": "https://b/1", "piece": "https://a/2"}
    listed = parse_challenges(
        {"data": {"challenges": [{"id": "y", "mode": "3d", "question": {"url1": "u"}}], "verify_id": "W"}}
    )
    assert listed[0].shape == "list" and listed[0].verify_id == "W" and listed[0].url2 is None
    assert listed[0].urls() == {"image": "u"}


# -- through the real proxy ------------------------------------------------------------------------------------


async def test_devices_reach_origin_with_real_names(
    mitm: MitmdumpProcess, origin: TinyOrigin, records: Callable[[], list[dict[str, Any]]]
) -> None:
    async with (
        Device("127.0.0.2", mitm.proxy_url, mitm.ca_path, http2=True) as d2,
        Device("127.0.0.3", mitm.proxy_url, mitm.ca_path, http2=False) as d3,
    ):
        for dev, seed in ((d2, 2), (d3, 3)):
            # several requests in one CONNECT tunnel, and plain HTTP beside it
            for i in range(3):
                r = await dev.request("GET", f"https://{VERIFY_HOST}/echo?i={i}")
                assert r.status_code == 200
                echo = r.json()
                assert echo["host"] == VERIFY_HOST  # Host header (h1) or :authority (h2) kept the real name
                assert echo["scheme"] == "https"
                assert echo["http_version"] == ("2" if dev is d2 else "1.1")
                assert r.http_version == ("HTTP/2" if dev is d2 else "HTTP/1.1")
            r = await dev.request("GET", f"http://{IMAGE_HOST}/echo")
            assert r.json()["host"] == IMAGE_HOST and r.json()["scheme"] == "http"
            for scheme, host in (("https", IMAGE_HOST), ("http", IMAGE_HOST), ("https", VERIFY_HOST)):
                r = await dev.request("GET", f"{scheme}://{host}/bytes?n=300000&seed={seed}")
                assert r.status_code == 200
                assert hashlib.sha256(r.content).digest() == hashlib.sha256(payload(300000, seed)).digest()
            body = payload(200_000, seed + 10)
            r = await dev.request("POST", f"https://{VERIFY_HOST}/echo", content=body)
            assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        # each device opened its own connections to the proxy, bound to its address
        assert d2.transport.backend.connections >= 2 and d3.transport.backend.connections >= 2

    got = await wait_records(records, 2 * 8)
    assert len(got) == 2 * 8
    for rec in got:
        assert rec["pretty_host"] in (VERIFY_HOST, IMAGE_HOST), rec
        assert rec["host"] == rec["pretty_host"], rec
        assert rec["client_ip"] in ("127.0.0.2", "127.0.0.3"), rec
        assert rec["status"] == 200
        # the connection really went to the origin, while the address reads the real name
        assert rec["server_address"] == [rec["pretty_host"], 443 if rec["scheme"] == "https" else 80]
        port = origin.https_port if rec["scheme"] == "https" else origin.http_port
        assert rec["server_peername"] == ["127.0.0.1", port], rec
        if rec["scheme"] == "https":
            assert rec["http_version"] == ("HTTP/2.0" if rec["client_ip"] == "127.0.0.2" else "HTTP/1.1"), rec
        else:
            assert rec["http_version"] == "HTTP/1.1"
    assert {r["client_ip"] for r in got} == {"127.0.0.2", "127.0.0.3"}
    assert any(r["scheme"] == "https" and r["pretty_host"] == IMAGE_HOST for r in got)
    # the origin got HTTP/2 from mitmproxy for the h2 client
    assert any(s["http_version"] == "2" and s["host"] == VERIFY_HOST for s in origin.seen)


async def test_fleet_and_captcha_sequence(mitm: MitmdumpProcess, records: Callable[[], list[dict[str, Any]]]) -> None:
    async with Fleet(3, mitm.proxy_url, mitm.ca_path, seed=7) as fleet:
        assert fleet.ips == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]

        async def run(dev: Device, n: int) -> None:
            shape = "list" if n % 2 else "single"
            scheme = "http" if n == 2 else "https"
            ch = await dev.get_challenge("whirl", shape, scheme)
            assert ch.id == CHALLENGE_ID and ch.mode == "whirl" and ch.shape == shape
            assert ch.verify_id == ("Verify_list" if shape == "list" else "Verify_single")
            assert ch.scheme == scheme and ch.host == VERIFY_HOST
            order: Order = ("normal", "reverse", "random")[n]
            images = await dev.fetch_images(ch, order=order, use_backup=n == 1, duplicate=n == 0)
            assert images == {"outer": IMAGES[OUTER], "inner": IMAGES[INNER]}
            assert await dev.verify(ch, 100) is True
            assert await dev.verify(ch, 140) is False
            assert dev.last_verify_body["msg_sub_code"] == "verify_err"

        await asyncio.gather(*(run(dev, i) for i, dev in enumerate(fleet)))
        d0, d1, _ = fleet
        fetched0 = [url for method, url, _ in d0.history if method == "GET" and "/tos-" in url]
        assert len(fetched0) == 3 and fetched0[0] == fetched0[2] and fetched0[0].endswith(OUTER)
        fetched1 = [url for method, url, _ in d1.history if method == "GET" and "/tos-" in url]
        assert fetched1[0].startswith(f"https://{BACKUP_HOST}/") and fetched1[0].endswith(INNER)

    got = await wait_records(records, 3 * 5 + 1)
    assert len(got) == 3 * 5 + 1
    by_ip: dict[str, set[str]] = {}
    for rec in got:
        by_ip.setdefault(rec["client_ip"], set()).add(rec["pretty_host"])
    assert by_ip["127.0.0.2"] == {VERIFY_HOST, IMAGE_HOST}
    assert by_ip["127.0.0.3"] == {VERIFY_HOST, BACKUP_HOST}
    assert set(by_ip) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}


async def test_nothing_leaves_loopback(
    mitm: MitmdumpProcess, origin: TinyOrigin, records: Callable[[], list[dict[str, Any]]]
) -> None:
    seen_before = len(origin.seen)
    async with (
        Device("127.0.0.5", mitm.proxy_url, mitm.ca_path, http2=True) as dev,
        Device("127.0.0.6", mitm.proxy_url, mitm.ca_path, http2=False) as dev1,
    ):
        # a port the redirect cannot map is refused by the proxy
        r = await dev.request("GET", f"http://{VERIFY_HOST}:8081/echo")
        assert r.status_code == 502
        with pytest.raises(httpx.ProxyError):  # CONNECT answered 502
            await dev.request("GET", f"https://{VERIFY_HOST}:8443/echo")
        # the addon's API host without an addon: refused, not passed on (no DNS look-up either)
        r = await dev.request("GET", "http://captcha.mitm/v1/stats")
        assert r.status_code == 502
        with pytest.raises(httpx.ProxyError):  # eager CONNECT: the failed upstream connect fails the tunnel
            await dev.request("GET", "https://captcha.mitm/v1/stats")
        # a host the proxy answers itself (as the addon answers captcha.mitm) works over HTTP, and over HTTPS
        # when the CONNECT is answered too; with no upstream to copy ALPN from, mitmproxy speaks HTTP/1.1
        for d in (dev, dev1):
            for scheme in ("http", "https"):
                r = await d.request("GET", f"{scheme}://selfanswer.mitm/x")
                assert r.status_code == 200 and r.text == "answered by the proxy"
                assert r.http_version == "HTTP/1.1"
    assert len(origin.seen) == seen_before  # none of this reached the origin
    got = await wait_records(records, 4 + 2, kinds=("response", "error"))
    assert sorted((r["pretty_host"], r["kind"], r["client_ip"], r["scheme"], r["port"]) for r in got) == sorted(
        [(VERIFY_HOST, "error", "127.0.0.5", "http", 8081), ("captcha.mitm", "error", "127.0.0.5", "http", 80)]
        + [
            ("selfanswer.mitm", "response", ip, scheme, port)
            for ip in ("127.0.0.5", "127.0.0.6")
            for scheme, port in (("http", 80), ("https", 443))
        ]
    )
    log = mitm.log_text()
    assert "testkit: refusing verification-va.tiktok.com:8081" in log
    assert "captcha.mitm is answered by the proxy itself" in log
    assert "selfanswer.mitm is answered by the proxy itself" in log


def test_stop_is_clean_and_start_retries(tmp_path: Path, origin: TinyOrigin, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "recorder.py"
    record = tmp_path / "flows.jsonl"
    script.write_text(RECORDER.format(record=str(record)))
    # the first port handed out is taken: start() must retry with another
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    ports = iter([blocker.getsockname()[1]])
    real_free_port = proxy_mod.free_port
    monkeypatch.setattr(proxy_mod, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port(host))
    t0 = time.monotonic()
    proc = MitmdumpProcess(
        [script], origin=(origin.http_port, origin.https_port), workdir=tmp_path / "m", options={"flow_detail": 0}
    )
    with proc:
        assert proc.attempts == 2 and proc.port != blocker.getsockname()[1]
        assert proc.ca_path.exists() and proc.running and proc.pid > 0
        assert "failed to listen" in proc.log_text()
        with socket.create_connection(("127.0.0.1", proc.port), timeout=2):
            pass
    blocker.close()
    total = time.monotonic() - t0
    assert proc.returncode == 0, proc.log_text()
    assert (tmp_path / "flows.jsonl.done").exists()  # done hooks ran
    assert not proc.running
    print(f"start-up {proc.startup_seconds:.2f}s (2 attempts, whole run {total:.2f}s)")


def test_parse_challenge_edata() -> None:
    codec = pytest.importorskip("tests.kit.edata_codec")
    inner = {
        "data": {
            "challenges": [{"id": "z", "mode": "slide", "question": {"url1": "a", "url2": "b", "tip_y": 9}}],
            "verify_id": "V",
        }
    }
    for body in ({"edata": codec.encode_edata(inner)}, {"data": {"edata": codec.encode_edata(inner)}}):
        (ch,) = parse_challenges(body)
        assert (ch.id, ch.mode, ch.shape, ch.encrypted, ch.tip_y, ch.verify_id) == ("z", "slide", "edata", True, 9, "V")


async def test_lazy_connection_strategy(tmp_path: Path, origin: TinyOrigin) -> None:
    """The redirect also works when mitmproxy connects upstream only on the first request."""
    record = tmp_path / "flows.jsonl"
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER.format(record=str(record)))
    with MitmdumpProcess(
        [script],
        origin=(origin.http_port, origin.https_port),
        workdir=tmp_path / "m",
        options={"connection_strategy": "lazy"},
    ) as proc:
        async with Device("127.0.0.7", proc.proxy_url, proc.ca_path, http2=True) as dev:
            for url in (f"https://{VERIFY_HOST}/echo", f"https://{VERIFY_HOST}/echo", f"http://{IMAGE_HOST}/echo"):
                r = await dev.request("GET", url)
                assert r.status_code == 200 and r.json()["host"] in (VERIFY_HOST, IMAGE_HOST)
            https = await dev.request("GET", f"https://{IMAGE_HOST}/bytes?n=1000&seed=1")
            assert https.content == payload(1000, 1)
            # lazy: no upstream ALPN is known at the client handshake, so mitmproxy speaks HTTP/1.1 to the client
            # even though it offered h2 (and the origin speaks h2): lazy mode never produces HTTP/2 flows
            assert https.http_version == "HTTP/1.1"
        got = await wait_records(lambda: read_records(record), 4)
    assert [(r["pretty_host"], r["host"], r["client_ip"]) for r in got] == [
        (VERIFY_HOST, VERIFY_HOST, "127.0.0.7"),
        (VERIFY_HOST, VERIFY_HOST, "127.0.0.7"),
        (IMAGE_HOST, IMAGE_HOST, "127.0.0.7"),
        (IMAGE_HOST, IMAGE_HOST, "127.0.0.7"),
    ]
    assert {r["http_version"] for r in got} == {"HTTP/1.1"}
