"""Why a challenge got no answer: one exception class per `reason` of a `failed` event.

A solver raises one of these; the scheduler makes the others itself (a deadline, a full queue, the proxy
stopping, a bug). Each class names its event `reason` here and nowhere else; code that tells failures apart does
it by class (`except InvalidKey`, `isinstance(f, Unavailable)`), never by comparing reason strings.

`reached`: the request may have reached the service, so a paid job may have been made and charged (the
create-at-most-once retry reads it, `addon/solving/paid.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

from addon.capture import images
from addon.kinds import FailureReason

IMAGE_MESSAGE_CHARS = 300


class SolveFailure(Exception):
    """A challenge got no answer; only its subclasses are raised."""

    reason: ClassVar[FailureReason]
    reached: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidKey(SolveFailure):
    """The service refused the key."""

    reason = "invalid_key"


class Unsolvable(SolveFailure):
    """The solver tried and found no answer (the service failed the job; the local solver found no objects)."""

    reason = "unsolvable"


class ServiceError(SolveFailure):
    """The service answered, but with nothing usable: an HTTP 4xx, an error code, a result that is not a number.
    The service being down or unreachable is `Unavailable`."""

    reason = "api_error"

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class Unavailable(ServiceError):
    """The service is down, unreachable, busy or answers garbage (refused, timed out, 429, 5xx, not JSON): an
    availability fault, which the breaker counts."""


class BadImage(SolveFailure):
    """An image no solver can use (cut short, corrupt, missing): nothing further down the chain would do better,
    and nothing was sent."""

    reason = "bad_image"
    reached = False


class NoSolver(SolveFailure):
    """No solver of the chain takes the challenge's kind: nothing was sent anywhere."""

    reason = "no_solver"
    reached = False


class NoQuestion(SolveFailure):
    """A challenge whose kind needs its prompt came without one: nothing was sent (or paid)."""

    reason = "no_question"
    reached = False


class TimedOut(SolveFailure):
    reason = "timeout"


class Overloaded(SolveFailure):
    reason = "overloaded"
    reached = False


class Shutdown(SolveFailure):
    reason = "shutdown"


class InternalError(SolveFailure):
    """A bug of the addon (logged with its traceback), never blamed on a service."""

    reason = "internal_error"


@contextlib.contextmanager
def image_checks() -> Iterator[None]:
    """The image checks of `addon.capture.images` (`check_complete`, ...) raise their own `images.BadImage`; inside
    this block it becomes the `BadImage` failure, so every solver reports a bad image the same way."""
    try:
        yield
    except images.BadImage as e:
        raise BadImage(str(e)[:IMAGE_MESSAGE_CHARS]) from None
