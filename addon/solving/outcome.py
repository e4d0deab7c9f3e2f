"""What a challenge's run down the chain ends with: an answer and who gave it (`Found`), or why there is none
(a `SolveFailure`)."""

from __future__ import annotations

from dataclasses import dataclass

from addon.solving.base import Solution
from addon.solving.failures import SolveFailure


@dataclass(frozen=True, slots=True)
class Found:
    service: str
    job_id: str | int | None
    solution: Solution
    from_fleet: bool = False
    """Another proxy of the fleet found it (or had it cached): no job ran here."""


Outcome = Found | SolveFailure
