"""Event records as the interface defines them, numbered and stamped by one EventLog per proxy run."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from typing import Any

from addon.capture.assemble import Captured, Expired, ImagePart
from addon.capture.images import Role

Event = dict[str, Any]
FINAL = frozenset(("solved", "failed"))


def image_fields(images: dict[Role, ImagePart]) -> dict[str, dict[str, Any]]:
    return {
        str(role): {"url": p.url, "sha256": p.sha256, "width": p.info.width, "height": p.info.height,
                    "format": p.info.format}
        for role, p in images.items()
    }


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    """Numbers events and hands each to every subscriber (sidecar, board, log line, hold waiters) in order."""

    def __init__(self, run: str | None = None):
        self.run = run or secrets.token_hex(4)
        self.seq = 0
        self.subscribers: list[Callable[[Event], None]] = []

    def emit(self, event: str, client: str, challenge: str, kind: str | None, **fields: Any) -> Event:
        self.seq += 1
        record: Event = {
            "seq": self.seq, "run": self.run, "event": event, "time": rfc3339_now(),
            "client": client, "challenge": challenge, "kind": kind,
        }
        record.update(fields)
        for subscriber in self.subscribers:
            subscriber(record)
        return record

    def captured(self, c: Captured) -> Event:
        fields: dict[str, Any] = {"images": image_fields(c.images), "source": c.source}
        if c.kind == "slide" and c.tip_y is not None:
            fields["tip_y"] = c.tip_y
        if c.verify_id:
            fields["verify_id"] = c.verify_id
        return self.emit("captured", c.client, c.challenge_id, str(c.kind), **fields)

    def expired(self, e: Expired) -> Event:
        return self.emit(
            "expired", e.client, e.challenge_id, str(e.kind) if e.kind else None,
            images=image_fields(e.images), reason=e.reason,
        )
