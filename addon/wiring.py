"""Builds the addon objects and the state they share."""

from __future__ import annotations

from typing import Any

from addon.board import Board
from addon.captcha_addon import CaptchaCapture, CaptchaEvents, CaptchaSolving
from addon.events import EventLog
from addon.solve import Solver
from addon.web import CaptchaApi


def build_addons() -> list[Any]:
    log = EventLog()
    board = Board()
    solver = Solver(log)
    events = CaptchaEvents(log, board)
    capture = CaptchaCapture(log, solver, events)
    # Order matters at shutdown: capture and solving write their last events before the sidecar closes.
    return [CaptchaApi(board, solver, capture), capture, CaptchaSolving(solver), events]
