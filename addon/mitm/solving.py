"""`CaptchaSolving`: the solving options, the solvers they make, and the scheduler's life on mitmproxy's loop."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
from mitmproxy import ctx, exceptions

from addon.mitm import option_table, options
from addon.solving.chain import ChainSettings, SolverFactory, accepted, parse_solvers
from addon.solving.plugins import KeySpec
from addon.solving.registry import SPECS
from addon.solving.scheduler import Scheduler, SchedulerConfig

logger = logging.getLogger(__name__)

OPTIONS = frozenset(o.name for o in option_table.OPTIONS if o.addon == "solving")
NO_KEY = options.Key("", "")


class CaptchaSolving:
    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self._http: httpx.AsyncClient | None = None
        self._factory: SolverFactory | None = None
        self._keys: dict[KeySpec, options.Key] = {}

    def load(self, loader: Any) -> None:
        option_table.declare(loader, "solving")

    def configure(self, updated: set[str]) -> None:
        if not OPTIONS & updated:
            return
        o = ctx.options  # values were checked by options.guard (in CaptchaApi, the first addon)
        low_balance = float(o.captcha_low_balance)
        for spec in option_table.SOLVER_KEYS:
            key_file = getattr(o, spec.file_option) if spec.file_option is not None else ""
            found = options.resolve_key(spec, getattr(o, spec.option), key_file, os.environ)
            if found != self._keys.get(spec, NO_KEY):
                logger.info(f"captcha: {spec.label} from {found.source or 'nowhere (no paid service can be used)'}")
            self._keys[spec] = found
        keys = {spec: found.value for spec, found in self._keys.items()}
        try:
            names = parse_solvers(o.captcha_solvers, keys)
        except ValueError as e:
            raise exceptions.OptionsError(
                f"captcha_solvers={o.captcha_solvers!r}: {e}; accepted: {accepted()}") from None
        unset = dict.fromkeys(s.key for s in SPECS if s.name in names and s.key is not None and not keys.get(s.key))
        for spec in unset:
            logger.warning(f"captcha: captcha_solvers names a paid service but no key is set ({spec.where()}): its "
                           "challenges fail as invalid_key or go to the next solver")
        if self._factory is None:
            self._http = make_http_client(o.captcha_max_jobs)
            self._factory = SolverFactory(self._http)
        values = {option.name: getattr(o, option.name) for option in option_table.SOLVER_OPTIONS}
        solvers = self._factory.build(ChainSettings(names, keys, values))
        self.scheduler.configure(SchedulerConfig(
            solvers=solvers, width_view=o.captcha_width_view, poll_s=o.captcha_poll_ms / 1000,
            timeout_s=float(o.captcha_timeout), max_jobs=o.captcha_max_jobs, max_waiting=o.captcha_max_waiting,
            local_confidence=o.captcha_local_confidence / 100, cache_size=o.captcha_cache_size,
            low_balance=low_balance, adaptive=o.captcha_adaptive,
        ))
        if not names:
            logger.info("captcha: captcha_solvers=none: capturing only")

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
