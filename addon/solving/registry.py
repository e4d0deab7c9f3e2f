"""Every solver the addon knows, in the order docs and messages list them: the one place a solver is named."""

from __future__ import annotations

from addon.solving import omocaptcha_v1, omocaptcha_v2
from addon.solving.base import Solver
from addon.solving.local import LocalSolver
from addon.solving.plugins import SolverSettings, SolverSpec


def _local(_settings: SolverSettings) -> LocalSolver:
    return LocalSolver()


def _start_local(solver: Solver) -> None:
    assert isinstance(solver, LocalSolver)
    solver.start()


LOCAL = SolverSpec("local", paid=False, kinds=LocalSolver.kinds, build=_local, start=_start_local, auto=True)

SPECS: tuple[SolverSpec, ...] = (
    LOCAL,
    omocaptcha_v1.SPEC,
    omocaptcha_v2.SPEC,
)
