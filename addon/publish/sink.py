"""`LoopbackSink`: where a server connection for the API host goes when mitmproxy opens one nobody will use.

SOCKS5 (and any mode with `connection_strategy=eager` that knows the destination up front) connects to the
destination before the client has sent anything, and fails the client when that connection fails. For the API host
the connection must succeed without leaving the machine: it is pointed here, held until mitmproxy closes it, and
closed at the first byte it carries (nothing is ever meant to be sent on it: the API answers every request itself).
"""

from __future__ import annotations

import asyncio
import contextlib


class LoopbackSink:
    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
            port: int = self._server.sockets[0].getsockname()[1]
            self.address = ("127.0.0.1", port)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await reader.read(1)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
