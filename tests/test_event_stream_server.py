"""The loopback event stream server serves only requests that carry this run's secret (the API adds it)."""

from __future__ import annotations

import asyncio

import pytest

from addon.publish.board import Board
from addon.publish.event_stream import SECRET_HEADER, EventStreamServer


async def _ask(port: int, headers: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


@pytest.mark.parametrize("headers", ["", f"{SECRET_HEADER}: wrong\r\n", "authorization: Bearer x\r\n"])
async def test_a_request_without_the_secret_is_refused(headers: str) -> None:
    server = EventStreamServer(Board())
    await server.start()
    try:
        assert server.port is not None
        head = await _ask(server.port, headers)
        assert head.startswith(b"HTTP/1.1 403 "), head
        assert server.readers == 0
    finally:
        await server.stop()


async def test_the_secret_opens_the_stream() -> None:
    server = EventStreamServer(Board())
    await server.start()
    try:
        assert server.port is not None
        head = await _ask(server.port, f"{SECRET_HEADER}: {server.secret}\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head, head
    finally:
        await server.stop()
