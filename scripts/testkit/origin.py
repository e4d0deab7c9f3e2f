"""A local origin that behaves like ByteDance's captcha service and image CDN (see CONTRACT.md).

    uv run python -m scripts.testkit.origin --manifest DIR [--http-port 0] [--https-port 0]

It answers for every host name: the proxy's redirect script sends all test traffic here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import signal
import socket
import tempfile
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from scripts.testkit.edata_codec import decode_edata, encode_edata

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CDN_HOST = "p16-rc-captcha-va.ibyteimg.com"
BACKUP_HOST = "p19-rc-captcha-va.ibyteimg.com"
CHALLENGE_CODES = {"whirl": 99996, "slide": 99999, "3d": 99997}
PASS = {"code": 200, "data": None, "message": "Verification complete", "msg_code": "200", "msg_sub_code": "success"}
FAIL = {"code": 500, "data": {"msg": "VerifyErr"}, "message": "Unable to verify. Please try again.",
        "msg_code": "500", "msg_sub_code": "verify_err"}
SLIDE_TOLERANCE_PX = 4.0
WHIRL_TOLERANCE_DEG = 6.0


class Origin:
    """The ASGI app. Challenges are handed out once each; when a mode runs out it starts over under new ids."""

    def __init__(self, manifest_dir: Path):
        self.dir = Path(manifest_dir)
        manifest = json.loads((self.dir / "manifest.json").read_text())
        self.travel = float(manifest.get("widget", {}).get("travel", 271))
        self.challenges: dict[str, dict[str, Any]] = {c["id"]: c for c in manifest["challenges"]}
        self.by_mode: dict[str, list[dict[str, Any]]] = {}
        self.images: dict[str, tuple[bytes, str]] = {}
        for c in manifest["challenges"]:
            self.by_mode.setdefault(c["mode"], []).append(c)
            for img in c["images"].values():
                data = (self.dir / img["file"]).read_bytes()
                self.images[img["path"]] = (data, img["format"])
        self.handed: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.verified: Counter[str] = Counter()
        self.hosts: Counter[str] = Counter()
        self._edata_toggle = 0

    def stats(self) -> dict[str, Any]:
        return {"served": dict(self.served), "handed": dict(self.handed), "verified": dict(self.verified),
                "hosts": dict(self.hosts)}

    def truth(self, challenge_id: str) -> dict[str, Any] | None:
        return self.challenges.get(challenge_id)

    def next_challenge(self, mode: str) -> dict[str, Any] | None:
        pool = self.by_mode.get(mode)
        if not pool:
            return None
        n = self.handed[mode]
        self.handed[mode] += 1
        base = pool[n % len(pool)]
        if n < len(pool):
            return base
        fresh = dict(base, id=hashlib.sha1(f"{base['id']}/{n // len(pool)}".encode()).hexdigest())
        self.challenges[fresh["id"]] = fresh
        return fresh

    def get_body(self, c: dict[str, Any], shape: str, scheme: str) -> dict[str, Any]:
        roles = {"whirl": ("outer", "inner"), "slide": ("background", "piece")}.get(c["mode"], ("background",))
        question: dict[str, Any] = {"tip_y": c.get("tip_y", 0)}
        for n, role in enumerate(roles, start=1):
            path = c["images"][role]["path"]
            question[f"url{n}"] = f"{scheme}://{CDN_HOST}{path}"
            question[f"backup_url{n}"] = [f"{scheme}://{BACKUP_HOST}{path}"]
        item = {"id": c["id"], "mode": c["mode"], "challenge_code": CHALLENGE_CODES.get(c["mode"], 0),
                "question": question}
        verify_id = f"Verify_{uuid.uuid4()}"
        if shape == "single":
            return {"code": 200, "message": "Success", "data": {**item, "version": 2, "verify_id": verify_id}}
        listed = {"code": 200, "message": "Success", "data": {"challenges": [item], "verify_id": verify_id}}
        if shape != "edata":
            return listed
        self._edata_toggle ^= 1
        sealed = encode_edata(listed)
        return {"edata": sealed} if self._edata_toggle else {"code": 200, "data": {"edata": sealed}}

    def judge(self, request: dict[str, Any]) -> bool:
        c = self.challenges.get(str(request.get("id")))
        reply = request.get("reply")
        if c is None or not isinstance(reply, list) or not reply or not isinstance(reply[-1], dict):
            return False
        try:
            x = float(reply[-1]["x"])
            width = float(request.get("modified_img_width") or 340)
        except (KeyError, TypeError, ValueError):
            return False
        if c["mode"] == "slide":
            natural = c["images"]["background"]["width"]
            return bool(abs(x * natural / width - c["gap_x"]) <= SLIDE_TOLERANCE_PX)
        if c["mode"] == "whirl":
            diff = abs(x * 360.0 / self.travel - c["angle"]) % 360
            return bool(min(diff, 360 - diff) <= WHIRL_TOLERANCE_DEG)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host = next((v.decode() for k, v in scope["headers"] if k == b"host"), None)
        authority = host or next((v.decode() for k, v in scope["headers"] if k == b":authority"), "")
        self.hosts[authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority] += 1
        status, payload, content_type = self.route(scope, body)
        self.served[f"{status}"] += 1
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def route(self, scope: Scope, body: bytes) -> tuple[int, bytes, str]:
        path: str = scope["path"]
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(scope["query_string"].decode()).items()}
        method = scope["method"]
        if path in self.images and method in ("GET", "HEAD"):
            data, fmt = self.images[path]
            self.served["image"] += 1
            return 200, data, "image/png" if fmt == "png" else "image/jpeg"
        if path == "/captcha/get":
            c = self.next_challenge(query.get("mode", "whirl"))
            if c is None:
                return 404, b'{"code": 404, "message": "no such mode"}', "application/json"
            self.served["get"] += 1
            return 200, _json(self.get_body(c, query.get("shape", "single"), query.get("scheme", "https"))), \
                "application/json"
        if path == "/captcha/verify" and method == "POST":
            try:
                doc = json.loads(body)
                sealed = isinstance(doc, dict) and isinstance(doc.get("edata"), str)
                request = decode_edata(doc["edata"]) if sealed else doc
            except (ValueError, KeyError, TypeError):
                return 400, b'{"code": 400, "message": "bad request"}', "application/json"
            passed = isinstance(request, dict) and self.judge(request)
            self.verified["pass" if passed else "fail"] += 1
            answer = PASS if passed else FAIL
            return 200, _json({"edata": encode_edata(answer)} if sealed else answer), "application/json"
        if path == "/plain/json":
            return 200, _json({"status_code": 0, "data": {"items": list(range(20)), "cursor": 42}}), "application/json"
        if path == "/plain/bytes":
            n = max(0, min(int(query.get("n", "51200") or 0), 16 * 1024 * 1024))
            return 200, _pseudo_random(n), "image/jpeg"
        if path == "/_stats":
            return 200, _json(self.stats()), "application/json"
        return 404, b"not found", "text/plain"


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


_BLOCK = hashlib.sha256(b"origin").digest() * 2048


def _pseudo_random(n: int) -> bytes:
    return (_BLOCK * (n // len(_BLOCK) + 1))[:n]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testkit origin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "origin.pem", directory / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def serve(app: Origin, http_sock: socket.socket, https_sock: socket.socket, cert_dir: Path,
                stopping: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    cert, key = self_signed_cert(cert_dir)
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
    """The origin on 127.0.0.1, served by hypercorn in a background thread with its own event loop."""

    def __init__(self, manifest_dir: Path | str, http_port: int = 0, https_port: int = 0):
        self.app = Origin(Path(manifest_dir))
        self._ports = (http_port, https_port)
        self.http_port = self.https_port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="origin-")

    def start(self) -> Self:
        http_sock, https_sock = _listen(self._ports[0]), _listen(self._ports[1])
        self.http_port, self.https_port = http_sock.getsockname()[1], https_sock.getsockname()[1]
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            ready.set()
            await serve(self.app, http_sock, https_sock, Path(self._tmp.name), self._stopping)

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="testkit-origin", daemon=True)
        self._thread.start()
        ready.wait(10)
        for port in (self.http_port, self.https_port):
            for _ in range(500):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--https-port", type=int, default=0)
    args = p.parse_args(argv)
    server = OriginServer(args.manifest, args.http_port, args.https_port).start()
    print(json.dumps({"http_port": server.http_port, "https_port": server.https_port}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
