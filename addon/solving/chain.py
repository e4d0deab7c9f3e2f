"""`captcha_solvers`: the chain of solvers a challenge goes through, built from the option, the key and the
solvers' specs (`addon/solving/registry.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from addon.solving.base import Solver
from addon.solving.plugins import KeySpec, SolverSettings, SolverSpec
from addon.solving.registry import SPECS

Keys = Mapping[KeySpec, str]
"""The paid services' keys as resolved (a KeySpec missing or "": not set)."""
NO_KEYS: Keys = {}


def listed(specs: Sequence[SolverSpec] = SPECS, *, code: bool = False) -> str:
    """The names `captcha_solvers` takes, for messages and docs: `local, omocaptcha (= omocaptcha-v1), ...`."""
    def q(name: str) -> str:
        return f"`{name}`" if code else name

    return ", ".join(f"{q(s.aliases[0])} (= {q(s.name)})" if s.aliases else q(s.name) for s in specs)


def auto_text(specs: Sequence[SolverSpec] = SPECS, *, code: bool = False) -> str:
    """`auto = omocaptcha when a key is set, else local`, from the specs."""
    def q(name: str) -> str:
        return f"`{name}`" if code else name

    def shown(spec: SolverSpec | None) -> str:
        return q("none" if spec is None else (spec.aliases or (spec.name,))[0])

    every, none = _keys(specs, "key"), _keys(specs, "")
    return f"{q('auto')} = {shown(auto_pick(every, specs))} when a key is set, else {shown(auto_pick(none, specs))}"


def _keys(specs: Sequence[SolverSpec], value: str) -> Keys:
    return {s.key: value for s in specs if s.key is not None}


def accepted(specs: Sequence[SolverSpec] = SPECS) -> str:
    return f"'auto', 'none', or a comma list of {listed(specs)}"


def auto_pick(keys: Keys, specs: Sequence[SolverSpec] = SPECS) -> SolverSpec | None:
    """What `auto` means: the first `auto` spec whose key is set, else the first that needs none."""
    def has_key(s: SolverSpec) -> bool:
        return s.key is not None and bool(keys.get(s.key))

    picks = [s for s in specs if s.auto and has_key(s)] or [s for s in specs if s.auto and s.key is None]
    return picks[0] if picks else None


def parse_solvers(text: str, keys: Keys = NO_KEYS, specs: Sequence[SolverSpec] = SPECS) -> tuple[str, ...]:
    """The solver names in order (each spec's own name, aliases resolved); case and spaces do not matter; `keys`
    only matter to `auto`. Raises ValueError."""
    text = text.strip().lower()
    if text in ("", "auto"):
        pick = auto_pick(keys, specs)
        return (pick.name,) if pick is not None else ()
    if text == "none":
        return ()
    by_name = {name: spec for spec in specs for name in spec.names()}
    names: list[str] = []
    for raw in text.split(","):
        spec = by_name.get(raw.strip())
        if spec is None:
            raise ValueError(f"unknown solver {raw.strip()!r}")
        if spec.name in names:
            raise ValueError(f"{spec.name} is listed twice")
        names.append(spec.name)
    return tuple(names)


def valid_solvers(text: str, specs: Sequence[SolverSpec] = SPECS) -> bool:
    """The `captcha_solvers` rule."""
    try:
        parse_solvers(text, NO_KEYS, specs)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ChainSettings:
    names: tuple[str, ...]
    keys: Keys = field(repr=False)
    values: Mapping[str, Any]
    """The solvers' own options (each spec's `options`) by name."""


class SolverFactory:
    """Keeps one solver object per name while what it is built from stays the same, so the scheduler keeps its
    state."""

    def __init__(self, http: httpx.AsyncClient, specs: Sequence[SolverSpec] = SPECS):
        self.http = http
        self._specs = {s.name: s for s in specs}
        self._made: dict[str, tuple[tuple[Any, ...], Solver]] = {}
        self._running = False

    def start(self) -> None:
        """mitmproxy runs: solvers with work to start (the local solver's workers) start now, and at once for one
        made later; never in one-shot runs such as `mitmdump --options`."""
        self._running = True
        for name, (_, solver) in self._made.items():
            self._start(self._specs[name], solver)

    @staticmethod
    def _start(spec: SolverSpec, solver: Solver) -> None:
        if spec.start is not None:
            spec.start(solver)

    def build(self, settings: ChainSettings) -> tuple[Solver, ...]:
        out: list[Solver] = []
        for name in settings.names:
            spec = self._specs[name]
            key = settings.keys.get(spec.key, "") if spec.key is not None else ""
            built = SolverSettings(key, settings.values, self.http)
            fingerprint = spec.fingerprint(built)
            made = self._made.get(name)
            if made is None or made[0] != fingerprint:
                made = self._made[name] = (fingerprint, spec.build(built))
            if self._running:
                self._start(spec, made[1])
            out.append(made[1])
        return tuple(out)
