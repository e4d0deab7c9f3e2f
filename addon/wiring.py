"""Builds the addon objects and the state they share."""

from __future__ import annotations

from typing import Any

from addon.mitm.api import CaptchaApi
from addon.mitm.capture import CaptchaCapture, CaptchaEvents, CaptchaSolving
from addon.publish.board import Board
from addon.publish.events import EventLog
from addon.solving.scheduler import Solver


def build_addons() -> list[Any]:
    log = EventLog()
    board = Board()
    solver = Solver(log)
    events = CaptchaEvents(log, board)
    capture = CaptchaCapture(log, solver, events)
    # Order matters at shutdown: capture and solving write their last events before the sidecar closes.
    return [CaptchaApi(board, solver, capture), capture, CaptchaSolving(solver), events]
