"""`CaptchaSolving`: the solving options, the solvers they make, and the scheduler's life on mitmproxy's loop."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
from mitmproxy import ctx, exceptions

from addon.mitm import options
from addon.solving import omocaptcha_v1
from addon.solving.chain import ACCEPTED, V2_DEFAULT_URL, ChainSettings, SolverFactory, parse_solvers
from addon.solving.scheduler import Scheduler, SchedulerConfig

logger = logging.getLogger(__name__)

OPTIONS = frozenset({
    "omocaptcha_key", "omocaptcha_key_file", "omocaptcha_url", "omocaptcha_v2_url", "captcha_solvers",
    "captcha_local_confidence", "captcha_width_view", "captcha_poll_ms", "captcha_timeout", "captcha_max_jobs",
    "captcha_max_waiting", "captcha_cache_size", "captcha_low_balance", "captcha_adaptive",
})
DEFAULT_LOCAL_CONFIDENCE = 50


class CaptchaSolving:
    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self._http: httpx.AsyncClient | None = None
        self._factory: SolverFactory | None = None
        self._key = options.Key("", "")

    def load(self, loader: Any) -> None:
        loader.add_option("omocaptcha_key", str, "",
                          "omocaptcha API key; empty: the OMOCAPTCHA_KEY environment variable. Prefer the "
                          "environment variable or omocaptcha_key_file: --set puts the key in ps and shell history.")
        loader.add_option("omocaptcha_key_file", str, "",
                          "File holding the omocaptcha key alone (chmod 600): keeps the key out of the command line, "
                          "the environment and config files. Only one of omocaptcha_key and this.")
        loader.add_option("omocaptcha_url", str, omocaptcha_v1.DEFAULT_URL, "Base URL of omocaptcha's v1 job API.")
        loader.add_option("omocaptcha_v2_url", str, V2_DEFAULT_URL, "Base URL of omocaptcha's v2 task API.")
        loader.add_option("captcha_solvers", str, "auto",
                          "Solvers tried in order, comma separated: local, omocaptcha (v1), omocaptcha-v2; auto = "
                          "omocaptcha when a key is set, else local; none = capture only.")
        loader.add_option("captcha_local_confidence", int, DEFAULT_LOCAL_CONFIDENCE,
                          "0-100: a local answer less sure than this goes to the next solver of captcha_solvers "
                          "(with none left it is published with its confidence).")
        loader.add_option("captcha_width_view", int, 340, "Width at which the slide puzzle is shown (width_view).")
        loader.add_option("captcha_poll_ms", int, 2000, "Pause before the first and between result polls, in ms.")
        loader.add_option("captcha_timeout", int, 120,
                          "Seconds from capture to a final answer before the challenge fails with timeout.")
        loader.add_option("captcha_max_jobs", int, 32, "Solving jobs in flight at once; more wait their turn.")
        loader.add_option("captcha_max_waiting", int, 512,
                          "Challenges that may wait for a job slot; beyond it they fail at once as overloaded.")
        loader.add_option("captcha_cache_size", int, 10_000,
                          "Answers kept by image set, so the same images are never paid for twice; 0 turns it off.")
        loader.add_option("captcha_low_balance", str, "0.5",
                          "Log a warning when a paid service's balance (USD) falls under this.")
        loader.add_option("captcha_adaptive", bool, False,
                          "Move a solver whose answers the site accepted for under half of its last 50 verdicts of a "
                          "kind behind the next solver for that kind.")

    def configure(self, updated: set[str]) -> None:
        if not OPTIONS & updated:
            return
        o = ctx.options  # values were checked by options.guard (in CaptchaApi, the first addon)
        low_balance = float(o.captcha_low_balance)
        found = options.resolve_key(o.omocaptcha_key, o.omocaptcha_key_file, os.environ)
        if found != self._key:
            logger.info(f"captcha: solving key from {found.source or 'nowhere (no paid service can be used)'}")
        self._key = found
        key = found.value
        try:
            names = parse_solvers(o.captcha_solvers, key)
        except ValueError as e:
            raise exceptions.OptionsError(f"captcha_solvers={o.captcha_solvers!r}: {e}; accepted: {ACCEPTED}") from None
        if any(n != "local" for n in names) and not key:
            logger.warning("captcha: captcha_solvers names a paid service but no key is set (omocaptcha_key / "
                           "OMOCAPTCHA_KEY): its challenges fail as invalid_key or go to the next solver")
        if self._factory is None:
            self._http = make_http_client(o.captcha_max_jobs)
            self._factory = SolverFactory(self._http)
        solvers = self._factory.build(ChainSettings(names, key, o.omocaptcha_url.strip(), o.omocaptcha_v2_url.strip()))
        self.scheduler.configure(SchedulerConfig(
            solvers=solvers, width_view=o.captcha_width_view, poll_s=o.captcha_poll_ms / 1000,
            timeout_s=float(o.captcha_timeout), max_jobs=o.captcha_max_jobs, max_waiting=o.captcha_max_waiting,
            local_confidence=o.captcha_local_confidence / 100, cache_size=o.captcha_cache_size,
            low_balance=low_balance, adaptive=o.captcha_adaptive,
        ))
        if not names:
            logger.info("captcha: captcha_solvers=none: capturing only")

    def key(self) -> str:
        return self._key.value

    def running(self) -> None:
        self.scheduler.start()
        if self._factory is not None:
            self._factory.start()

    async def done(self) -> None:
        await self.scheduler.shutdown()
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()


def make_http_client(slots: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=20.0, write=20.0, pool=10.0),
        # A job has at most one request out, so one connection per job slot; few are kept idle because httpcore
        # checks every idle connection each time it places a request.
        limits=httpx.Limits(max_connections=max(slots, 4), max_keepalive_connections=min(slots, 8)),
        trust_env=False,
    )
