"""A simulated phone (or browser) that sends real HTTP(S) through mitmdump from its own loopback address.

Each ``Device`` owns one ``httpx.AsyncClient`` whose connections go to the proxy and are bound to the device's
source address (``127.0.0.N``), so the proxy sees one client address per device. httpx ignores
``local_address`` for proxied connections, hence the custom httpcore network backend below.

HTTPS goes through a CONNECT tunnel and is verified against the mitmproxy CA (``ca_path``); HTTP/2 is offered
inside the tunnel when ``http2=True`` (the default; mitmproxy then speaks HTTP/2 to the client only when the
upstream origin does). Plain HTTP is sent to the proxy in absolute form over HTTP/1.1.

The captcha flow follows ``/work/shared/captcha-traffic.md``: ``get_challenge`` -> ``fetch_images`` ->
``verify``; ``api`` talks to the addon's HTTP API at ``http://captcha.mitm``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import ssl
import sys
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpcore
import httpx

DEFAULT_VERIFY_HOST = "verification-va.tiktok.com"
DEFAULT_PLAIN_HOST = "api16-normal-c-useast1a.tiktokv.com"
DEFAULT_API_HOST = "captcha.mitm"
AID = 1988
WHIRL_DRAG_WIDTH = 271

DEFAULT_USER_AGENT = (
    "com.zhiliaoapp.musically/2023501030 (Linux; U; Android 13; en_US; Pixel 7; Build/TQ3A.230805.001; "
    "Cronet/TTNetVersion:5f8e8d8c 2023-11-07 QuicVersion:22f74f01 2023-10-11)"
)

Order = Literal["random", "normal", "reverse"]

ROLES: dict[str, tuple[str, ...]] = {
    "whirl": ("outer", "inner"),
    "slide": ("background", "piece"),
    "3d": ("image",),
    "icon": ("image",),
}
"""Image roles of url1 and url2 per mode; any other mode has url1 = ``background`` only."""


# -- network backend that binds the source address ----------------------------------------------------------


class BoundBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that binds every TCP connection to ``local_address``.

    httpcore's ``AsyncHTTPProxy`` does not pass its ``local_address`` on to the connections it makes to the
    proxy; a backend sees every ``connect_tcp`` and can.
    """

    def __init__(self, local_address: str, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.local_address = local_address
        self._backend: httpcore.AsyncNetworkBackend = backend or httpcore.AnyIOBackend()
        self.connections = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connections += 1
        return await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=self.local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("BoundBackend does not do Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class BoundProxyTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` that sends everything through an HTTP proxy from a fixed source address."""

    def __init__(
        self,
        proxy_url: str,
        local_address: str,
        ssl_context: ssl.SSLContext,
        *,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False, http1=http1, http2=http2, limits=limits)
        self.backend = BoundBackend(local_address)
        proxy = httpx.URL(proxy_url)
        self._pool = httpcore.AsyncHTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.raw_scheme, host=proxy.raw_host, port=proxy.port, target=proxy.raw_path
            ),
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            network_backend=self.backend,
        )


# -- challenges ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``/captcha/get`` answer, whichever of the shapes A, B or C it came in."""

    id: str
    mode: str
    url1: str
    url2: str | None
    backup_url1: str | None
    backup_url2: str | None
    tip_y: float
    verify_id: str | None
    shape: str = "single"
    """``single`` (A), ``list`` (B) or ``edata`` (C)."""
    encrypted: bool = False
    scheme: str = "https"
    host: str = DEFAULT_VERIFY_HOST
    """Where the get was sent (verify goes to the same place)."""
    challenge_code: int | None = None
    raw: Any = field(default=None, compare=False, repr=False)
    """The challenge's own JSON object."""

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLES.get(self.mode, ("background",))

    def urls(self, use_backup: bool = False) -> dict[str, str]:
        """role -> URL (the backup URL when asked for and present)."""
        primary = (self.url1, self.url2)
        backup = (self.backup_url1, self.backup_url2)
        out: dict[str, str] = {}
        for role, url, alt in zip(self.roles, primary, backup, strict=False):
            chosen = alt if use_backup and alt else url
            if chosen:
                out[role] = chosen
        return out


def _first_url(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0] or None
    return None


def _decode_edata(s: str) -> Any:
    from tests.kit.edata_codec import decode_edata

    return decode_edata(s)


def _encode_edata(obj: Any) -> str:
    from tests.kit.edata_codec import encode_edata

    result: str = encode_edata(obj)
    return result


def unwrap_edata(body: Any) -> tuple[Any, bool]:
    """``{"edata": s}`` or ``{"data": {"edata": s}}`` -> (decoded JSON, True); anything else -> (body, False)."""
    if isinstance(body, dict):
        if isinstance(body.get("edata"), str):
            return _decode_edata(body["edata"]), True
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("edata"), str):
            return _decode_edata(data["edata"]), True
    return body, False


def parse_challenges(body: Any, *, scheme: str = "https", host: str = DEFAULT_VERIFY_HOST) -> list[Challenge]:
    """Normalise a ``/captcha/get`` response body (shape A, B or C) to a list of ``Challenge``."""
    obj, encrypted = unwrap_edata(body)
    if isinstance(obj, str):  # an edata blob may hold the JSON as text
        obj = json.loads(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"unexpected /captcha/get body: {body!r:.200}")
    data = obj.get("data") if isinstance(obj.get("data"), dict) else obj
    assert isinstance(data, dict)
    if isinstance(data.get("challenges"), list):
        items = [c for c in data["challenges"] if isinstance(c, dict)]
        shape = "list"
    elif "id" in data and "question" in data:
        items = [data]
        shape = "single"
    else:
        raise ValueError(f"no challenge in /captcha/get body: {body!r:.200}")
    if encrypted:
        shape = "edata"
    outer_verify_id = data.get("verify_id")
    challenges = []
    for item in items:
        q = item.get("question") or {}
        code = item.get("challenge_code")
        challenges.append(
            Challenge(
                id=str(item["id"]),
                mode=str(item.get("mode", "")),
                url1=str(q.get("url1") or ""),
                url2=q.get("url2") or None,
                backup_url1=_first_url(q.get("backup_url1")),
                backup_url2=_first_url(q.get("backup_url2")),
                tip_y=float(q.get("tip_y") or 0),
                verify_id=item.get("verify_id") or outer_verify_id,
                shape=shape,
                encrypted=encrypted,
                scheme=scheme,
                host=host,
                challenge_code=int(code) if isinstance(code, int | str) and str(code).isdigit() else None,
                raw=item,
            )
        )
    if not challenges:
        raise ValueError(f"empty challenge list in /captcha/get body: {body!r:.200}")
    return challenges


def verify_passed(body: Any) -> bool:
    """Pass/fail of a ``/captcha/verify`` response body (plain or ``edata``): ``code == 200`` means pass."""
    obj, _ = unwrap_edata(body)
    if isinstance(obj, str):
        obj = json.loads(obj)
    if not isinstance(obj, dict):
        return False
    code = obj.get("code")
    return code == 200 or code == "200"


def make_reply(x: float, rng: random.Random, y: float | None = None) -> list[dict[str, float]]:
    """A plausible drag trajectory: ease-out from 0 to exactly ``x``, small y jitter, rising ``relative_time``."""
    n = rng.randint(14, 26)
    base_y = y if y is not None else float(rng.randint(18, 32))
    t = rng.randint(60, 160)
    points: list[dict[str, float]] = []
    for i in range(n):
        f = i / n
        px = round(x * (1 - (1 - f) ** 2.2))
        points.append({"x": px, "y": base_y + rng.choice((-1, 0, 0, 0, 1)), "relative_time": t})
        t += rng.randint(8, 30)
    last_x: float = int(x) if float(x).is_integer() else x
    points.append({"x": last_x, "y": base_y, "relative_time": t + rng.randint(40, 120)})
    return points


def nth_loopback(n: int) -> str:
    """127.0.0.0 + n (``nth_loopback(2) == "127.0.0.2"``; goes on into 127.0.1.x beyond 255)."""
    addr = ipaddress.IPv4Address("127.0.0.0") + n
    if not addr.is_loopback or addr.packed[-1] in (0, 255):
        raise ValueError(f"no usable loopback address #{n}")
    return str(addr)


# -- the device ------------------------------------------------------------------------------------------------


class Device:
    """One phone: an ``httpx.AsyncClient`` through the proxy, bound to source address ``ip``.

    ``device_id`` defaults to a 19-digit number derived from ``ip``; with ``device_header`` set, every request
    carries it in that header (for ``captcha_client_key=header:NAME``). ``history`` records
    ``(method, url, status)`` of every response.
    """

    def __init__(
        self,
        ip: str,
        proxy_url: str,
        ca_path: str | Path,
        *,
        headers: Mapping[str, str] | None = None,
        http2: bool = True,
        device_id: str | None = None,
        device_header: str | None = None,
        api_host: str = DEFAULT_API_HOST,
        timeout: float = 15.0,
        seed: int | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.ip = ip
        self.proxy_url = proxy_url
        self.ca_path = Path(ca_path)
        self.http2 = http2
        self.device_id = device_id or str(7_000_000_000_000_000_000 + int(ipaddress.ip_address(ip)))
        self.api_host = api_host
        self.rng = random.Random(seed if seed is not None else int(ipaddress.ip_address(ip)))
        self.history: list[tuple[str, str, int]] = []
        self.last_verify_body: Any = None
        all_headers = {"User-Agent": DEFAULT_USER_AGENT}
        if device_header:
            all_headers[device_header] = self.device_id
        all_headers.update(headers or {})
        ssl_context = ssl.create_default_context(cafile=str(self.ca_path))
        self.transport = BoundProxyTransport(
            proxy_url,
            ip,
            ssl_context,
            http2=http2,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self.client = httpx.AsyncClient(
            transport=self.transport,
            headers=all_headers,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            event_hooks={"response": [self._record]},
        )

    async def _record(self, response: httpx.Response) -> None:
        self.history.append((response.request.method, str(response.request.url), response.status_code))

    def __repr__(self) -> str:
        return f"Device({self.ip!r}, device_id={self.device_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- plain requests -----------------------------------------------------------------------------------------

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Any request through the proxy (``kwargs`` as for ``httpx.AsyncClient.request``)."""
        return await self.client.request(method, url, **kwargs)

    async def get_plain(
        self, path: str, *, scheme: str = "https", host: str = DEFAULT_PLAIN_HOST, **kwargs: Any
    ) -> httpx.Response:
        """GET ``<scheme>://<host><path>`` (e.g. the origin's ``/plain/json``): traffic that is no captcha."""
        return await self.client.get(f"{scheme}://{host}{path}", **kwargs)

    async def api(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        scheme: str = "http",
        **params: str | int | float,
    ) -> httpx.Response:
        """GET ``http://captcha.mitm<path>?<params>`` through the proxy (the addon's HTTP API)."""
        return await self.client.get(
            f"{scheme}://{self.api_host}{path}", params=params or None, headers=dict(headers or {})
        )

    # -- the captcha sequence -----------------------------------------------------------------------------------

    def _query(self, **extra: str | int) -> dict[str, str | int]:
        return {"aid": AID, "device_id": self.device_id, "os_type": 0, **extra}

    async def get_challenges(
        self, mode: str, shape: str = "single", scheme: str = "https", host: str = DEFAULT_VERIFY_HOST,
        inline: bool = False,
    ) -> list[Challenge]:
        """``GET <scheme>://<host>/captcha/get?mode=..&shape=..&scheme=..`` -> every challenge of the answer.
        ``inline``: the origin sends the images inside the get (``question.object1``), with no URL to fetch."""
        extra = {"inline": 1} if inline else {}
        resp = await self.client.get(
            f"{scheme}://{host}/captcha/get",
            params=self._query(mode=mode, shape=shape, scheme=scheme, **extra),
        )
        resp.raise_for_status()
        return parse_challenges(resp.json(), scheme=scheme, host=host)

    async def get_challenge(
        self, mode: str, shape: str = "single", scheme: str = "https", host: str = DEFAULT_VERIFY_HOST,
        inline: bool = False,
    ) -> Challenge:
        """As ``get_challenges``, the first challenge (the origin hands out one per get)."""
        return (await self.get_challenges(mode, shape, scheme, host, inline))[0]

    async def fetch_images(
        self,
        challenge: Challenge,
        order: Order = "random",
        use_backup: bool = False,
        duplicate: bool = False,
    ) -> dict[str, bytes]:
        """Download the challenge's images one after another -> role -> bytes.

        ``order``: url1 first (``normal``), url2 first (``reverse``) or either (``random``, from the device's
        seeded RNG). ``use_backup``: from the ``backup_url`` hosts. ``duplicate``: the image fetched first is
        fetched once more at the end (as a client retrying would).
        """
        urls = list(challenge.urls(use_backup).items())
        if order == "reverse" or (order == "random" and self.rng.random() < 0.5):
            urls.reverse()
        if duplicate and urls:
            urls.append(urls[0])
        out: dict[str, bytes] = {}
        for role, url in urls:
            resp = await self.client.get(url)
            resp.raise_for_status()
            if role in out and out[role] != resp.content:
                raise AssertionError(f"{url} answered different bytes the second time")
            out[role] = resp.content
        return out

    def verify_body(
        self, challenge: Challenge, x: float, width: int = 340, drag_width: int = WHIRL_DRAG_WIDTH
    ) -> dict[str, Any]:
        """The plain JSON a client posts to ``/captcha/verify`` for a drag ending at ``x``."""
        body: dict[str, Any] = {
            "modified_img_width": width,
            "id": challenge.id,
            "mode": challenge.mode,
            "reply": make_reply(x, self.rng),
            "models": {},
            "log_params": {},
            "reply2": [],
            "models2": {},
            "version": 2,
            "verify_id": challenge.verify_id,
        }
        if challenge.mode == "whirl":
            body["drag_width"] = drag_width
        return body

    async def verify(
        self,
        challenge: Challenge,
        x: float,
        width: int = 340,
        encrypted: bool = False,
        drag_width: int = WHIRL_DRAG_WIDTH,
    ) -> bool:
        """``POST /captcha/verify`` (to the get's scheme and host) with a trajectory ending at ``x``.

        ``x`` is in units of ``width`` (``modified_img_width``). Returns whether the site said pass; the
        decoded response is kept in ``last_verify_body``.
        """
        body = self.verify_body(challenge, x, width, drag_width)
        payload: dict[str, Any] = {"edata": _encode_edata(body)} if encrypted else body
        resp = await self.client.post(
            f"{challenge.scheme}://{challenge.host}/captcha/verify",
            params=self._query(mode=challenge.mode),
            json=payload,
        )
        resp.raise_for_status()
        decoded, _ = unwrap_edata(resp.json())
        self.last_verify_body = decoded
        return verify_passed(decoded)


    async def verify_clicks(self, challenge: Challenge, points: Sequence[tuple[float, float]], width: float,
                            encrypted: bool = False) -> bool:
        """``POST /captcha/verify`` for an object captcha: one click per point, x and y in units of ``width``
        (``modified_img_width``), as the app's verify body does (captcha-traffic.md §8)."""
        body: dict[str, Any] = {
            "modified_img_width": width, "id": challenge.id, "mode": challenge.mode,
            "reply": [{"x": x, "y": y, "relative_time": 400 * (n + 1)} for n, (x, y) in enumerate(points)],
            "models": {}, "reply2": [], "models2": {}, "version": 2, "verify_id": challenge.verify_id,
        }
        payload: dict[str, Any] = {"edata": _encode_edata(body)} if encrypted else body
        resp = await self.client.post(f"{challenge.scheme}://{challenge.host}/captcha/verify",
                                      params=self._query(mode=challenge.mode), json=payload)
        resp.raise_for_status()
        decoded, _ = unwrap_edata(resp.json())
        self.last_verify_body = decoded
        return verify_passed(decoded)


class Fleet:
    """``n`` devices on 127.0.0.2 ... 127.0.0.(n+1) (``first`` moves the start), created and closed together.

    ``device_kwargs`` go to every ``Device``; ``seed`` (if given) is offset per device.
    """

    def __init__(
        self,
        n: int,
        proxy_url: str,
        ca_path: str | Path,
        *,
        first: int = 2,
        seed: int | None = None,
        **device_kwargs: Any,
    ) -> None:
        self.devices: list[Device] = [
            Device(
                nth_loopback(first + i),
                proxy_url,
                ca_path,
                seed=None if seed is None else seed + i,
                **device_kwargs,
            )
            for i in range(n)
        ]

    @property
    def ips(self) -> list[str]:
        return [d.ip for d in self.devices]

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __getitem__(self, i: int) -> Device:
        return self.devices[i]

    async def aclose(self) -> None:
        await asyncio.gather(*(d.aclose() for d in self.devices), return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# -- command line: drive a few challenges through a running proxy --------------------------------------------------

DEFAULT_CA = Path("~/.mitmproxy/mitmproxy-ca-cert.pem")


async def drive(device: Device, modes: Sequence[str], *, scheme: str = "https", wait: float = 30.0,
                verify: bool = False) -> list[dict[str, Any]]:
    """Each mode in turn, as a phone does it: the get, then its images, then the answer from ``/v1/answer/wait``
    (and with ``verify`` the answer posted to the site). One result per challenge:
    ``{"challenge", "mode", "images": {role: bytes}, "captured": bool, "event": final event or None, "verified"}``.
    """
    results: list[dict[str, Any]] = []
    for mode in modes:
        challenge = await device.get_challenge(mode, scheme=scheme)
        images = await device.fetch_images(challenge, order="normal")
        r = await device.api("/v1/answer/wait", timeout=wait)
        event = r.json() if r.status_code == 200 else None
        if event is not None and event.get("challenge") != challenge.id:
            event = None  # an answer of an older challenge of this device
        captured = event is not None
        if not captured:
            events = (await device.api("/v1/events", limit=200)).json().get("events", [])
            captured = any(e.get("challenge") == challenge.id and e.get("event") == "captured" for e in events)
        verified: bool | None = None
        if verify and event is not None and event.get("event") == "solved":
            answer = event["answer"]
            if challenge.mode == "slide":
                verified = await device.verify(challenge, answer["x"], width=answer["width_view"])
            else:
                verified = await device.verify(challenge, answer["value"])
        results.append({"challenge": challenge.id, "mode": challenge.mode,
                        "images": {role: len(body) for role, body in images.items()}, "captured": captured,
                        "event": event, "verified": verified})
    return results


def describe(result: Mapping[str, Any], wait: float) -> str:
    """One line for a person: what happened to the challenge."""
    head = f"{result['mode']:<5} {result['challenge'][:16]}: "
    event = result["event"]
    if event is None:
        seen = "captured, " if result["captured"] else "NOT captured, "
        return head + seen + f"no answer within {wait:g} s (is a solver or key configured?)"
    if event["event"] == "failed":
        return head + f"failed: {event.get('reason')} ({event.get('message')})"
    answer = event.get("answer") or {}
    if result["mode"] == "slide":
        told = f"drag the piece to x={answer.get('x')} of {answer.get('width_view')} px"
    else:
        angle = answer.get("angle")
        turn = f" (turn {angle:.1f} degrees)" if isinstance(angle, int | float) else ""
        told = f"slide {answer.get('value')} px on the 340-px widget{turn}"
    line = head + f"solved by {event.get('service')} in {event.get('elapsed_ms')} ms: {told}"
    if result["verified"] is not None:
        line += "; the site said " + ("pass" if result["verified"] else "FAIL")
    return line


def _modes(mode: str, count: int) -> list[str]:
    cycle = ("whirl", "slide") if mode == "both" else (mode,)
    return [cycle[i % len(cycle)] for i in range(count)]


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    async with Device(args.ip, args.proxy, args.ca.expanduser(), timeout=args.wait + 15) as device:
        return await drive(device, _modes(args.mode, args.count), scheme=args.scheme, wait=args.wait,
                           verify=args.verify)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.kit.device",
        description="Drive captcha challenges through a running mitmdump with the addon, like a phone: the get, "
                    "the images, then the answer from the addon's HTTP API; print each answer. For the test kit "
                    "(mitmdump with tests/kit/redirect.py and a test origin): see README, Testing.",
        epilog="Exit status: 0 when every challenge got a final answer (solved or failed), 2 otherwise.")
    p.add_argument("--proxy", default="http://127.0.0.1:8080", help="the proxy (default: %(default)s)")
    p.add_argument("--ca", type=Path, default=DEFAULT_CA,
                   help="mitmproxy's CA certificate, for HTTPS (default: %(default)s)")
    p.add_argument("--mode", choices=("whirl", "slide", "both"), default="both",
                   help="which challenges to ask for (default: %(default)s, alternating)")
    p.add_argument("--count", type=int, default=4, help="how many challenges (default: %(default)s)")
    p.add_argument("--scheme", choices=("https", "http"), default="https", help="default: %(default)s")
    p.add_argument("--ip", default="127.0.0.1", help="source address of the device (default: %(default)s)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait per answer, at most 60 (default 30)")
    p.add_argument("--verify", action="store_true", help="post each answer to the site and report its verdict")
    p.add_argument("--json", action="store_true", help="print one JSON object per challenge instead")
    args = p.parse_args(argv)
    if args.count < 1 or not 0 < args.wait <= 60:
        p.error("--count must be at least 1 and --wait from 0 to 60")
    if not args.ca.expanduser().is_file():
        p.error(f"no CA certificate at {args.ca}: start mitmdump once (it writes one to ~/.mitmproxy) or give --ca")
    try:
        results = asyncio.run(_run(args))
    except httpx.HTTPError as e:
        print(f"error: {type(e).__name__}: {e} (is the proxy at {args.proxy} running with the addon?)",
              file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result) if args.json else describe(result, args.wait), flush=True)
    return 0 if all(r["event"] is not None for r in results) else 2


if __name__ == "__main__":
    raise SystemExit(main())
