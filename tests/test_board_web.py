from __future__ import annotations

import asyncio

import pytest

from addon.publish import events as ev
from addon.publish.board import Board
from addon.publish.bus import EventBus
from addon.publish.http_api import drag_for
from addon.solving.base import RotateAnswer, SlideAnswer


class Log:
    """Emits typed events by name, the way the capture stage and the scheduler do."""

    def __init__(self, bus: EventBus):
        self.bus = bus

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
    bus, board = EventBus(run="r"), Board()
    bus.subscribe("board", board.add)
    return Log(bus), board


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
    assert board.failed_reasons == {"timeout": 1} and board.counts["captured"] == 3


async def test_waiters_wake_on_their_own_client_only() -> None:
    log, board = make()
    woke: list[str] = []

    async def wait(client: str) -> None:
        await board.wait_change(client, 5)
        woke.append(client)

    tasks = [asyncio.create_task(wait(c)) for c in ("a", "b")]
    await asyncio.sleep(0.01)
    log.emit("captured", "a", "x", "rotate")
    await asyncio.sleep(0.01)
    assert woke == ["a"]
    log.emit("solved", "b", "y", "rotate")
    await asyncio.gather(*tasks)
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
