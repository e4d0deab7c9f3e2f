"""`captcha_solvers`: the chain of solvers a challenge goes through, built from the option and the keys."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from addon.solving.base import Solver
from addon.solving.local import LocalSolver
from addon.solving.omocaptcha_v1 import OmocaptchaV1Solver

V2_DEFAULT_URL = "https://api.omocaptcha.com/v2"
KNOWN = ("local", "omocaptcha", "omocaptcha-v1", "omocaptcha-v2")
ACCEPTED = "'auto', 'none', or a comma list of local, omocaptcha (= omocaptcha-v1), omocaptcha-v2"


def parse_solvers(spec: str, key: str) -> tuple[str, ...]:
    """The solver names in order; `auto` is omocaptcha v1 when a key is set, else local. Raises ValueError."""
    text = spec.strip().lower()
    if text in ("", "auto"):
        return ("omocaptcha-v1",) if key else ("local",)
    if text == "none":
        return ()
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if name not in KNOWN:
            raise ValueError(f"unknown solver {raw.strip()!r}")
        name = "omocaptcha-v1" if name == "omocaptcha" else name
        if name in names:
            raise ValueError(f"{name} is listed twice")
        names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class ChainSettings:
    names: tuple[str, ...]
    key: str
    v1_url: str
    v2_url: str


class SolverFactory:
    """Keeps one solver object per name while its settings stay the same, so the scheduler keeps their state."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self._made: dict[str, tuple[tuple[str, str], Solver]] = {}
        self._local: LocalSolver | None = None
        self._running = False

    def start(self) -> None:
        """mitmproxy runs: the local solver's workers start now (and at once for one made later), never in
        one-shot runs such as `mitmdump --options`."""
        self._running = True
        if self._local is not None:
            self._local.start()

    def build(self, settings: ChainSettings) -> tuple[Solver, ...]:
        out: list[Solver] = []
        for name in settings.names:
            if name == "local":
                self._local = self._local or LocalSolver()
                if self._running:
                    self._local.start()
                out.append(self._local)
                continue
            url = settings.v1_url if name == "omocaptcha-v1" else settings.v2_url
            made = self._made.get(name)
            if made is None or made[0] != (settings.key, url):
                if name == "omocaptcha-v1":
                    solver: Solver = OmocaptchaV1Solver(url, settings.key, self.http)
                else:
                    from addon.solving.omocaptcha_v2 import OmocaptchaV2Solver
                    solver = OmocaptchaV2Solver(url, settings.key, self.http)
                made = self._made[name] = ((settings.key, url), solver)
            out.append(made[1])
        return tuple(out)
