"""At stop, events the sidecar still holds (its file cannot be written) are counted in one error line naming the
file; the events themselves were served by the HTTP API meanwhile."""

from __future__ import annotations

import logging

import pytest

from addon.publish import events as ev
from addon.publish.bus import EventBus
from addon.publish.sidecar import SidecarWriter


def test_a_stop_with_events_still_held_says_how_many_and_where(caplog: pytest.LogCaptureFixture) -> None:
    writer = SidecarWriter("/dev/full")  # opens, but every write fails: No space left on device
    bus = EventBus(run="r")
    for i in range(3):
        writer.write(bus.emit(ev.Failed(client="c", challenge=f"ch{i}", kind="slide", reason="timeout",
                                        message="")).to_json())
    assert len(writer.backlog) == 3
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="addon"):
        writer.close()
    [line] = [r.getMessage() for r in caplog.records]
    assert line == ("captcha sidecar: 3 event(s) could not be written to '/dev/full' before the proxy stopped; "
                    "they are lost (the HTTP API had them)")


def test_a_clean_stop_says_nothing(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "events.jsonl"
    writer = SidecarWriter(str(path))
    writer.write(EventBus(run="r").emit(ev.Failed(client="c", challenge="ch", kind="slide", reason="timeout",
                                                  message="")).to_json())
    with caplog.at_level(logging.ERROR, logger="addon"):
        writer.close()
    assert caplog.records == [] and len(path.read_text().splitlines()) == 1
