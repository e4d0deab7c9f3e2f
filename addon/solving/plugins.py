"""What a solver module tells the rest of the addon about itself: a `SolverSpec`.

Each solver module exports one (`SPEC`); `addon/solving/registry.py` lists them, and the chain's parsing
(`captcha_solvers`), the solver factory, the options table and the solving addon read only that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from addon.kinds import Kind
from addon.option_rules import Option
from addon.solving.base import Solver


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A paid service's key: the option holding it, the environment variable read when the option is empty, and
    an option naming a file that holds it (None: no file option). Services that share a key share one KeySpec
    (omocaptcha v1 and v2); its options are declared once, in a spec's `options` or the addon's table."""

    option: str
    env: str
    file_option: str | None = None
    label: str = "solving key"
    """What log lines call it."""

    def where(self) -> str:
        """Where a person sets it, for messages: `omocaptcha_key / OMOCAPTCHA_KEY`."""
        return f"{self.option} / {self.env}"


@dataclass(frozen=True, slots=True)
class SolverSettings:
    """What a spec's `build` gets: its key (resolved from its KeySpec; "" without one), the current values of the
    spec's own options by name, and the HTTP client every paid service shares."""

    key: str = field(repr=False)
    values: Mapping[str, Any]
    http: httpx.AsyncClient


@dataclass(frozen=True, slots=True)
class SolverSpec:
    name: str
    """The `service` named in events and the name in `captcha_solvers`."""
    paid: bool
    kinds: frozenset[Kind]
    build: Callable[[SolverSettings], Solver]
    aliases: tuple[str, ...] = ()
    """Other names `captcha_solvers` takes for it (`omocaptcha` = `omocaptcha-v1`)."""
    options: tuple[Option, ...] = ()
    """Its own options (a base URL, ...), declared with the addon's others in docs/options.md's order."""
    key: KeySpec | None = None
    """The key it needs (None: none)."""
    start: Callable[[Solver], None] | None = None
    """Starts a solver's own work once mitmproxy runs (the factory calls it once per solver object it made);
    None: nothing to start."""
    auto: bool = False
    """A pick of `captcha_solvers=auto`: the first such spec whose key is set, else the first that needs none."""

    @property
    def needs_key(self) -> bool:
        return self.key is not None

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def fingerprint(self, settings: SolverSettings) -> tuple[Any, ...]:
        """What its solver is built from: the factory keeps the solver (and its state) while this stays the same."""
        return (settings.key if self.needs_key else None, *(settings.values[o.name] for o in self.options))
