"""`GET /v1/events/stream`: Server-Sent Events, one `data:` line of event JSON per event with `id: <seq>`.

mitmproxy sends a response an addon makes in one piece; it streams only what comes from a server. So the API
re-targets a stream request at this small server on a loopback port (with a per-run secret header, so nothing
else on the machine can read the stream without the API's token), and mitmproxy streams its answer through to the
device like any upstream response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import urllib.parse

from addon.publish.board import Board
from addon.publish.events import Event

logger = logging.getLogger(__name__)

SECRET_HEADER = "x-captcha-stream-secret"
KEEPALIVE_S = 15.0
QUEUE_LIMIT = 10_000
"""Events a slow reader may fall behind by before its stream is closed (it resumes with Last-Event-ID)."""
MAX_REQUEST_HEAD = 16 * 1024


def frame(event: Event) -> bytes:
    data = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.seq}\ndata: {data}\n\n".encode("utf-8", "backslashreplace")


class EventStreamServer:
    def __init__(self, board: Board, keepalive_s: float = KEEPALIVE_S):
        self.board = board
        self.keepalive_s = keepalive_s
        self.secret = secrets.token_urlsafe(24)
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._readers: set[asyncio.Queue[Event | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def readers(self) -> int:
        return len(self._readers)

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

    def publish(self, event: Event) -> None:
        """The bus outlet: hands the event to every open stream, closing those too far behind."""
        for queue in list(self._readers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._readers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > MAX_REQUEST_HEAD:
                return
            target, headers = _parse_head(head)
            if not hmac.compare_digest(headers.get(SECRET_HEADER, "").encode(), self.secret.encode()):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
            client = query.get("client") or None
            last = _int(headers.get("last-event-id") or query.get("last_event_id"))
            await self._stream(writer, client, last)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(self, writer: asyncio.StreamWriter, client: str | None, last: int | None) -> None:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self._readers.add(queue)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                         b"Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
                         b"retry: 2000\n\n")
            sent = last if last is not None else self.board.events[-1].seq if self.board.events else 0
            if last is not None:
                # Resuming: what was missed, from the board's memory, before the live events.
                for missed in self.board.since(last, client):
                    writer.write(frame(missed))
                    sent = missed.seq
            await writer.drain()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), self.keepalive_s)
                except TimeoutError:
                    writer.write(b": keep-alive\n\n")
                    await writer.drain()
                    continue
                if event is None:
                    return
                if event.seq <= sent or (client is not None and event.client != client):
                    continue
                writer.write(frame(event))
                sent = event.seq
                await writer.drain()
        finally:
            self._readers.discard(queue)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    # By hand, not h11: h11 refuses an HTTP/1.1 head without Host, which this loopback server has always taken.
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    target = parts[1] if len(parts) >= 2 else "/"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return target, headers


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
