"""Shared pieces of the end-to-end tests: the origin, the fake service, a mitmdump with the addon, and devices."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kit.device import Challenge, Device
from tests.kit.proxy import MitmdumpProcess

KEY = "sk-e2e-KEY-7c1d5e0a9b"
SHAPES = ("single", "list", "edata")


@dataclass
class Run:
    """What one device did for one challenge, and what it received."""

    device: str
    challenge: Challenge
    scheme: str
    received: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] | None = None
    verified: bool | None = None


LOCAL_WARM_LINE = "worker processes started and warmed up"


@contextmanager
def proxy(origin: Any, tmp: Path, **options: Any) -> Iterator[MitmdumpProcess]:
    # Without a key these tests hold capture only, unless they name their solvers (the local solver's own do).
    default_solvers = "auto" if options.get("omocaptcha_key") else "none"
    opts = {"captcha_sidecar": str(tmp / "events.jsonl"), "captcha_solvers": default_solvers, **options}
    solvers = str(opts["captcha_solvers"]).lower()
    local = "local" in solvers or (solvers == "auto" and not opts.get("omocaptcha_key"))
    with MitmdumpProcess(["addon/main.py"], origin=(origin.http_port, origin.https_port), options=opts,
                         workdir=tmp / "mitm") as p:
        if local:
            # Devices come once the local solver's workers are warm, as with a proxy started before its fleet (a
            # challenge sooner waits for them; on a loaded machine their start-up takes seconds).
            p.wait_for_log(LOCAL_WARM_LINE, timeout=120)
        yield p


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run_device(device: Device, plan: list[tuple[str, str, str]], *, wait: bool, verify: bool) -> list[Run]:
    """Goes through each (mode, shape, scheme) as a phone would: get, images, (answer), (verify)."""
    runs: list[Run] = []
    rng = random.Random(device.ip)
    for mode, shape, scheme in plan:
        ch = await device.get_challenge(mode, shape=shape, scheme=scheme)
        images = await device.fetch_images(ch, order="random", use_backup=rng.random() < 0.3,
                                           duplicate=rng.random() < 0.2)
        run = Run(device.ip, ch, scheme, {role: hashlib.sha256(b).hexdigest() for role, b in images.items()})
        if wait:
            r = await device.api("/v1/answer/wait", timeout=30)
            assert r.status_code == 200, (r.status_code, r.text)
            run.answer = r.json()
            assert run.answer["challenge"] == ch.id, (run.answer, ch.id)
            if verify and run.answer["event"] == "solved":
                if mode == "slide":
                    x = run.answer["answer"]["x"]
                    run.verified = await device.verify(ch, x, width=run.answer["answer"]["width_view"],
                                                       encrypted=shape == "edata")
                else:
                    run.verified = await device.verify(ch, run.answer["answer"]["value"], encrypted=shape == "edata")
        runs.append(run)
        await asyncio.sleep(rng.random() * 0.05)
    return runs


def plan_for(index: int, per_device: int) -> list[tuple[str, str, str]]:
    rng = random.Random(index)
    return [(rng.choice(("whirl", "slide")), SHAPES[(index + k) % 3], ("https", "http")[(index + k) % 2])
            for k in range(per_device)]
