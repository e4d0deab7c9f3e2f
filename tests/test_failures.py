"""The failure classes: one per `reason` of a `failed` event, the reason named once, and the image checks' own
error turned into the BadImage failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from addon.capture import images
from addon.kinds import FAILURE_REASONS
from addon.solving import failures


def subclasses(cls: type[failures.SolveFailure]) -> Iterator[type[failures.SolveFailure]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def test_every_reason_of_the_interface_has_its_class_and_no_class_makes_up_another() -> None:
    classes = set(subclasses(failures.SolveFailure))
    assert {c.reason for c in classes} == set(FAILURE_REASONS)
    assert FAILURE_REASONS == ("timeout", "unsolvable", "api_error", "invalid_key", "overloaded", "shutdown",
                               "bad_image", "no_solver", "no_question", "internal_error")


def test_unavailable_is_an_api_error_and_says_whether_the_request_may_have_reached_the_service() -> None:
    lost = failures.Unavailable("createTask: no answer in time")
    refused = failures.Unavailable("createTask: cannot connect", reached=False)
    assert isinstance(lost, failures.ServiceError) and lost.reason == "api_error"
    assert (lost.reached, refused.reached, str(refused), refused.message) == (
        True, False, "createTask: cannot connect", "createTask: cannot connect")
    # Nothing is sent for these; the service answered for the others.
    assert not any(c("x").reached for c in (failures.BadImage, failures.NoSolver, failures.NoQuestion))
    assert all(c("x").reached for c in (failures.InvalidKey, failures.Unsolvable, failures.ServiceError))


def test_the_image_checks_error_becomes_the_bad_image_failure_cut_to_300_characters() -> None:
    with pytest.raises(failures.BadImage) as info, failures.image_checks():
        raise images.BadImage("png ends before its end marker" + "!" * 400)
    assert info.value.message == ("png ends before its end marker" + "!" * 400)[:300]
    assert (info.value.reason, info.value.reached) == ("bad_image", False)
    with pytest.raises(ValueError, match="other"), failures.image_checks():
        raise ValueError("other")
