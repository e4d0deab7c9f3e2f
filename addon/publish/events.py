"""Typed events, the interface's shapes (`../shared/interface.md`), turned into JSON only at the outlets.

Every event carries the envelope (`seq`, `run`, `time`, set by the bus when it is emitted, and `client`,
`challenge`, `kind`); each class adds its own fields. `to_json()` gives the exact object the sidecar, the HTTP
API and the held-response header carry, computed once per event.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from addon.capture.assemble import ImagePart
from addon.capture.images import Role
from addon.kinds import SPECS, FailureReason, kind_of_mode

FINAL = frozenset(("solved", "failed"))


class AnswerJson(Protocol):
    """What an event needs of a solver's answer (`addon/solving/base.py`: SlideAnswer, RotateAnswer, PointsAnswer):
    its JSON. A protocol, so that publish, downstream of solving, imports nothing from it."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ImageFields:
    url: str
    sha256: str
    width: int
    height: int
    format: str

    @classmethod
    def of(cls, part: ImagePart) -> ImageFields:
        return cls(part.url, part.sha256, part.info.width, part.info.height, part.info.format)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "sha256": self.sha256, "width": self.width, "height": self.height,
                "format": self.format}


def image_fields(images: dict[Role, ImagePart]) -> dict[str, ImageFields]:
    return {str(role): ImageFields.of(part) for role, part in images.items()}


@dataclass(slots=True, kw_only=True)
class Event:
    name: ClassVar[str] = ""
    client: str
    challenge: str
    kind: str | None
    seq: int = 0
    run: str = ""
    time: str = ""
    _json: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.name in FINAL

    def to_json(self) -> dict[str, Any]:
        """The interface's object; built once (after the bus stamped the event) and shared by every outlet."""
        if self._json is None:
            out: dict[str, Any] = {
                "seq": self.seq, "run": self.run, "event": self.name, "time": self.time,
                "client": self.client, "challenge": self.challenge, "kind": self.kind,
            }
            self._fields(out)
            self._json = out
        return self._json

    def _fields(self, out: dict[str, Any]) -> None:
        pass


@dataclass(slots=True, kw_only=True)
class Captured(Event):
    name: ClassVar[str] = "captured"
    images: dict[str, ImageFields]
    source: str
    tip_y: float | None = None
    verify_id: str | None = None
    question: str | None = None

    def _fields(self, out: dict[str, Any]) -> None:
        out["images"] = {role: part.to_json() for role, part in self.images.items()}
        out["source"] = self.source
        if self.kind == "slide" and self.tip_y is not None:
            out["tip_y"] = self.tip_y
        kind = kind_of_mode(self.kind)
        if kind is not None and SPECS[kind].has_question:
            out["question"] = self.question
        if self.verify_id:
            out["verify_id"] = self.verify_id


@dataclass(slots=True, kw_only=True)
class Solving(Event):
    name: ClassVar[str] = "solving"
    service: str
    job_id: str | int | None

    def _fields(self, out: dict[str, Any]) -> None:
        out["service"] = self.service
        out["job_id"] = self.job_id


@dataclass(slots=True, kw_only=True)
class Solved(Event):
    name: ClassVar[str] = "solved"
    service: str
    job_id: str | int | None
    result: str
    answer: AnswerJson
    elapsed_ms: int
    confidence: float | None = None
    tried: tuple[str, ...] = ()
    cached: bool = False
    cached_from: str | None = None
    """When `cached`: `cache` (this proxy's answer cache), `repeat` (a challenge with the same images solved here
    at the same time, waited for) or `fleet` (another proxy of the fleet)."""
    same_as: str | None = None
    """When `cached` from this proxy: the challenge the answer was first given to."""

    def _fields(self, out: dict[str, Any]) -> None:
        out["service"] = self.service
        out["job_id"] = self.job_id
        out["result"] = self.result
        out["answer"] = self.answer.to_json()
        out["elapsed_ms"] = self.elapsed_ms
        if self.confidence is not None:
            out["confidence"] = round(self.confidence, 4)
        out["tried"] = list(self.tried)
        if self.cached:
            out["cached"] = True
            if self.cached_from is not None:
                out["cached_from"] = self.cached_from
            if self.same_as is not None:
                out["same_as"] = self.same_as


@dataclass(slots=True, kw_only=True)
class Failed(Event):
    name: ClassVar[str] = "failed"
    reason: FailureReason
    message: str
    service: str | None = None
    job_id: str | int | None = None
    tried: tuple[str, ...] = ()

    def _fields(self, out: dict[str, Any]) -> None:
        if self.service is not None:
            out["service"] = self.service
            out["job_id"] = self.job_id
        out["reason"] = self.reason
        out["message"] = self.message
        out["tried"] = list(self.tried)


@dataclass(slots=True, kw_only=True)
class Expired(Event):
    name: ClassVar[str] = "expired"
    images: dict[str, ImageFields]
    reason: str

    def _fields(self, out: dict[str, Any]) -> None:
        out["images"] = {role: part.to_json() for role, part in self.images.items()}
        out["reason"] = self.reason


@dataclass(slots=True, kw_only=True)
class Verified(Event):
    name: ClassVar[str] = "verified"
    accepted: bool
    service: str | None = None
    cached: bool = False

    def _fields(self, out: dict[str, Any]) -> None:
        out["accepted"] = self.accepted
        if self.service is not None:
            out["service"] = self.service
            out["cached"] = self.cached


EVENT_TYPES: dict[str, type[Event]] = {cls.name: cls for cls in (Captured, Solving, Solved, Failed, Expired, Verified)}


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
