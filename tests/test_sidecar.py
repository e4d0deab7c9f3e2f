from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from addon.publish import events as ev
from addon.publish import sidecar as sidecar_module
from addon.publish.bus import EventBus
from addon.publish.sidecar import SidecarWriter


def emit_into(writer: SidecarWriter, n: int, log: EventBus | None = None) -> EventBus:
    log = log or EventBus(run="r1")
    for i in range(n):
        event = log.emit(ev.Failed(client=f"c{i}", challenge=f"ch{i}", kind="rotate", reason="api_error", message="é ü"))
        writer.write(event.to_json())
    return log


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_whole_lines_mode_0600_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    w = SidecarWriter(str(path))
    emit_into(w, 3)
    w.close()
    assert [e["seq"] for e in lines(path)] == [1, 2, 3]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().endswith(b"\n") and "é ü" in path.read_text(encoding="utf-8")


def test_unwritable_path_holds_events_and_resumes_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "missing-dir" / "ev.jsonl"
    w = SidecarWriter(str(path))
    log = emit_into(w, 5)
    assert not path.exists() and len(w.backlog) == 5
    assert len([r for r in caplog.records if "cannot be written" in r.getMessage()]) == 1
    path.parent.mkdir()
    emit_into(w, 2, log)
    assert [e["seq"] for e in lines(path)] == list(range(1, 8))
    assert not w.backlog


def test_disk_full_is_reported_once_and_nothing_half_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = SidecarWriter("/dev/full")
    emit_into(w, 10)
    assert len(w.backlog) == 10
    assert len([r for r in caplog.records if "No space left" in r.getMessage()]) == 1


def test_short_write_is_cut_back_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ev.jsonl"
    w = SidecarWriter(str(path))
    log = emit_into(w, 2)
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(sidecar_module.os, "write", short_write)
    emit_into(w, 1, log)
    monkeypatch.setattr(sidecar_module.os, "write", real_write)
    assert [e["seq"] for e in lines(path)] == [1, 2]
    emit_into(w, 1, log)
    assert [e["seq"] for e in lines(path)] == [1, 2, 3, 4]


def test_a_half_line_left_by_a_crash_is_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    path.write_bytes(b'{"seq":1}\n{"seq":2}\n{"seq":3,"ev')
    w = SidecarWriter(str(path))
    emit_into(w, 1)
    w.close()
    assert [e["seq"] for e in lines(path)] == [1, 2, 1]


def test_backlog_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidecar_module, "MAX_BACKLOG", 4)
    w = SidecarWriter(str(tmp_path / "nope" / "ev.jsonl"))
    emit_into(w, 10)
    assert len(w.backlog) == 4 and w.dropped == 6
