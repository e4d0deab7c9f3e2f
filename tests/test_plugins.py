"""A solver is a plug-in: one spec names it, its options and how it is built; the chain, its option rule and the
factory read the specs. Here a made-up third paid service is added with one spec and one registry entry."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from addon.capture.assemble import Captured
from addon.kinds import Kind
from addon.option_rules import HTTP_URL, KEY, Option
from addon.solving import chain, omocaptcha_v1
from addon.solving.base import Job, Solution
from addon.solving.chain import ChainSettings, SolverFactory, parse_solvers
from addon.solving.omocaptcha_v1 import OmocaptchaV1Solver
from addon.solving.paid import PaidHttpSolver
from addon.solving.plugins import KeySpec, SolverSettings, SolverSpec
from addon.solving.registry import SPECS


class ThirdSolver(PaidHttpSolver):
    name = "third"
    kinds = frozenset({Kind.SLIDE})

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        raise NotImplementedError

    async def check(self) -> str | None:
        doc = await self.free_call("balance", {"key": self._key})
        return str(doc["balance"])


THIRD_KEY = KeySpec("third_key", "THIRD_KEY", label="third key")
THIRD = SolverSpec(
    "third", paid=True, kinds=ThirdSolver.kinds, key=THIRD_KEY, aliases=("third-v1",),
    build=lambda s: ThirdSolver(s.values["third_url"], s.key, s.http),
    options=(Option("third_url", str, "https://third.example/api", "solving", help="Third's API.", rule=HTTP_URL),
             Option("third_key", str, "", "solving", help="Third's key.", rule=KEY, secret=True)),
)
KEYS = {omocaptcha_v1.KEY: "k", THIRD_KEY: "k3"}
WITH_THIRD = (*SPECS, THIRD)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    def answer(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "https://third.example/api/balance"
        return httpx.Response(200, json={"balance": 4.5})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        yield client


def test_a_third_paid_service_is_one_spec(http: httpx.AsyncClient) -> None:
    assert parse_solvers("Local, THIRD-v1", KEYS, WITH_THIRD) == ("local", "third")
    assert chain.valid_solvers("third,omocaptcha-v2", WITH_THIRD) and not chain.valid_solvers("third")
    assert not chain.valid_solvers("third, third-v1", WITH_THIRD)
    assert chain.accepted(WITH_THIRD).endswith(", third-v1 (= third)")  # after the registry's own
    factory = SolverFactory(http, WITH_THIRD)
    values: dict[str, Any] = {"omocaptcha_url": "https://v1.example/", "omocaptcha_v2_url": "https://v2.example/",
                              "third_url": "https://third.example/api", "third_key": ""}
    solvers = factory.build(ChainSettings(("third", "omocaptcha-v1"), KEYS, values))
    assert [type(s) for s in solvers] == [ThirdSolver, OmocaptchaV1Solver]
    assert solvers[0].base_url == "https://third.example/api/"  # type: ignore[attr-defined]
    # each service gets its own key
    assert [s._key for s in solvers] == ["k3", "k"]  # type: ignore[attr-defined]
    # the same settings keep the same solver (and the scheduler its state); a new URL or its key makes a new one,
    # another service's key does not
    assert factory.build(ChainSettings(("third",), KEYS, values))[0] is solvers[0]
    assert factory.build(ChainSettings(("third",), KEYS | {omocaptcha_v1.KEY: "k2"}, values))[0] is solvers[0]
    assert factory.build(ChainSettings(("third",), KEYS | {THIRD_KEY: "k4"}, values))[0] is not solvers[0]


async def test_the_third_service_gets_the_common_paid_part(http: httpx.AsyncClient) -> None:
    solver = THIRD.build(SolverSettings("k", {"third_url": "https://third.example/api", "third_key": ""}, http))
    assert await solver.check() == "4.5"
    assert await solver.report("1", True) is False  # no report call: the declared no-op


def test_auto_and_the_names_come_from_the_specs() -> None:
    assert parse_solvers("auto", KEYS) == ("omocaptcha-v1",) and parse_solvers(" ") == ("local",)
    assert parse_solvers("auto", {omocaptcha_v1.KEY: ""}) == ("local",)
    assert parse_solvers("omocaptcha, local") == ("omocaptcha-v1", "local")
    with pytest.raises(ValueError, match="listed twice"):
        parse_solvers("omocaptcha,omocaptcha-v1", KEYS)
    with pytest.raises(ValueError, match="unknown solver 'third'"):
        parse_solvers("third", KEYS)


def test_auto_takes_the_first_auto_service_whose_own_key_is_set() -> None:
    auto_third = dataclasses.replace(THIRD, auto=True)
    specs = (SPECS[0], auto_third, *SPECS[1:])
    assert parse_solvers("auto", {THIRD_KEY: "k3"}, specs) == ("third",)
    assert parse_solvers("auto", {omocaptcha_v1.KEY: "k"}, specs) == ("omocaptcha-v1",)
    assert parse_solvers("auto", {}, specs) == ("local",)
