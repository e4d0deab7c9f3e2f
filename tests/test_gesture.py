"""The gesture planner: what a drag plan promises (shape, timing, wobble, seeding) for any distance."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.publish.gesture import MAX_MS, MIN_MS, click_plan, drag_path, duration_ms


def speeds(path: list[list[float]]) -> list[float]:
    return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairwise(path)]


@settings(max_examples=60, deadline=None)
@given(distance=st.floats(0, 400), seed=st.text(max_size=40))
def test_a_drag_plan_is_human_shaped_for_any_distance(distance: float, seed: str) -> None:
    path = drag_path(distance, seed)
    assert path[0] == [0, 0.0, 0.0]
    assert path[-1][1] == round(distance, 2)
    assert MIN_MS <= duration_ms(path) <= MAX_MS
    times = [s[0] for s in path]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(12 <= b - a <= 20 for a, b in pairwise(times[:-1]))
    # A small overshoot past the target, then the correction back to it.
    peak = max(s[1] for s in path)
    assert 1.99 <= peak - distance <= 9.01
    # It wobbles: the pointer leaves the horizontal line by a pixel or more.
    ys = [s[2] for s in path]
    assert max(ys) - min(ys) >= 1.0


@pytest.mark.parametrize("distance", [30.0, 135.5, 265.0])
def test_a_drag_speeds_up_then_eases_out(distance: float) -> None:
    path = drag_path(distance, f"challenge-{distance}")
    v = speeds(path)
    fastest = max(range(len(v)), key=v.__getitem__)
    peak_time = path[fastest][0]
    overshoot_at = max(range(len(path)), key=lambda i: path[i][1])
    # The peak speed comes in the first half of the approach, and is well above the average.
    assert peak_time < path[overshoot_at][0] / 2
    assert v[fastest] > 1.6 * distance / duration_ms(path)
    assert v[0] < v[fastest] / 3 and all(abs(s) < v[fastest] / 3 for s in v[overshoot_at - 2:overshoot_at])
    # After the overshoot it only goes back, to exactly the target.
    back = [s[1] for s in path[overshoot_at:]]
    assert back == sorted(back, reverse=True) and back[-1] == distance


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert drag_path(120.0, "a" * 40) == drag_path(120.0, "a" * 40)
    plans = {str(drag_path(120.0, f"{n:040x}")) for n in range(20)}
    assert len(plans) == 20
    durations = {duration_ms(drag_path(120.0, f"{n:040x}")) for n in range(20)}
    assert max(durations) - min(durations) > 150


def test_a_drag_to_the_left_mirrors_one_to_the_right() -> None:
    right, left = drag_path(80.0, "s"), drag_path(-80.0, "s")
    assert [s[0] for s in left] == [s[0] for s in right]
    assert [s[1] for s in left] == [-s[1] for s in right]


def test_clicks_come_in_order_with_human_pauses_near_each_point() -> None:
    points = [(98.6, 75.4), (181.5, 147.8), (20.0, 30.0)]
    clicks = click_plan(points, "c1")
    assert len(clicks) == 3 and clicks == click_plan(points, "c1") and clicks != click_plan(points, "c2")
    assert clicks[0][0] >= 350
    assert all(450 <= b[0] - a[0] <= 1100 for a, b in pairwise(clicks))
    for (t, x, y), (px, py) in zip(clicks, points, strict=True):
        assert abs(x - px) <= 1.5 and abs(y - py) <= 1.5 and t > 0
    assert click_plan([], "c1") == []
