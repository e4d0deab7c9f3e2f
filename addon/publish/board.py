"""The in-memory record of recent events behind the HTTP API, with waiters for answers that are not final yet
(the counts of events are the tally's, `tally.py`)."""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from addon.publish.events import Event

MAX_EVENTS = 5_000
"""Events of all clients kept for /v1/events (a captured event with its images is about 2 KB)."""
MAX_FINALS_PER_CLIENT = 64
"""Each client's newest answers, for /v1/answer and walking them with ?after=SEQ."""
MAX_CLIENTS = 4_096


@dataclass(slots=True)
class _ClientBoard:
    finals: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_FINALS_PER_CLIENT))
    newest_captured: str | None = None
    finals_by_challenge: dict[str, Event] = field(default_factory=dict)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)


class Board:
    def __init__(self) -> None:
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        # By hand rather than cachetools' LRUCache: a forgotten client's waiters are woken, and the API's reads do
        # not count as seeing a client (only its events and its own waits do).
        self._clients: OrderedDict[str, _ClientBoard] = OrderedDict()

    def _client(self, client: str) -> _ClientBoard:
        board = self._clients.get(client)
        if board is None:
            board = self._clients[client] = _ClientBoard()
            while len(self._clients) > MAX_CLIENTS:
                _, old = self._clients.popitem(last=False)
                _wake(old)
        else:
            self._clients.move_to_end(client)
        return board

    def add(self, event: Event) -> None:
        self.events.append(event)
        board = self._client(event.client)
        if event.name == "captured":
            board.newest_captured = event.challenge
        elif event.final:
            board.finals.append(event)
            board.finals_by_challenge[event.challenge] = event
            if len(board.finals_by_challenge) > MAX_FINALS_PER_CLIENT:
                del board.finals_by_challenge[next(iter(board.finals_by_challenge))]
        else:
            return
        _wake(board)

    def knows(self, client: str) -> bool:
        return client in self._clients

    def latest_final(self, client: str) -> Event | None:
        board = self._clients.get(client)
        return board.finals[-1] if board and board.finals else None

    def final_after(self, client: str, after: int) -> Event | None:
        board = self._clients.get(client)
        if not board or not board.finals:
            return None
        finals = board.finals
        i = bisect.bisect_right(finals, after, key=lambda e: e.seq)
        return finals[i] if i < len(finals) else None

    def final_of_newest(self, client: str) -> Event | None:
        board = self._clients.get(client)
        if not board or board.newest_captured is None:
            return None
        return board.finals_by_challenge.get(board.newest_captured)

    def since(self, after: int, client: str | None = None) -> list[Event]:
        """Events with seq > after still held, oldest first (an event stream resuming from Last-Event-ID)."""
        events = self.events
        i = bisect.bisect_right(events, after, key=lambda e: e.seq)
        return [e for e in list(events)[i:] if client is None or e.client == client]

    def newest(self, limit: int, client: str | None = None) -> list[Event]:
        out: list[Event] = []
        if limit <= 0:
            return out
        for event in reversed(self.events):
            if client is None or event.client == client:
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    async def wait_change(self, client: str, timeout: float) -> None:
        """Returns when the client gets a captured or final event, or when the timeout passes."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        board = self._client(client)
        board.waiters.add(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            board.waiters.discard(future)


def _wake(board: _ClientBoard) -> None:
    for future in board.waiters:
        if not future.done():
            future.set_result(None)
    board.waiters.clear()
