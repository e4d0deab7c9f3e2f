"""A recording upstream HTTP proxy on loopback, for tests of ``mitmdump --mode upstream:http://127.0.0.1:PORT``.

    with RecordingUpstream(origin=(http_port, https_port)) as upstream:
        ... run mitmdump with f"--mode=upstream:{upstream.url}" ...
        assert not upstream.saw("captcha.mitm")

Every request it receives is recorded (`requests`: method, target, headers, client address) before anything
else happens. It then acts as a farm's upstream proxy does, but never leaves loopback:

- ``CONNECT host:443`` (or any port but 80) is answered 200 and tunnelled to the test origin's HTTPS port, ``host:80``
  to its HTTP port; the TLS inside stays end to end between mitmproxy and the origin;
- an absolute-form request (``GET http://host/path``) is sent to the origin's HTTP port in origin form with its
  Host header, and the origin's answer relayed (one request per connection: it answers ``Connection: close``);
- without an origin, and for targets a remote upstream could not reach (IP literals such as the proxy's own
  ``127.0.0.1``, names under ``.mitm``, which resolve nowhere), it answers 502, as a real upstream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Seen:
    """One request the upstream received, as it arrived."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    client: tuple[str, int]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def text(self) -> str:
        """Request line and headers, lower-cased: what `saw` searches."""
        lines = [f"{self.method} {self.target}", *(f"{k}: {v}" for k, v in self.headers)]
        return "\n".join(lines).lower()


@dataclass
class RecordingUpstream:
    origin: tuple[int, int] | None = None
    """(http_port, https_port) of the loopback test origin, or None to answer every request 502."""
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.requests)

    def saw(self, text: str) -> list[Seen]:
        """Every recorded request whose request line or headers contain ``text`` (case-insensitive)."""
        return [r for r in self.seen() if text.lower() in r.text()]

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                self._server = await asyncio.start_server(self._serve, self.host, self.port)
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:  # reported to the starting thread
                failure.append(e)
                ready.set()
                return
            ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True,
                                        name="recording-upstream")
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the proxy --------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = [*lines[0].split(" "), "", ""][:2]
            headers = tuple((k.strip(), v.strip()) for k, sep, v in (line.partition(":") for line in lines[1:])
                            if sep)
            peer = writer.get_extra_info("peername")
            with self._lock:
                self.requests.append(Seen(method, target, headers, (peer[0], peer[1])))
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _origin_port(self, host: str, port: int) -> int | None:
        if self.origin is None or _unreachable(host):
            return None
        return self.origin[0] if port == 80 else self.origin[1]

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port_s = target.rpartition(":")
        origin_port = self._origin_port(host, int(port_s) if port_s.isdigit() else 443)
        if origin_port is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _forward(self, method: str, target: str, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        authority, _, rest = target.removeprefix("http://").partition("/")
        host = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
        origin_port = self._origin_port(host, 80)
        if origin_port is None or not target.startswith("http://"):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        first, _, others = head.partition(b"\r\n")
        version = first.rsplit(b" ", 1)[-1]
        kept = [line for line in others.split(b"\r\n")
                if line and not line.lower().startswith((b"connection:", b"proxy-connection:", b"keep-alive:"))]
        request = b"\r\n".join([f"{method} /{rest} ".encode() + version, *kept, b"Connection: close"]) + b"\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
        up_writer.write(request)
        await up_writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)


def _unreachable(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host.endswith(".mitm"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.write_eof()


async def _pipe_both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.close()
        with contextlib.suppress(Exception):
            await up_writer.wait_closed()
