"""The captcha kinds: one entry per kind says its TikTok mode names, its image roles (needed, optional, in get
order), how its images are told apart without a get, and what its answer is.

This module imports nothing from the rest of the addon, so capture, solving and publish all read it. Code that
does something different per kind dispatches with `match kind:` and `typing.assert_never`, never with an `else`
that stands for "the other kind". Adding a kind: a `Kind` member, its `KindSpec` in `SPECS` (and a `Role` if it
brings one), then the solvers that take it list it in their `kinds`; a checker (mypy) names every `match` that
has not learnt it yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args


class Kind(StrEnum):
    ROTATE = "rotate"
    SLIDE = "slide"
    THREE_D = "3d"
    """"Select 2 objects that are the same shape": one image, two points to click."""
    ICON = "icon"
    """"Which of these objects ...?": one image and a prompt, the points of the objects that match it."""


class Role(StrEnum):
    OUTER = "outer"
    INNER = "inner"
    BACKGROUND = "background"
    PIECE = "piece"
    IMAGE = "image"
    """The one image of an object captcha (3d, icon)."""


AnswerType = Literal["rotate", "slide", "points"]
"""What an answer is: a turn (`RotateAnswer`), a drag to x (`SlideAnswer`), or points to click (`PointsAnswer`)."""

FailureReason = Literal[
    "timeout", "unsolvable", "api_error", "invalid_key", "overloaded", "shutdown", "bad_image", "no_solver",
    "no_question", "internal_error",
]
FAILURE_REASONS: tuple[FailureReason, ...] = get_args(FailureReason)
"""The `reason` of a `failed` event. `no_solver`: no solver of the chain takes the challenge's kind (nothing was
sent anywhere). `no_question`: an icon challenge whose prompt the traffic did not carry (nothing was paid).
`internal_error`: a bug of the addon (logged with its traceback), never blamed on a service as `api_error`.
Each has its exception class in `addon/solving/failures.py`."""


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: Kind
    modes: tuple[str, ...]
    """The get's `mode` values that mean this kind (lower case)."""
    url_roles: tuple[Role, ...]
    """The role of `question.url1`, `url2`, ... in a get (and of `object1`, `object2`, ... inline)."""
    needs: frozenset[Role]
    """Roles without which the challenge is not whole."""
    optional: frozenset[Role]
    """Roles waited for briefly when the get announced them (a slide's piece)."""
    geometry_roles: frozenset[Role]
    """Roles an image's size alone may suggest (never an object image: 552x344 is a slide background too)."""
    path_sign: re.Pattern[str] | None
    """A path that carries this sign is this kind's image even without a get (`/3d_`, `/icon_`)."""
    answer: AnswerType
    has_question: bool = False
    """The get may carry a prompt (3d, icon): it is read, and the `captured` event has `question` (null when the
    traffic did not carry one)."""
    needs_question: bool = False
    """The solvers need the prompt text (icon): without it the challenge fails `no_question`, unpaid."""


SPECS: dict[Kind, KindSpec] = {
    Kind.ROTATE: KindSpec(
        Kind.ROTATE, modes=("whirl", "rotate"), url_roles=(Role.OUTER, Role.INNER),
        needs=frozenset({Role.OUTER, Role.INNER}), optional=frozenset(),
        geometry_roles=frozenset({Role.OUTER, Role.INNER}), path_sign=None, answer="rotate",
    ),
    Kind.SLIDE: KindSpec(
        Kind.SLIDE, modes=("slide",), url_roles=(Role.BACKGROUND, Role.PIECE),
        needs=frozenset({Role.BACKGROUND}), optional=frozenset({Role.PIECE}),
        geometry_roles=frozenset({Role.BACKGROUND, Role.PIECE}), path_sign=None, answer="slide",
    ),
    Kind.THREE_D: KindSpec(
        Kind.THREE_D, modes=("3d",), url_roles=(Role.IMAGE,), needs=frozenset({Role.IMAGE}), optional=frozenset(),
        geometry_roles=frozenset(), path_sign=re.compile(r"/3d_"), answer="points", has_question=True,
    ),
    Kind.ICON: KindSpec(
        Kind.ICON, modes=("icon",), url_roles=(Role.IMAGE,), needs=frozenset({Role.IMAGE}), optional=frozenset(),
        geometry_roles=frozenset(), path_sign=re.compile(r"/icon_"), answer="points", has_question=True,
        needs_question=True,
    ),
}

MODE_KINDS: dict[str, Kind] = {mode: spec.kind for spec in SPECS.values() for mode in spec.modes}
ROLE_KINDS: dict[Role, Kind] = {role: spec.kind for spec in SPECS.values() for role in spec.geometry_roles}
"""The kind an image told by its geometry belongs to."""
GEOMETRY_PAIRS: dict[Role, Role] = {
    role: other for spec in SPECS.values() for role in spec.geometry_roles for other in spec.geometry_roles
    if other != role
}
"""A geometry image's partner: the other part of the same kind."""


def kind_of_mode(mode: str | None) -> Kind | None:
    return MODE_KINDS.get((mode or "").lower())


def kind_by_path(path: str) -> Kind | None:
    """The kind an image's path names (`/3d_...`, `/icon_...`), None when it names none."""
    for spec in SPECS.values():
        if spec.path_sign is not None and spec.path_sign.search(path):
            return spec.kind
    return None


def spec(kind: Kind) -> KindSpec:
    return SPECS[kind]
