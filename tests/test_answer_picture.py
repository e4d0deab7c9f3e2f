from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from addon.publish.answer_picture import LINE_COLOUR, PictureError, best_y, draw_answer
from tests.conftest import sample
from tests.kit import synth

LABELS = {"png": ("png", 76.0), "jpeg": ("jpg", 160.0)}
"""The real whirl pairs' answers (../shared/samples/LABELS.md)."""
HOLE_RADIUS = 105.0


def whirl_pair(era: str) -> dict[str, bytes]:
    ext, _ = LABELS[era]
    return {"outer": sample(f"whirl-{era}-outer-347.{ext}"), "inner": sample(f"whirl-{era}-inner-211.{ext}")}


def pixels(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(np.float64)


def seam(png: bytes, radius: float = HOLE_RADIUS, gap: float = 2.5) -> float:
    """Mean colour step across the circle where the disc meets the ring: small when the picture continues."""
    a = pixels(png)
    h, w = a.shape[:2]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)

    def circle(r: float) -> np.ndarray:
        ring: np.ndarray = a[np.rint(cy + r * np.sin(t)).astype(int), np.rint(cx + r * np.cos(t)).astype(int)]
        return ring

    return float(np.abs(circle(radius - gap) - circle(radius + gap)).mean())


@pytest.mark.parametrize("era", ["png", "jpeg"])
def test_rotate_lines_up_at_the_label(era: str) -> None:
    images, label = whirl_pair(era), LABELS[era][1]
    right = draw_answer("rotate", images, {"value": label / 360 * 271, "fraction": label / 360, "angle": label})
    a = pixels(right)
    assert a.shape == (347, 347, 3)
    assert a.std() > 20
    # The centre is the disc's (not the ring's white or transparent hole).
    centre = a[150:197, 150:197]
    assert centre.std() > 5 and centre.mean() < 250
    at_label = seam(right)
    assert at_label < 0.6 * seam(draw_answer("rotate", images, {"angle": label + 90}))
    assert at_label < seam(draw_answer("rotate", images, {"angle": label + 20}))
    assert at_label < seam(draw_answer("rotate", images, {"angle": label - 20}))


def test_rotate_turns_clockwise() -> None:
    """A disc turned 90 degrees counter-clockwise inside its ring is put right by an answer of 90 (clockwise)."""
    scene = Image.new("RGB", (347, 347), (255, 255, 255))
    scene.paste((200, 30, 30), (0, 0, 347, 173))  # red top half, white bottom half
    outer = scene.copy()
    inner = scene.crop((68, 68, 279, 279)).rotate(90)  # PIL: positive = counter-clockwise
    images = {"outer": encode(outer, "JPEG"), "inner": encode(inner, "JPEG")}
    right = pixels(draw_answer("rotate", images, {"angle": 90.0}))
    wrong = pixels(draw_answer("rotate", images, {"angle": 270.0}))
    # Above the centre the disc must be red, below it white, as the ring is.
    assert right[120, 173, 0] > 150 and right[120, 173, 1] < 80
    assert right[226, 173].min() > 200
    assert wrong[120, 173].min() > 200


def encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def slide(seed: int) -> tuple[Image.Image, dict[str, bytes], int, int]:
    """A synthetic slide (the test kit's generator): the untouched scene, the images, gap_x and tip_y."""
    rng = random.Random(seed)
    gap_x, tip_y = rng.randint(*synth.GAP_X_RANGE), rng.randint(*synth.TIP_Y_RANGE)
    scene = synth.picture(rng, synth.BG_SIZE, (0.3, 0.6))
    background, piece = synth.slide_images(scene, gap_x, tip_y, synth.piece_mask(rng))
    return scene, {"background": encode(background, "JPEG"), "piece": encode(piece, "PNG")}, gap_x, tip_y


def box_error(png: bytes, scene: Image.Image, gap_x: int, tip_y: int) -> float:
    """How far the drawn picture is from the untouched scene over the gap (small when the piece fills it)."""
    size = synth.PIECE_SIZE
    drawn = pixels(png)[tip_y:tip_y + size, gap_x:gap_x + size]
    truth = np.asarray(scene.convert("RGB")).astype(np.float64)[tip_y:tip_y + size, gap_x:gap_x + size]
    return float(np.abs(drawn - truth).mean())


def test_slide_piece_fills_the_gap_at_the_answer() -> None:
    scene, images, gap_x, tip_y = slide(3)
    answer = {"x": gap_x * 340 / 552, "width_view": 340, "fraction": gap_x / 552, "x_natural": gap_x}
    right = draw_answer("slide", images, answer, tip_y=tip_y)
    a = pixels(right)
    assert a.shape == (344, 552, 3)
    assert a.std() > 10
    wrong = draw_answer("slide", images, {**answer, "x_natural": gap_x + 40}, tip_y=tip_y)
    assert box_error(right, scene, gap_x, tip_y) < 0.4 * box_error(wrong, scene, gap_x, tip_y)
    # The thin line at x, under the piece: visible in the rows above and below it.
    rows = [y for y in range(344) if y < tip_y or y >= tip_y + synth.PIECE_SIZE]
    line = a[rows, gap_x]
    assert np.all(np.abs(line - np.array(LINE_COLOUR[:3])) < 2)


@pytest.mark.parametrize("seed", [0, 1, 3, 11, 15, 17])
def test_slide_without_tip_y_finds_the_gap_row(seed: int) -> None:
    _, images, gap_x, tip_y = slide(seed)
    background = Image.open(io.BytesIO(images["background"]))
    piece = Image.open(io.BytesIO(images["piece"]))
    assert abs(best_y(background, piece, gap_x) - tip_y) <= 2
    found = draw_answer("slide", images, {"x_natural": gap_x})
    given = draw_answer("slide", images, {"x_natural": gap_x}, tip_y=best_y(background, piece, gap_x))
    assert found == given


def test_slide_piece_partly_outside_is_clipped() -> None:
    _, images, _, _ = slide(5)
    for x, y in ((-30, -20), (520, 300)):
        assert pixels(draw_answer("slide", images, {"x_natural": x}, tip_y=y)).shape == (344, 552, 3)


def test_what_cannot_be_drawn_says_so() -> None:
    _, images, gap_x, _ = slide(2)
    with pytest.raises(PictureError):
        draw_answer("slide", {"background": images["background"]}, {"x_natural": gap_x})
    with pytest.raises(PictureError):
        draw_answer("slide", images, {"x": 12})
    with pytest.raises(PictureError):
        draw_answer("slide", images, {"x_natural": float("nan")})
    with pytest.raises(PictureError):
        draw_answer("slide", {**images, "piece": b"not an image"}, {"x_natural": gap_x})
    with pytest.raises(PictureError):
        draw_answer("3d", images, {"x_natural": gap_x})
    with pytest.raises(PictureError):
        draw_answer("rotate", {"outer": images["background"], "inner": images["piece"]}, {"angle": True})


def test_a_disc_larger_than_its_ring_is_still_drawn() -> None:
    images = {"outer": encode(Image.new("RGB", (100, 100), (9, 9, 9)), "PNG"),
              "inner": encode(Image.new("RGB", (150, 150), (200, 0, 0)), "PNG")}
    a = pixels(draw_answer("rotate", images, {"angle": 30.0}))
    assert a.shape == (100, 100, 3)
    assert tuple(a[50, 50]) == (200, 0, 0)


def test_an_image_far_larger_than_a_captcha_is_not_decoded() -> None:
    _, images, gap_x, _ = slide(4)
    huge = encode(Image.new("L", (5000, 8)), "PNG")
    with pytest.raises(PictureError, match="larger than a captcha"):
        draw_answer("slide", {**images, "background": huge}, {"x_natural": gap_x})
