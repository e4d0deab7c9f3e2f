"""Builds the addon objects and the state they share."""

from __future__ import annotations

from typing import Any

from addon.board import Board
from addon.captcha_addon import CaptchaCapture, CaptchaEvents, CaptchaSolving
from addon.events import EventLog
from addon.solve import Solver
from addon.web import CaptchaApi


class Captcha:
    """The one addon mitmproxy sees; its children do the work.

    mitmproxy pays a coroutine per top-level addon for every event of every flow, but walks an addon's
    `addons` children within one: grouping keeps the cost on ordinary traffic down.
    """

    def __init__(self, children: list[Any]):
        self.addons = children


def build_addons() -> list[Any]:
    log = EventLog()
    board = Board()
    solver = Solver(log)
    events = CaptchaEvents(log, board)
    capture = CaptchaCapture(log, board, solver, events)
    # Order matters at shutdown: capture and solving write their last events before the sidecar closes.
    return [CaptchaApi(board, solver, capture), capture, CaptchaSolving(solver), events]
