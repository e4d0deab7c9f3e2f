"""End to end, the API host in every proxy mode mitmproxy runs here: nothing for it ever leaves the machine.

One mitmdump listens in four modes at once (regular, upstream to a recording proxy on loopback, SOCKS5, reverse
to the test origin). In each, a watcher reads `/v1/stats`, the dashboard page and the event stream (live, then
resumed with Last-Event-ID) over HTTP and HTTPS, while a phone's challenge goes through the same listener. The
recording upstream must see the phone's traffic (so the upstream is really in use) and nothing for the API host,
the loopback stream server or its secret header.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from addon.publish.event_stream import SECRET_HEADER
from tests.kit.device import DEFAULT_VERIFY_HOST, Device
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpProcess, free_port
from tests.kit.synth import generate
from tests.kit.upstream import RecordingUpstream

pytestmark = pytest.mark.timeout(120)
API = "captcha.mitm"
MODES = ("regular", "upstream", "socks5", "reverse")


@dataclass
class Kit:
    origin: OriginServer
    upstream: RecordingUpstream
    proxy: MitmdumpProcess
    ports: dict[str, int]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    d = tmp_path_factory.mktemp("challenges")
    generate(d, seed=47, count=4)
    tmp = tmp_path_factory.mktemp("modes")
    with OriginServer(d) as origin, RecordingUpstream(origin=(origin.http_port, origin.https_port)) as upstream:
        ports = {mode: free_port() for mode in MODES[1:]}
        modes = ["--mode", "regular",
                 "--mode", f"upstream:{upstream.url}@127.0.0.1:{ports['upstream']}",
                 "--mode", f"socks5@127.0.0.1:{ports['socks5']}",
                 "--mode", f"reverse:http://127.0.0.1:{origin.http_port}@127.0.0.1:{ports['reverse']}"]
        # keep_host_header: in reverse mode mitmproxy otherwise replaces the Host header before any addon runs.
        # stream_large_bodies: a bigger request body is streamed, which makes mitmproxy connect before the request
        # hook (the captcha pictures stay below it, so capture still sees whole bodies).
        options = {"captcha_sidecar": str(tmp / "events.jsonl"), "captcha_solvers": "none",
                   "keep_host_header": True, "stream_large_bodies": "1m"}
        with MitmdumpProcess(["addon/main.py"], origin=(origin.http_port, origin.https_port), options=options,
                             workdir=tmp / "mitm", extra_args=modes, startup_timeout=60) as proxy:
            yield Kit(origin, upstream, proxy, {"regular": proxy.port, **ports})


def watcher(kit: Kit, mode: str) -> tuple[httpx.AsyncClient, str]:
    """A client of the API through `mode`, and the base URL of the API for a scheme placeholder."""
    ctx = ssl.create_default_context(cafile=str(kit.proxy.ca_path))
    port = kit.ports[mode]
    if mode == "reverse":
        # The device talks to the proxy as if it were the server: TLS with SNI captcha.mitm, Host captcha.mitm.
        transport = httpx.AsyncHTTPTransport(verify=ctx)
        return httpx.AsyncClient(transport=transport, headers={"Host": API}, timeout=30), f"{{}}://127.0.0.1:{port}"
    scheme = "socks5" if mode == "socks5" else "http"
    return httpx.AsyncClient(proxy=f"{scheme}://127.0.0.1:{port}", verify=ctx, trust_env=False,
                             timeout=30), f"{{}}://{API}"


def extensions(mode: str) -> dict[str, Any]:
    return {"sni_hostname": API} if mode == "reverse" else {}


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    data = None
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            yield data
            data = None


async def read_stream(client: httpx.AsyncClient, url: str, mode: str, n: int, ready: asyncio.Event | None = None,
                      **headers: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    request = client.build_request("GET", url, headers=headers, extensions=extensions(mode))
    r = await client.send(request, stream=True)
    try:
        assert r.status_code == 200, (r.status_code, (await r.aread())[:300])
        assert r.headers["content-type"].startswith("text/event-stream")
        if ready is not None:
            ready.set()
        async for event in sse(r):
            got.append(event)
            if len(got) == n:
                break
    finally:
        await r.aclose()
    return got


async def phone_challenge(kit: Kit, mode: str, ip: str) -> str:
    """A challenge fetched through `mode` (reverse mode serves only the origin: the phone uses regular mode)."""
    port = kit.ports["regular" if mode in ("reverse", "socks5") else mode]
    phone = Device(ip, f"http://127.0.0.1:{port}", kit.proxy.ca_path)
    try:
        ch = await phone.get_challenge("whirl")
        await phone.fetch_images(ch)
        return ch.id
    finally:
        await phone.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_the_api_host_is_answered_locally_in_every_mode(kit: Kit, mode: str) -> None:
    client, base = watcher(kit, mode)
    before = len(kit.upstream.seen())
    try:
        for scheme in ("http", "https"):
            url = base.format(scheme)
            r = await client.get(f"{url}/v1/stats", extensions=extensions(mode))
            assert r.status_code == 200 and "captured" in r.json(), (r.status_code, r.text[:300])
            page = await client.get(f"{url}/", extensions=extensions(mode))
            assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.status_code

            ready = asyncio.Event()
            live = asyncio.create_task(read_stream(client, f"{url}/v1/events/stream", mode, 1, ready))
            opened = asyncio.create_task(ready.wait())
            await asyncio.wait({live, opened}, return_when=asyncio.FIRST_COMPLETED)
            if live.done():
                live.result()  # the stream failed before it opened: its assertion
            ip = f"127.0.0.{10 + MODES.index(mode) * 2 + (scheme == 'https')}"
            challenge = await phone_challenge(kit, mode, ip)
            [event] = await live
            assert (event["event"], event["challenge"], event["client"]) == ("captured", challenge, ip)

            missed = await phone_challenge(kit, mode, ip)
            [resumed] = await read_stream(client, f"{url}/v1/events/stream", mode, 1,
                                          **{"Last-Event-ID": str(event["seq"])})
            assert (resumed["challenge"], resumed["seq"]) == (missed, event["seq"] + 1)
    finally:
        await client.aclose()

    seen = kit.upstream.seen()[before:]
    if mode == "upstream":
        # The phone's challenge went through the upstream: it is really in use.
        assert any(DEFAULT_VERIFY_HOST in s.text() for s in seen), [s.target for s in seen]
    assert not kit.upstream.saw(API), [s.target for s in kit.upstream.saw(API)]
    assert not kit.upstream.saw(SECRET_HEADER)
    assert not kit.upstream.saw("127.0.0.1"), [s.target for s in kit.upstream.saw("127.0.0.1")]
    assert API not in kit.origin.app.stats()["hosts"]


def nothing_upstream(kit: Kit) -> None:
    assert not kit.upstream.saw(API), [s.target for s in kit.upstream.saw(API)]
    assert not kit.upstream.saw(SECRET_HEADER)


@pytest.mark.parametrize("mode", ["regular", "upstream"])
async def test_a_big_request_body_for_the_api_host_is_answered_locally(kit: Kit, mode: str) -> None:
    client, base = watcher(kit, mode)
    try:
        for scheme in ("http", "https"):
            # Streamed to the loopback sink, which takes no request: a 502 or a closed connection (the API takes no
            # bodies anyway). What matters is where it went.
            try:
                r = await client.post(f"{base.format(scheme)}/v1/stats", content=b"x" * 2_000_000)
            except httpx.TransportError:
                continue
            assert r.status_code in (405, 502), (r.status_code, r.text[:200])
    finally:
        await client.aclose()
    nothing_upstream(kit)


def _tunnel_then(port: int, payload: bytes, tls: bool) -> bytes:
    """CONNECT captcha.mitm:443, then raw bytes or a TLS handshake without SNI; what comes back until the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"CONNECT {API}:443 HTTP/1.1\r\nHost: {API}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                with ctx.wrap_socket(s, server_hostname=None) as t:
                    t.sendall(b"GET /v1/stats HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
                    return t.recv(65536)
            except (ssl.SSLError, ConnectionError):
                return b""
        s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
        except (ConnectionError, TimeoutError):
            pass
        return out


@pytest.mark.parametrize("tls", [False, True], ids=["raw", "tls-without-sni"])
async def test_a_tunnel_to_the_api_host_that_speaks_something_else_opens_nothing(kit: Kit, tls: bool) -> None:
    """Bytes in a CONNECT tunnel to the API host that are no request for it (in upstream mode mitmproxy would
    open the tunnel's server side through the upstream proxy, asking it for captcha.mitm:443)."""
    for mode in ("regular", "upstream"):
        await asyncio.to_thread(_tunnel_then, kit.ports[mode], b"\x00 not http\r\n\r\n", tls)
    nothing_upstream(kit)
