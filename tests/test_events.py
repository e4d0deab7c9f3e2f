"""Every event's JSON, field for field, as ../shared/interface.md names them, and the bus that stamps them."""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any

import pytest

from addon.capture.assemble import make_part
from addon.capture.images import ImageInfo, Role
from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.solving.base import RotateAnswer, SlideAnswer

ENVELOPE = {"seq": 7, "run": "r1", "time": "2026-01-02T03:04:05.678Z", "client": "10.0.0.2", "challenge": "c1"}


def stamped(event: ev.Event) -> dict[str, Any]:
    event.seq, event.run, event.time = 7, "r1", "2026-01-02T03:04:05.678Z"
    return event.to_json()


def images() -> dict[str, ev.ImageFields]:
    outer = make_part(Role.OUTER, "https://cdn/o.png", b"outer-bytes", ImageInfo("png", 347, 346, True))
    return ev.image_fields({Role.OUTER: outer})


def test_image_fields() -> None:
    import hashlib

    [(role, fields)] = images().items()
    assert role == "outer"
    assert fields.to_json() == {"url": "https://cdn/o.png", "sha256": hashlib.sha256(b"outer-bytes").hexdigest(),
                                "width": 347, "height": 346, "format": "png"}


def test_captured() -> None:
    fields = images()
    slide = ev.Captured(client="10.0.0.2", challenge="c1", kind="slide", images=fields, source="get", tip_y=77.0,
                        verify_id="Verify_x")
    assert stamped(slide) == {**ENVELOPE, "event": "captured", "kind": "slide",
                              "images": {"outer": fields["outer"].to_json()}, "source": "get", "tip_y": 77.0,
                              "verify_id": "Verify_x"}
    # tip_y belongs to slides only; no verify_id, no field.
    rotate = ev.Captured(client="10.0.0.2", challenge="c1", kind="rotate", images={}, source="geometry", tip_y=5.0)
    assert stamped(rotate) == {**ENVELOPE, "event": "captured", "kind": "rotate", "images": {},
                               "source": "geometry"}
    bare = ev.Captured(client="10.0.0.2", challenge="c1", kind="slide", images={}, source="get")
    assert "tip_y" not in stamped(bare) and not bare.final


def test_captured_has_question_for_the_kinds_whose_get_may_carry_a_prompt() -> None:
    def doc(kind: str, question: str | None) -> dict[str, Any]:
        return ev.Captured(client="d", challenge="c1", kind=kind, images={}, source="get", question=question).to_json()

    assert doc("icon", "Which are round?")["question"] == "Which are round?" and doc("3d", None)["question"] is None
    assert "question" not in doc("slide", "stray") and "question" not in doc("rotate", None)


def test_solving() -> None:
    event = ev.Solving(client="10.0.0.2", challenge="c1", kind="rotate", service="omocaptcha-v1", job_id=42)
    assert stamped(event) == {**ENVELOPE, "event": "solving", "kind": "rotate", "service": "omocaptcha-v1",
                              "job_id": 42}
    assert not event.final


def test_solved() -> None:
    answer = SlideAnswer.from_view(170.0, 552, 340)
    event = ev.Solved(client="10.0.0.2", challenge="c1", kind="slide", service="omocaptcha-v1", job_id=42,
                      result="170", answer=answer, elapsed_ms=1234)
    assert stamped(event) == {**ENVELOPE, "event": "solved", "kind": "slide", "service": "omocaptcha-v1",
                              "job_id": 42, "result": "170", "answer": answer.to_json(), "elapsed_ms": 1234,
                              "tried": []}
    assert event.final
    local = ev.Solved(client="10.0.0.2", challenge="c1", kind="rotate", service="local", job_id=None, result="90",
                      answer=RotateAnswer.from_angle(90), elapsed_ms=5, confidence=0.123456, tried=("local",),
                      cached=True)
    assert stamped(local) == {**ENVELOPE, "event": "solved", "kind": "rotate", "service": "local", "job_id": None,
                              "result": "90", "answer": {"value": 67.75, "fraction": 0.25, "angle": 90.0},
                              "elapsed_ms": 5, "confidence": 0.1235, "tried": ["local"], "cached": True}
    repeat = ev.Solved(client="k", challenge="c2", kind="rotate", service="omocaptcha-v1", job_id=None, result="90",
                       answer=RotateAnswer.from_angle(90), elapsed_ms=7, cached=True, cached_from="repeat",
                       same_as="c1")
    assert {k: stamped(repeat)[k] for k in ("cached", "cached_from", "same_as", "tried")} == {
        "cached": True, "cached_from": "repeat", "same_as": "c1", "tried": []}
    fleet = stamped(ev.Solved(client="k", challenge="c3", kind="rotate", service="s", job_id=None, result="90",
                              answer=RotateAnswer.from_angle(90), elapsed_ms=7, cached=True, cached_from="fleet"))
    assert (fleet["cached_from"], "same_as" in fleet) == ("fleet", False)


def test_failed() -> None:
    plain = ev.Failed(client="10.0.0.2", challenge="c1", kind="rotate", reason="overloaded", message="too many")
    assert stamped(plain) == {**ENVELOPE, "event": "failed", "kind": "rotate", "reason": "overloaded",
                              "message": "too many", "tried": []}
    assert plain.final
    served = ev.Failed(client="10.0.0.2", challenge="c1", kind="slide", reason="timeout", message="late",
                       service="omocaptcha-v2", job_id="t-1", tried=("omocaptcha-v2",))
    assert stamped(served) == {**ENVELOPE, "event": "failed", "kind": "slide", "service": "omocaptcha-v2",
                               "job_id": "t-1", "reason": "timeout", "message": "late", "tried": ["omocaptcha-v2"]}


def test_expired() -> None:
    fields = images()
    event = ev.Expired(client="10.0.0.2", challenge="geo-1", kind=None, images=fields, reason="window")
    assert stamped(event) == {**ENVELOPE, "challenge": "geo-1", "event": "expired", "kind": None,
                              "images": {"outer": fields["outer"].to_json()}, "reason": "window"}
    assert not event.final


def test_verified() -> None:
    bare = ev.Verified(client="10.0.0.2", challenge="c1", kind="slide", accepted=False)
    assert stamped(bare) == {**ENVELOPE, "event": "verified", "kind": "slide", "accepted": False}
    served = ev.Verified(client="10.0.0.2", challenge="c1", kind="rotate", accepted=True, service="local",
                         cached=True)
    assert stamped(served) == {**ENVELOPE, "event": "verified", "kind": "rotate", "accepted": True,
                               "service": "local", "cached": True}
    assert not served.final


def test_the_json_is_built_once() -> None:
    event = ev.Solving(client="a", challenge="c", kind="rotate", service="local", job_id=None)
    first = event.to_json()
    event.seq = 99
    assert event.to_json() is first and first["seq"] == 0


def test_event_types_by_name() -> None:
    assert {"captured": ev.Captured, "solving": ev.Solving, "solved": ev.Solved,
                              "failed": ev.Failed, "expired": ev.Expired, "verified": ev.Verified} == ev.EVENT_TYPES
    assert {"solved", "failed"} == ev.FINAL


def test_time_is_rfc3339_utc_to_the_millisecond() -> None:
    text = ev.rfc3339_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) < 3600


# --------------------------------------------------------------------------------------------------- the bus


def test_the_bus_numbers_stamps_and_hands_each_event_to_every_outlet_in_order() -> None:
    bus = EventBus(run="run-1")
    seen: list[tuple[str, int]] = []
    bus.subscribe("a", lambda e: seen.append(("a", e.seq)))
    bus.subscribe("b", lambda e: seen.append(("b", e.seq)))
    first = bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))
    second = bus.emit(ev.Solving(client="k", challenge="d", kind="rotate", service="local", job_id=None))
    assert (first.seq, second.seq, first.run, bus.seq) == (1, 2, "run-1", 2)
    assert re.fullmatch(r"\d{4}-.*Z", first.time)
    assert seen == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    bus.unsubscribe("a")
    bus.emit(ev.Solving(client="k", challenge="e", kind="rotate", service="local", job_id=None))
    assert seen[-1] == ("b", 3) and len(seen) == 5


def test_each_bus_has_its_own_short_run_id() -> None:
    runs = {EventBus().run for _ in range(20)}
    assert len(runs) == 20 and all(re.fullmatch(r"[0-9a-f]{8}", r) for r in runs)


def test_an_outlet_that_raises_is_skipped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    bus = EventBus()
    seen: list[int] = []

    def broken(event: ev.Event) -> None:
        raise ValueError("disk on fire")

    bus.subscribe("broken", broken)
    bus.subscribe("fine", lambda e: seen.append(e.seq))
    for _ in range(3):
        bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))
    assert seen == [1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["captcha: the broken outlet failed on an event: ValueError: disk on fire"]


def test_image_outlets_get_the_bodies_beside_the_event(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    assert not bus.wants_images
    got: list[tuple[str, dict[str, tuple[bytes, str]]]] = []

    def broken(event: ev.Captured | ev.Expired, bodies: dict[str, tuple[bytes, str]]) -> None:
        raise OSError("full")

    bus.subscribe_images("broken", broken)
    bus.subscribe_images("also-broken", broken)
    bus.subscribe_images("keep", lambda e, b: got.append((e.challenge, b)))
    assert bus.wants_images
    event = bus.emit(ev.Captured(client="k", challenge="c", kind="rotate", images={}, source="get"))
    bus.emit_images(event, {"outer": (b"png", "png")})
    assert got == [("c", {"outer": (b"png", "png")})]
    assert caplog.messages == ["captcha: the broken outlet failed on images: OSError: full",
                               "captcha: the also-broken outlet failed on images: OSError: full"]
    bus.unsubscribe("keep")
    bus.unsubscribe("broken")
    bus.unsubscribe("also-broken")
    assert not bus.wants_images


def test_outlet_failures_are_logged_once_per_outlet_every_thirty_seconds(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from addon import ratelimit

    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    bus = EventBus()

    def broken(event: ev.Event) -> None:
        raise ValueError("x")

    bus.subscribe("one", broken)
    bus.subscribe("two", broken)
    emit = lambda: bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))  # noqa: E731
    emit()
    now[0] += 29.9
    emit()
    now[0] += 0.1
    emit()
    assert [r.getMessage() for r in caplog.records] == [
        "captcha: the one outlet failed on an event: ValueError: x",
        "captcha: the two outlet failed on an event: ValueError: x",
        "captcha: the one outlet failed on an event: ValueError: x (1 more like this in the last 30s)",
        "captcha: the two outlet failed on an event: ValueError: x (1 more like this in the last 30s)",
    ]


def test_unsubscribing_one_outlet_keeps_the_others() -> None:
    bus = EventBus()
    kept: list[str] = []
    bus.subscribe_images("a", lambda e, b: kept.append("a"))
    bus.subscribe_images("b", lambda e, b: kept.append("b"))
    bus.unsubscribe("a")
    bus.emit_images(ev.Captured(client="k", challenge="c", kind="rotate", images={}, source="get"), {})
    assert kept == ["b"]


# --------------------------------------------------------------------------------------------------- QueuedOutlet


def test_a_queued_outlet_works_off_events_in_order_on_its_own_thread() -> None:
    import threading

    from addon.publish.bus import QueuedOutlet

    seen: list[tuple[int, str]] = []
    closed = threading.Event()
    outlet = QueuedOutlet("sidecar", lambda e: seen.append((e.seq, threading.current_thread().name)),
                          close=closed.set)
    bus = EventBus()
    bus.subscribe("queued", outlet)
    for _ in range(50):
        bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))
    assert outlet.drain(10)
    assert [s for s, _ in seen] == list(range(1, 51)) and {t for _, t in seen} == {"captcha-sidecar"}
    assert outlet.name == "sidecar" and outlet._thread.daemon
    outlet.stop()
    assert closed.is_set() and not outlet._thread.is_alive()


def test_a_queued_outlet_ticks_when_idle_and_survives_its_own_failures(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from addon.publish.bus import QueuedOutlet

    ticks: list[float] = []
    ticked = threading.Event()
    handled: list[int] = []

    def handle(event: ev.Event) -> None:
        if event.seq == 1:
            raise OSError("disk full")
        handled.append(event.seq)

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("tick failed")
        ticked.set()

    def close() -> None:
        raise RuntimeError("close failed")

    outlet = QueuedOutlet("file", handle, tick=tick, close=close, tick_s=0.01)
    bus = EventBus()
    bus.subscribe("q", outlet)
    bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))
    assert ticked.wait(10)  # the idle thread ticked, twice at least, the first one failing
    bus.emit(ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None))
    assert outlet.drain(10) and handled == [2]
    outlet.stop()
    assert not outlet._thread.is_alive()
    assert [r.getMessage() for r in caplog.records] == ["captcha: the file outlet failed"] * 3
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == ["disk full", "tick failed", "close failed"]


def test_drain_waits_for_what_was_handed_in_and_can_give_up() -> None:
    import threading

    from addon.publish.bus import QueuedOutlet

    gate = threading.Event()
    outlet = QueuedOutlet("slow", lambda e: gate.wait(10))
    event = ev.Solving(client="k", challenge="c", kind="rotate", service="local", job_id=None)
    outlet(event)
    outlet(event)
    assert outlet.drain(0.05) is False and outlet._pending == 2
    gate.set()
    assert outlet.drain(10) is True and outlet._pending == 0
    outlet.stop()
    outlet.stop()  # a second stop is harmless
