"""The local solver's worker processes (real spawned processes, the test kit's real images, the real scheduler):
solves run warm in another process, a worker that dies fails only what it held and the pool comes back, and
closing reaps every worker."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from addon.capture.assemble import Captured, make_part
from addon.capture.images import Role, probe
from addon.kinds import Kind
from addon.mitm.option_table import SOLVER_OPTIONS
from addon.solving import local
from addon.solving.chain import ChainSettings, SolverFactory
from addon.solving.local import LocalSolver
from addon.solving.workers import WorkerPool
from tests.kit.synth import generate
from tests.test_scheduler import Harness, eventually

pytestmark = pytest.mark.timeout(120)

WARM_LINE = "worker processes started and warmed up"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    d = tmp_path_factory.mktemp("pool")
    generate(d, seed=77, count=2)
    return d, json.loads((d / "manifest.json").read_text())["challenges"]


def captured(kit: tuple[Path, list[dict[str, Any]]], mode: str, cid: str) -> Captured:
    d, challenges = kit
    ch = next(c for c in challenges if c["mode"] == mode)
    parts = {}
    for role, img in ch["images"].items():
        body = (d / img["file"]).read_bytes()
        parts[Role(role)] = make_part(Role(role), f"https://cdn/{cid}/{role}", body, probe(body))
    kind = Kind.ROTATE if mode == "whirl" else Kind.SLIDE
    return Captured(cid, "c1", kind, "get", parts, ch.get("tip_y"), None)


def processes(solver: LocalSolver) -> list[Any]:
    executor = solver.pool._executor
    assert executor is not None
    return list(executor._processes.values())  # type: ignore[attr-defined]


async def test_solves_run_warm_in_worker_processes(kit: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "addon.solving.workers")
    solver = LocalSolver(workers=2)
    h = Harness(solver)  # type: ignore[arg-type]
    solver.start()
    await eventually(lambda: solver.pool.ready, 60)
    assert WARM_LINE in caplog.text
    pids = {p.pid for p in processes(solver)}
    assert len(pids) == 2 and os.getpid() not in pids
    assert await solver.pool.run("os:getpid") in pids
    h.scheduler.submit(captured(kit, "whirl", "w1"))
    h.scheduler.submit(captured(kit, "slide", "s1"))
    finals = await h.settle(2)
    assert {(e["event"], e["service"]) for e in finals} == {("solved", "local")}, finals
    assert "before its warm-up" not in caplog.text
    workers = processes(solver)
    await solver.close()
    assert not any(p.is_alive() for p in workers)


async def test_a_worker_that_dies_fails_its_challenge_once_and_the_workers_come_back(
        kit: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    real = local._vision_call

    def dies_on_crash(c: Captured) -> tuple[str, tuple[Any, ...]]:
        return ("os:_exit", (3,)) if c.challenge_id == "crash" else real(c)

    monkeypatch.setattr(local, "_vision_call", dies_on_crash)
    solver = LocalSolver(workers=2)
    h = Harness(solver)  # type: ignore[arg-type]
    solver.start()
    await eventually(lambda: solver.pool.ready, 60)
    h.scheduler.submit(captured(kit, "slide", "crash"))
    finals = await h.settle(1)
    assert [(e["event"], e["reason"], e["tried"]) for e in finals] == [("failed", "api_error", ["local"])], finals
    assert "worker process died" in finals[0]["message"]
    assert caplog.text.count("a worker process died") == 1
    assert solver.pool.generation == 2
    await eventually(lambda: solver.pool.ready, 60)  # the new workers warm up as the first ones did
    h.scheduler.submit(captured(kit, "whirl", "after"))
    finals = await h.settle(2)
    assert (finals[1]["challenge"], finals[1]["event"], finals[1]["service"]) == ("after", "solved", "local")
    assert len([e for e in h.events if e["challenge"] == "crash" and e["event"] in ("solved", "failed")]) == 1
    workers = processes(solver)
    await h.scheduler.shutdown()
    assert not any(p.is_alive() for p in workers)
    h.scheduler.submit(captured(kit, "whirl", "late"))
    # a closed solver fails what still reaches it as shutdown, at once
    with pytest.raises(Exception, match="closed"):
        await solver.pool.run("os:getpid")


async def test_the_workers_start_and_warm_up_once_however_often_the_solvers_are_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    def build(pool: WorkerPool) -> Any:
        builds.append(1)
        pool._executor = object()  # type: ignore[assignment]
        return pool._executor

    monkeypatch.setattr(WorkerPool, "_build", build)
    async with httpx.AsyncClient() as http:
        factory = SolverFactory(http)
        settings = ChainSettings(("local",), {}, {o.name: o.default for o in SOLVER_OPTIONS})
        [solver] = factory.build(settings)
        assert builds == []  # made, not started: `mitmdump --options` starts no process
        factory.start()  # mitmproxy's `running`
        for _ in range(3):  # option changes after start, the chain unchanged
            assert factory.build(settings) == (solver,)
        factory.start()
        assert isinstance(solver, LocalSolver) and builds == [1]
        solver.pool._executor = None
        solver.pool._closed = True


def test_the_warm_up_runs_every_kind_once_3d_included(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: each kind's whole solve runs once on made-up pictures, so the first challenge of every kind (3d
    too: its first pass through the network costs about 150 ms) finds the worker set up."""
    from addon.solving.vision import objects3d, rotate, slide, warmup
    from addon.solving.vision.common import decode

    calls: list[tuple[str, Any]] = []

    def spy(name: str, fn: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            calls.append((name, args))
            return fn(*args)
        return wrapped

    monkeypatch.setattr(warmup, "solve_rotate", spy("rotate", rotate.solve_rotate))
    monkeypatch.setattr(warmup, "solve_slide", spy("slide", slide.solve_slide))
    monkeypatch.setattr(objects3d, "solve_3d", spy("3d", objects3d.solve_3d))
    assert warmup.warm_up() is True
    assert [name for name, _ in calls] == ["rotate", "rotate", "slide", "slide", "3d"]
    (picture,) = calls[-1][1]
    decoded = decode(picture, "3d image")
    assert (decoded.width, decoded.height) == (552, 344)
