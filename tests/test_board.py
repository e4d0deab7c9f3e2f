from __future__ import annotations

import asyncio

import pytest

from addon.publish import events as ev
from addon.publish.board import Board
from addon.publish.bus import EventBus
from addon.publish.http_api import drag_for
from addon.publish.tally import Tally
from addon.solving.base import RotateAnswer, SlideAnswer


class Log:
    """Emits typed events by name, the way the capture stage and the scheduler do."""

    def __init__(self, bus: EventBus, tally: Tally):
        self.bus = bus
        self.tally = tally

    def emit(self, name: str, client: str, challenge: str, kind: str, **fields: object) -> ev.Event:
        common = {"client": client, "challenge": challenge, "kind": kind}
        if name == "captured":
            return self.bus.emit(ev.Captured(**common, images={}, source="get"))  # type: ignore[arg-type]
        if name == "solved":
            answer = SlideAnswer.from_view(float(fields["x"]), 552, 340) if kind == "slide" else RotateAnswer.from_angle(90)  # type: ignore[arg-type]
            return self.bus.emit(ev.Solved(**common, service="local", job_id=None, result="1", answer=answer,  # type: ignore[arg-type]
                                           elapsed_ms=1))
        if name == "failed":
            return self.bus.emit(ev.Failed(**common, reason=str(fields["reason"]), message=""))  # type: ignore[arg-type]
        raise AssertionError(name)


def make() -> tuple[Log, Board]:
    """The board and the tally on one bus, as the proxy has them (the counts of /v1/stats are the tally's)."""
    bus, board, tally = EventBus(run="r"), Board(), Tally()
    bus.subscribe("tally", tally)
    bus.subscribe("board", board.add)
    return Log(bus, tally), board


def test_answers_per_client_in_order() -> None:
    log, board = make()
    log.emit("captured", "a", "ch1", "slide")
    log.emit("captured", "b", "ch2", "rotate")
    assert board.final_of_newest("a") is None
    log.emit("solved", "a", "ch1", "slide", x=1)
    log.emit("failed", "b", "ch2", "rotate", reason="timeout", message="")
    log.emit("captured", "a", "ch3", "slide")
    assert board.final_of_newest("a") is None
    assert board.latest_final("a").challenge == "ch1"  # type: ignore[union-attr]
    log.emit("solved", "a", "ch3", "slide", x=2)
    assert [board.final_after("a", s).challenge for s in (0, 3, 5)] == ["ch1", "ch3", "ch3"]  # type: ignore[union-attr]
    assert board.final_after("a", 6) is None
    assert [e.seq for e in board.newest(10, "a")] == [6, 5, 3, 1]
    stats = log.tally.stats()
    assert stats["failed"] == {"timeout": 1} and stats["captured"] == 3


async def test_waiters_wake_on_their_own_client_only() -> None:
    log, board = make()
    woke: list[str] = []

    async def wait(client: str) -> None:
        await board.wait_change(client, 5)
        woke.append(client)

    tasks = {c: asyncio.create_task(wait(c)) for c in ("a", "b")}
    async with asyncio.timeout(5):
        while not all(board._clients.get(c) and board._clients[c].waiters for c in tasks):
            await asyncio.sleep(0)
    log.emit("captured", "a", "x", "rotate")
    await asyncio.wait_for(tasks["a"], 4)  # well inside its own timeout of 5 s: the event woke it
    assert woke == ["a"] and not tasks["b"].done()
    log.emit("solved", "b", "y", "rotate")
    await asyncio.wait_for(tasks["b"], 4)
    assert woke == ["a", "b"]


@pytest.mark.parametrize(("event", "query", "expected"), [
    ({"event": "solved", "kind": "slide", "answer": {"x": 170, "fraction": 0.5}}, {"width": "276"}, {"x": 138.0, "width": 276.0}),
    ({"event": "solved", "kind": "rotate", "answer": {"value": 135.5, "fraction": 0.5, "angle": 180.0}},
     {"track": "340", "handle": "69"}, {"x": 135.5, "travel": 271.0, "angle": 180.0}),
    ({"event": "solved", "kind": "rotate", "answer": {"value": 135.5, "fraction": 0.5, "angle": 180.0}},
     {"track": "300", "handle": "300"}, None),
    ({"event": "failed", "kind": "slide"}, {"width": "300"}, None),
    ({"event": "solved", "kind": "slide", "answer": {"x": 1, "fraction": 0.1}}, {"width": "nan"}, None),
])
def test_drag_conversion(event: dict[str, object], query: dict[str, str], expected: object) -> None:
    assert drag_for(event, query) == expected


def test_counts_per_proxy_and_per_client() -> None:
    log, board = make()
    log.emit("captured", "a", "x", "rotate")
    log.emit("failed", "a", "x", "rotate", reason="timeout")
    log.emit("captured", "a", "y", "rotate")
    log.emit("failed", "a", "y", "rotate", reason="timeout")
    log.emit("captured", "b", "z", "slide")
    log.emit("failed", "b", "z", "slide", reason="bad_image")
    log.emit("solved", "b", "w", "slide", x=3)
    none = {"captured": 0, "solved": 0, "failed": {}, "expired": 0, "verified": 0}
    assert log.tally.stats() == {**none, "captured": 3, "solved": 1, "failed": {"timeout": 2, "bad_image": 1}}
    assert log.tally.client_stats("a") == {**none, "captured": 2, "failed": {"timeout": 2}}
    assert log.tally.client_stats("b") == {**none, "captured": 1, "solved": 1, "failed": {"bad_image": 1}}
    assert log.tally.client_stats("nobody") == none
    assert board.knows("a") and not board.knows("nobody")


def test_events_since_a_seq_for_a_resuming_stream() -> None:
    log, board = make()
    for n in range(6):
        log.emit("captured", "ab"[n % 2], f"x{n}", "rotate")
    assert [e.seq for e in board.since(0)] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in board.since(4)] == [5, 6]
    assert board.since(6) == [] and board.since(-3)[0].seq == 1
    assert [e.seq for e in board.since(2, "b")] == [4, 6]


def test_recent_events_are_bounded_oldest_out() -> None:
    from addon.publish.board import MAX_EVENTS

    log, board = make()
    for n in range(MAX_EVENTS + 3):
        log.emit("captured", "a", f"x{n}", "rotate")
    assert len(board.events) == MAX_EVENTS and board.events[0].seq == 4
    assert log.tally.stats()["captured"] == MAX_EVENTS + 3


def test_each_client_keeps_its_newest_answers() -> None:
    from addon.publish.board import MAX_FINALS_PER_CLIENT

    log, board = make()
    for n in range(MAX_FINALS_PER_CLIENT + 2):
        log.emit("captured", "a", f"x{n}", "rotate")
        log.emit("solved", "a", f"x{n}", "rotate")
    assert board.final_after("a", 0).challenge == "x2"  # type: ignore[union-attr]
    # The newest captured challenge's final is still found, the oldest are gone.
    assert board.final_of_newest("a").challenge == f"x{MAX_FINALS_PER_CLIENT + 1}"  # type: ignore[union-attr]
    client = board._clients["a"]
    assert len(client.finals_by_challenge) == MAX_FINALS_PER_CLIENT
    assert "x1" not in client.finals_by_challenge and "x2" in client.finals_by_challenge


def test_a_client_with_no_answer_yet_has_none_to_walk() -> None:
    log, board = make()
    log.emit("captured", "a", "x", "rotate")
    assert board.final_after("a", 0) is None and board.latest_final("a") is None
    assert board.final_after("nobody", 0) is None and board.final_of_newest("nobody") is None


async def test_clients_are_bounded_and_a_forgotten_clients_waiters_wake() -> None:
    from addon.publish.board import MAX_CLIENTS

    log, board = make()
    waiting = asyncio.create_task(board.wait_change("first", 30))
    async with asyncio.timeout(5):
        while not board.knows("first"):
            await asyncio.sleep(0)
    for n in range(MAX_CLIENTS - 1):
        log.emit("captured", f"c{n}", f"x{n}", "rotate")
    assert board.knows("first") and not waiting.done()
    log.emit("captured", "one-too-many", "y", "rotate")
    assert not board.knows("first") and board.knows("c0") and board.knows("one-too-many")
    await asyncio.wait_for(waiting, 5)
    # The least recently seen goes first: c0 is seen again, so c1 is the next to go.
    log.emit("captured", "c0", "again", "rotate")
    log.emit("captured", "another", "z", "rotate")
    assert board.knows("c0") and not board.knows("c1")


async def test_a_wait_that_times_out_leaves_no_waiter_behind() -> None:
    _, board = make()
    await board.wait_change("a", 0.01)
    assert board._clients["a"].waiters == set()


def test_only_failures_count_as_failure_reasons() -> None:
    log, _ = make()
    log.bus.emit(ev.Expired(client="a", challenge="x", kind="rotate", images={}, reason="window"))
    assert log.tally.stats()["failed"] == {} and log.tally.client_stats("a") == {
        "captured": 0, "solved": 0, "failed": {}, "expired": 1, "verified": 0}
