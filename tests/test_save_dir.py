"""captcha_save_dir's writer: folder layout, labels, the size bound, permissions, hostile ids, the queue."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addon.publish import save_dir
from addon.publish.save_dir import MAX_NAME, SaveDir, safe_name

DAY = "2024-05-01T10:11:12.345Z"
CH = "a" * 40
SAFE = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"


def ev(event: str, challenge: str = CH, time: str = DAY, **extra: Any) -> dict[str, Any]:
    return {"seq": 1, "run": "r1", "event": event, "time": time, "client": "10.0.0.2", "challenge": challenge,
            "kind": extra.pop("kind", "rotate"), **extra}


def captured(challenge: str = CH, time: str = DAY, kind: str = "rotate") -> dict[str, Any]:
    roles = {"rotate": {"outer": "png", "inner": "png"}, "slide": {"background": "jpeg", "piece": "png"}}[kind]
    images = {role: {"url": f"https://p16/{role}", "sha256": "0" * 64, "width": 1, "height": 1, "format": fmt}
              for role, fmt in roles.items()}
    return ev("captured", challenge, time, kind=kind, images=images, source="get")


def image_bytes(kind: str = "rotate", size: int = 100) -> dict[str, bytes]:
    roles = ("outer", "inner") if kind == "rotate" else ("background", "piece")
    return {role: role.encode() * (size // len(role) + 1) for role in roles}


SOLVED: dict[str, Any] = {"service": "omocaptcha-v1", "job_id": 7, "result": "93",
          "answer": {"value": 93.0, "fraction": 0.3432, "angle": 123.5}, "elapsed_ms": 900}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "saved"


@pytest.fixture
def saver(root: Path) -> Iterator[SaveDir]:
    s = SaveDir(root, 10**9)
    yield s
    s.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_folder_per_challenge_with_images_events_and_a_label(root: Path, saver: SaveDir) -> None:
    images = image_bytes()
    saver.on_captured(captured(), images)
    saver.on_event(captured())  # the bus hands it in again: ignored
    saver.on_event(ev("solving", service="omocaptcha-v1", job_id=7))
    saver.on_event(ev("solved", **SOLVED))
    saver.on_event(ev("verified", accepted=True, time="2024-05-02T00:00:01.000Z"))
    saver.close()
    folder = root / "20240501" / CH
    assert sorted(p.name for p in folder.iterdir()) == ["events.jsonl", "inner.png", "label.json", "outer.png"]
    assert (folder / "outer.png").read_bytes() == images["outer"]
    assert (folder / "inner.png").read_bytes() == images["inner"]
    assert [e["event"] for e in lines(folder / "events.jsonl")] == ["captured", "solving", "solved", "verified"]
    assert json.loads((folder / "label.json").read_text()) == {
        "challenge": CH, "kind": "rotate", "answer": SOLVED["answer"], "result": "93", "service": "omocaptcha-v1",
        "verified": True, "verified_at": "2024-05-02T00:00:01.000Z", "images": ["inner.png", "outer.png"],
    }
    assert saver.bytes_used == sum(p.stat().st_size for p in folder.iterdir())


def test_slide_extensions_and_folders_by_day(root: Path, saver: SaveDir) -> None:
    saver.on_captured(captured("s1", "2024-06-30T23:59:59.999Z", kind="slide"), image_bytes("slide"))
    saver.on_captured(captured("s2", "2024-07-01T00:00:00.000Z", kind="slide"), image_bytes("slide"))
    saver.close()
    assert sorted(p.name for p in (root / "20240630" / "s1").iterdir()) == [
        "background.jpg", "events.jsonl", "piece.png"]
    assert (root / "20240701" / "s2" / "background.jpg").exists()


@pytest.mark.parametrize("verdicts", [[{"accepted": False}], [], [{"accepted": "yes"}]])
def test_no_label_without_an_accepted_verify(root: Path, saver: SaveDir, verdicts: list[dict[str, Any]]) -> None:
    saver.on_captured(captured(), image_bytes())
    saver.on_event(ev("solved", **SOLVED))
    for verdict in verdicts:
        saver.on_event(ev("verified", **verdict))
    saver.close()
    assert not (root / "20240501" / CH / "label.json").exists()
    assert len(lines(root / "20240501" / CH / "events.jsonl")) == 2 + len(verdicts)


def test_no_label_when_the_answer_was_not_the_addons(root: Path, saver: SaveDir) -> None:
    saver.on_captured(captured(), image_bytes())  # capture only: a person solved it
    saver.on_event(ev("verified", accepted=True))
    saver.close()
    assert not (root / "20240501" / CH / "label.json").exists()


def test_events_of_challenges_never_captured_here_are_not_saved(root: Path, saver: SaveDir) -> None:
    saver.on_event(ev("expired", "e1", images={}, reason="window"))
    saver.on_event(ev("verified", "v1", accepted=True))
    saver.close()
    assert not root.exists()


def test_size_bound_removes_the_oldest_challenges_first(root: Path) -> None:
    one = SaveDir(root, 10**9)
    one.on_captured(captured("c0", "2024-05-01T00:00:00Z"), image_bytes(size=1000))
    one.close()
    per_challenge = one.bytes_used
    bound = 3 * per_challenge + per_challenge // 2
    # A later run counts what is already there.
    saver = SaveDir(root, bound)
    for i in range(1, 6):
        saver.on_captured(captured(f"c{i}", f"2024-05-0{1 + i // 3}T00:00:00Z"), image_bytes(size=1000))
    saver.on_event(ev("solved", "c2", **SOLVED))  # c2 is evicted by now: nothing is recreated
    saver.close()
    kept = sorted(p.name for day in root.iterdir() for p in day.iterdir())
    assert kept == ["c3", "c4", "c5"]
    assert sorted(p.name for p in root.iterdir()) == ["20240502"]  # the emptied day folder went too
    assert saver.bytes_used <= bound
    assert saver.bytes_used == sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_a_challenge_larger_than_the_bound_is_not_kept(root: Path) -> None:
    saver = SaveDir(root, 500)
    saver.on_captured(captured(), image_bytes(size=1000))
    saver.close()
    assert saver.bytes_used == 0
    assert list(root.iterdir()) == []


def test_directories_0700_files_0600_whatever_the_umask(root: Path) -> None:
    old = os.umask(0)
    try:
        saver = SaveDir(root, 10**9)
        saver.on_captured(captured(), image_bytes())
        saver.on_event(ev("solved", **SOLVED))
        saver.on_event(ev("verified", accepted=True))
        saver.close()
    finally:
        os.umask(old)
    folder = root / "20240501" / CH
    for d in (root, folder.parent, folder):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = list(folder.iterdir())
    assert len(files) == 4
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


HOSTILE = ["../../escape", "/etc/passwd", "..", ".", "", "a/b", "a\\b", ".hidden", "nul\x00byte", "x" * 1000,
           "验证码", "a" * 40 + "/../../" + "b", "C:\\x", "~root", "-rf", "con", "a b\nc"]


def test_hostile_challenge_ids_stay_inside_the_root(tmp_path: Path, root: Path, saver: SaveDir) -> None:
    for hostile in HOSTILE:
        saver.on_captured(captured(hostile), {"outer": b"o", "../../role": b"r"})
        saver.on_event(ev("solved", hostile, **SOLVED))
    saver.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    folders = list((root / "20240501").iterdir())
    assert len(folders) == len(HOSTILE)  # distinct ids, distinct folders
    for folder in folders:
        assert folder.is_dir() and not folder.is_symlink()
        assert len(folder.name) <= MAX_NAME and not folder.name.startswith(".")
        # A role the captured event does not describe gets ".bin"; its hostile name is made plain too.
        assert sorted(p.name for p in folder.iterdir()) == [safe_name("../../role") + ".bin", "events.jsonl",
                                                             "outer.png"]
        assert safe_name("../../role").startswith("_.._role-")
        assert [e["event"] for e in lines(folder / "events.jsonl")] == ["captured", "solved"]


@given(st.text(max_size=300))
def test_safe_name_is_always_a_plain_name(text: str) -> None:
    name = safe_name(text)
    assert 0 < len(name) <= MAX_NAME
    assert name not in (".", "..") and "/" not in name and not name.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


@given(st.lists(st.text(max_size=50), min_size=2, max_size=20, unique=True))
def test_safe_names_of_distinct_ids_are_distinct(ids: list[str]) -> None:
    assert len({safe_name(i) for i in ids}) == len(ids)


def test_plain_ids_are_kept_as_they_are() -> None:
    assert safe_name(CH) == CH
    assert safe_name("Verify_1f2e-abc.1") == "Verify_1f2e-abc.1"


def test_a_planted_symlink_is_not_followed(tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "victim"
    outside.write_bytes(b"untouched")
    folder = root / "20240501" / CH
    folder.mkdir(parents=True)
    (folder / "outer.png").symlink_to(outside)
    saver = SaveDir(root, 10**9)
    with caplog.at_level(logging.ERROR):
        saver.on_captured(captured(), image_bytes())
        saver.close()
    assert outside.read_bytes() == b"untouched"
    assert "cannot save challenge" in caplog.text


def test_a_full_queue_drops_counts_and_logs_once(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    saver = SaveDir(root, 10**9, queue_size=1)
    entered, gate = threading.Event(), threading.Event()
    real = saver._captured

    def slow(event: dict[str, Any], images: dict[str, bytes]) -> None:
        entered.set()
        gate.wait(10)
        real(event, images)

    monkeypatch.setattr(saver, "_captured", slow)
    with caplog.at_level(logging.WARNING):
        saver.on_captured(captured("c1"), image_bytes())
        assert entered.wait(10)  # the worker holds c1; the queue (one place) is empty
        saver.on_captured(captured("c2"), image_bytes())
        for i in range(3, 8):
            saver.on_captured(captured(f"c{i}"), image_bytes())
        gate.set()
        saver.close()
    assert saver.dropped == 5
    full = [r for r in caplog.records if "is not keeping up" in r.getMessage()]
    assert len(full) == 1 and "1 challenge event(s) not saved so far" in full[0].getMessage()
    assert "5 challenge event(s) were not saved" in caplog.text
    assert sorted(p.name for p in (root / "20240501").iterdir()) == ["c1", "c2"]


def test_close_writes_everything_queued_and_later_calls_are_ignored(root: Path) -> None:
    saver = SaveDir(root, 10**9)
    for i in range(50):
        saver.on_captured(captured(f"c{i:02}"), image_bytes(size=10))
    saver.close()
    assert len(list((root / "20240501").iterdir())) == 50
    saver.on_captured(captured("late"), image_bytes())
    saver.close()
    assert not (root / "20240501" / "late").exists()


def test_an_unusable_root_logs_and_keeps_going(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    saver = SaveDir(blocker / "saved", 10**9)
    with caplog.at_level(logging.ERROR):
        saver.on_captured(captured(), image_bytes())
        saver.close()
    assert "captcha_save_dir" in caplog.text and "cannot save challenge" in caplog.text


def test_bound_must_be_positive(root: Path) -> None:
    with pytest.raises(ValueError):
        SaveDir(root, 0)
    assert save_dir.EXTENSIONS["jpeg"] == "jpg"
