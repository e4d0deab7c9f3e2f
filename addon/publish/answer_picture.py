"""Draws an answer on the challenge's own images, so a person sees at a glance whether it lines up.

Slide: the background with the piece pasted where the answer puts it and a thin line at the answer's x.
Rotate: the ring with the inner disc turned clockwise by the answer's angle laid in its centre.
Points (3d, icon): the image with a numbered marker on each point to click, in the order to click them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, assert_never

from PIL import Image, ImageDraw, ImageFont

from addon.kinds import SPECS, kind_of_mode

if TYPE_CHECKING:
    import numpy as np

LINE_COLOUR = (255, 0, 200, 255)
BACKDROP = (255, 255, 255, 255)
"""What transparent corners (and the PNG era's slightly translucent images) are laid on."""
SUPERSAMPLE = 4
"""The circular mask of a JPEG-era inner disc is drawn this much larger, then reduced (anti-aliased edge)."""
MAX_SIDE = 2048
"""Captcha images are a few hundred pixels; anything far larger is not drawn (decoding it would be the cost)."""
EDGE_TRIM = 0.5
"""Pixels cut off the JPEG-era disc's rim, where its JPEG edge has bled into the white corners."""


class PictureError(ValueError):
    """The images or the answer are not enough to draw the picture."""


def draw_answer(kind: str, images: Mapping[str, bytes], answer: Mapping[str, Any],
                tip_y: float | None = None) -> bytes:
    """PNG of the answer drawn on the images: `images` maps role (outer/inner, background/piece, image) to its
    bytes."""
    import cv2  # numpy and OpenCV load on the first drawing, not with the proxy
    import numpy as np
    known = kind_of_mode(kind)
    if known is None:
        raise PictureError(f"no picture for kind {kind!r}")
    answer_type = SPECS[known].answer
    match answer_type:
        case "rotate":
            picture = _rotate(_open(images, "outer"), _open(images, "inner"), _number(answer, "angle"))
        case "slide":
            picture = _slide(_open(images, "background"), _open(images, "piece"), _number(answer, "x_natural"),
                             tip_y)
        case "points":
            picture = _points(_open(images, "image"), answer)
        case _:
            assert_never(answer_type)
    flat = Image.new("RGBA", picture.size, BACKDROP)
    flat.alpha_composite(picture)
    # Fast settings: the picture is cached once drawn, and drawing it should not hold up the proxy.
    ok, png = cv2.imencode(".png", np.asarray(flat.convert("RGB"))[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise PictureError("the picture could not be encoded")
    return png.tobytes()


def _open(images: Mapping[str, bytes], role: str) -> Image.Image:
    body = images.get(role)
    if body is None:
        raise PictureError(f"the {role} image is missing")
    try:
        img = Image.open(io.BytesIO(body))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise PictureError(f"the {role} image does not decode: {e}") from e
    if max(img.size) > MAX_SIDE:
        raise PictureError(f"the {role} image is {img.width}x{img.height}, larger than a captcha")
    try:
        img.load()
    except (OSError, ValueError) as e:
        raise PictureError(f"the {role} image does not decode: {e}") from e
    return img


def _number(answer: Mapping[str, Any], key: str) -> float:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PictureError(f"the answer has no usable {key!r}: {value!r}")
    return float(value)


def _rotate(outer: Image.Image, inner: Image.Image, angle: float) -> Image.Image:
    ring = outer.convert("RGBA")
    had_alpha = "A" in inner.getbands() or inner.info.get("transparency") is not None
    disc = inner.convert("RGBA")
    if not had_alpha:
        # JPEG era: the disc's corners are white, not transparent; keep only the circle.
        disc.putalpha(_circle(disc.size, min(disc.size) / 2 - EDGE_TRIM))
    # PIL turns counter-clockwise for a positive angle; the answer's angle is clockwise on screen.
    turned = disc.rotate(-angle, resample=Image.Resampling.BICUBIC, center=(disc.width / 2, disc.height / 2))
    _paste(ring, turned, (ring.width - turned.width) // 2, (ring.height - turned.height) // 2)
    return ring


def _circle(size: tuple[int, int], radius: float) -> Image.Image:
    w, h = size
    big = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    cx, cy, r = w * SUPERSAMPLE / 2, h * SUPERSAMPLE / 2, radius * SUPERSAMPLE
    ImageDraw.Draw(big).ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    return big.resize((w, h), Image.Resampling.BOX)


def _slide(background: Image.Image, piece: Image.Image, x: float, tip_y: float | None) -> Image.Image:
    canvas = background.convert("RGBA")
    tile = piece.convert("RGBA")
    left = round(x)
    top = round(tip_y) if tip_y is not None and math.isfinite(tip_y) else best_y(canvas, tile, left)
    line_x = min(max(left, 0), canvas.width - 1)
    # The line goes under the piece: it shows above and below it without hiding the piece's own left edge.
    ImageDraw.Draw(canvas).line((line_x, 0, line_x, canvas.height - 1), fill=LINE_COLOUR, width=1)
    _paste(canvas, tile, left, top)
    return canvas


MARKER_RADIUS = 11
MARKER_FILL = (255, 0, 200, 255)
MARKER_TEXT = (255, 255, 255, 255)


def _points(image: Image.Image, answer: Mapping[str, Any]) -> Image.Image:
    """A numbered disc on each point (in natural pixels), 1 for the first click."""
    points = answer.get("points")
    if not isinstance(points, list) or not points:
        raise PictureError("the answer has no points")
    canvas = image.convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    r = MARKER_RADIUS
    for n, point in enumerate(points, start=1):
        if not isinstance(point, Mapping):
            raise PictureError(f"point {n} is not an object")
        x, y = _number(point, "x_natural"), _number(point, "y_natural")
        draw.ellipse((x - r, y - r, x + r, y + r), fill=MARKER_FILL, outline=(255, 255, 255, 255), width=2)
        draw.text((x, y), str(n), fill=MARKER_TEXT, font=font, anchor="mm")
    return canvas


def _paste(canvas: Image.Image, tile: Image.Image, left: int, top: int) -> None:
    """Alpha-pastes tile at (left, top), clipped to the canvas (alpha_composite refuses negative offsets)."""
    sx, sy = max(0, -left), max(0, -top)
    dx, dy = max(0, left), max(0, top)
    w, h = min(tile.width - sx, canvas.width - dx), min(tile.height - sy, canvas.height - dy)
    if w > 0 and h > 0:
        canvas.alpha_composite(tile, (dx, dy), (sx, sy, sx + w, sy + h))


def best_y(background: Image.Image, piece: Image.Image, left: int) -> int:
    """The row where the piece fits the background best in the column at `left` (when the get gave no tip_y).

    The site darkens or lightens the gap and rims it, which breaks plain correlation of the pixels; the texture
    inside the piece survives, so the gradient maps are correlated, inside the piece's shape less its rim.
    """
    import cv2  # numpy and OpenCV load on the first drawing, not with the proxy
    import numpy as np
    bg = _gradient(np.asarray(background.convert("L"), dtype=np.float32))
    tile = _gradient(np.asarray(piece.convert("L"), dtype=np.float32))
    alpha = piece.getchannel("A") if "A" in piece.getbands() else Image.new("L", piece.size, 255)
    inside = cv2.erode((np.asarray(alpha) > 127).astype(np.uint8), np.ones((5, 5), np.uint8))
    bg_height, bg_width = int(bg.shape[0]), int(bg.shape[1])
    left = min(max(left, 0), max(bg_width - 1, 0))
    width, height = min(int(tile.shape[1]), bg_width - left), int(tile.shape[0])
    middle = max(0, (bg_height - height) // 2)
    if height > bg_height or width < 8 or int(inside[:, :width].sum()) < 16:
        return middle
    scores = cv2.matchTemplate(bg[:, left:left + width], tile[:, :width], cv2.TM_CCOEFF_NORMED,
                               mask=inside[:, :width].astype(np.float32))
    scores = np.nan_to_num(scores[:, 0], nan=-1.0, posinf=-1.0, neginf=-1.0)
    return int(np.argmax(scores)) if float(scores.max()) > -1.0 else middle


def _gradient(gray: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    import cv2  # numpy and OpenCV load on the first drawing, not with the proxy
    import numpy as np
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(gx, gy).astype(np.float32)
