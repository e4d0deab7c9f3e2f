"""Slide puzzle: the x (natural px) at which the piece's box, laid on the background, fills the gap.

With the piece: its alpha is the gap's shape. Two score maps over the band of rows the piece's `tip_y` allows:
the piece's grey levels against the background's under its shape (normalised cross-correlation, blind to the
gap's darkening or lightening, which is an affine change of the pixels), and the shape's outline against the
background's edges. Each map is standardised (median, spread) and the two are added; the answer is the box's left
edge at the best place, so any margin between the box and the visible piece is accounted for.

Without the piece: the gap is a region about 56-80 px square (with knobs) whose pixels are the picture under a
semi-transparent layer, so across its outline the log-luminance steps by about the same amount all the way round.
Pairs of thin strips just outside and inside the four sides of a square (two segments per side, away from the
knobs in the middle) measure that step; the square where the weaker half of the segments still steps most wins
(over the piece's rows; without tip_y over the two likeliest row bands found at half resolution first), then the
left edge is placed on the strongest vertical edge near it. That edge is the shape's; the answer is the piece
box's left edge, GAP_BOX_INSET px further left (real 552x344 slides draw the shape 6-7 px inside its 110-px box,
and the white stroke around the gap moves the strongest edge about 2 px further in). The confidence weighs that
stroke too: a dark shape of the picture can step across its outline as uniformly as a gap, but has none.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from addon.solving.vision.common import (
    F32,
    Decoded,
    VisionError,
    VisionResult,
    check_not_blank,
    clamp01,
    decode,
    logistic,
    luma,
)

log = logging.getLogger(__name__)

BG_WIDTH, PIECE_SIZE = 552, 110
"""Nominal sizes; a background of another width is taken as a scaled version (the piece and tip_y with it)."""
BAND_PAD = 6
"""Rows above and below the piece's box searched when tip_y is known (nominal px)."""
RUNNER_UP_DX = 8
"""The runner-up is the best place at least this far (nominal px) from the winner."""
SQUARE_SIDES = range(28, 41)
"""Sides (half-resolution px) of the gap's square body tried without the piece: 56..80 nominal px."""
COARSE_BANDS = 2
"""Without tip_y: row bands found at half resolution that are searched again at full resolution."""
GAP_BOX_INSET = 9.0
"""From the gap's strongest left edge to the piece box's left edge (nominal px). Measured on 10 real slides: the
edge found lies 7-11 px right of the box's left edge (the shape's 6-7 px inset plus the stroke)."""
STROKE_REACH = 10
"""Half the width (nominal px) of the profiles across the found square's sides in which the gap's stroke is looked
for: the square found lies a few px off the outline."""

# Logistic calibrations fitted on the tune split by `uv run python -m scripts.eval_local --fit`.
PIECE_CONF = (-3.952, 1.083, 2.401)
"""bias, weight of the margin (standardised units), weight of the grey-level correlation at the answer."""
GAP_CONF = (-4.828, 5.995, 3.408, 8.247)
"""bias, weight of the margin (log-luminance units), weight of the step at the answer, weight of the stroke; the
bias then shifted so that the tune split's answers at 0.5 or more are 99 % right (`--fit` prints it so)."""


@dataclass(frozen=True, slots=True)
class SlideAnalysis:
    x: float
    with_piece: bool
    score: float
    """with piece: the grey-level correlation at the answer (-1..1); without: the gap's step in log-luminance."""
    margin: float
    """How far the answer's score stands above the runner-up's (standardised units with the piece, log units
    without)."""
    stroke: float = 0.0
    """Without the piece: how much brighter than both its sides the found square's outline is (log-luminance,
    median of its eight segments). A gap is drawn with a white stroke round it; a dark shape of the picture that
    steps as uniformly (a tree's crown, a chip on a board) has none."""

    @property
    def confidence(self) -> float:
        if self.with_piece:
            bias, w_margin, w_score = PIECE_CONF
            return clamp01(logistic(bias + w_margin * self.margin + w_score * self.score))
        bias, w_margin, w_score, w_stroke = GAP_CONF
        return clamp01(logistic(bias + w_margin * self.margin + w_score * self.score + w_stroke * self.stroke))


def solve_slide(background: bytes, piece: bytes | None, tip_y: float | None) -> VisionResult:
    a = analyse(background, piece, tip_y)
    return VisionResult(value=a.x, confidence=a.confidence)


def analyse(background: bytes, piece: bytes | None, tip_y: float | None) -> SlideAnalysis:
    bg = decode(background, "background")
    _check_background(bg)
    scale = bg.width / BG_WIDTH
    ty = _tip(tip_y, bg)
    if piece is not None:
        pc = decode(piece, "piece")
        mask = _piece_mask(pc, bg, scale)
        if mask is not None:
            return _with_piece(bg, pc, mask, ty, scale)
        log.debug("the piece has no usable shape: solving from the background alone")
    return _background_only(bg, ty, scale)


def _check_background(bg: Decoded) -> None:
    aspect = bg.width / bg.height
    if not 200 <= bg.width <= 2400 or not 1.2 <= aspect <= 2.2:
        raise VisionError(f"background: {bg.width}x{bg.height} is not a slide background's shape")
    check_not_blank(bg.rgb, None, "background")


def _tip(tip_y: float | None, bg: Decoded) -> float | None:
    if tip_y is None:
        return None
    try:
        ty = float(tip_y)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(ty) or not -0.25 * bg.height <= ty <= bg.height:
        log.debug("tip_y %r is outside the background: ignored", tip_y)
        return None
    return ty


def _piece_mask(pc: Decoded, bg: Decoded, scale: float) -> F32 | None:
    nominal = PIECE_SIZE * scale
    if not (0.6 * nominal <= pc.width <= 1.5 * nominal and 0.6 * nominal <= pc.height <= 1.5 * nominal):
        raise VisionError(f"piece: {pc.width}x{pc.height} does not fit a {bg.width}x{bg.height} background")
    if pc.alpha is None:
        return None
    mask = (pc.alpha > 0.5).astype(np.float32)
    share = float(mask.mean())
    if not 0.1 <= share <= 0.97:
        return None
    return mask


def _band(height: int, ty: float | None, rows: int, pad: int) -> tuple[int, int]:
    if ty is None:
        return 0, height
    y0 = max(0, round(ty) - pad)
    y1 = min(height, round(ty) + rows + pad)
    if y1 - y0 < rows:
        return 0, height
    return y0, y1


def _standardise(s: F32) -> F32:
    flat = s.ravel()
    median = float(np.median(flat))
    spread = float(flat.std()) + 1e-6
    out: F32 = (s - np.float32(median)) / np.float32(spread)
    return out


def _masked_ncc(image: F32, templ: F32, mask: F32, floor: float = 0.01) -> F32:
    """Normalised cross-correlation of `templ` under `mask` at every place in `image` (one channel)."""
    m = float(mask.sum())
    mean = float((templ * mask).sum()) / m
    t = (templ - np.float32(mean)) * mask
    num = cv2.matchTemplate(image, t, cv2.TM_CCORR)
    s1 = cv2.matchTemplate(image, mask, cv2.TM_CCORR)
    s2 = cv2.matchTemplate(image * image, mask, cv2.TM_CCORR)
    var = np.maximum(s2 - s1 * s1 / np.float32(m), 0.0)
    out: F32 = num / np.sqrt(np.float32(float((t * t).sum())) * (var + np.float32(m * floor * floor)))
    return out


def _with_piece(bg: Decoded, pc: Decoded, mask: F32, ty: float | None, scale: float) -> SlideAnalysis:
    ph, pw = mask.shape
    if pw > bg.width or ph > bg.height:
        raise VisionError("piece: larger than the background")
    y0, y1 = _band(bg.height, ty, ph, round(BAND_PAD * scale))
    band = np.ascontiguousarray(bg.rgb[y0:y1])
    k = max(3, round(7 * scale) | 1)
    inner = cv2.erode(mask, np.ones((k, k), np.uint8))
    if float(inner.sum()) < 50:
        inner = mask
    gray = luma(band)
    content = _masked_ncc(gray, luma(pc.rgb), inner)
    content = np.nan_to_num(content, nan=0.0, posinf=0.0, neginf=0.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    outline = cv2.GaussianBlur(mask - cv2.erode(mask, np.ones((3, 3), np.uint8)), (0, 0), 1.0)
    edges = cv2.matchTemplate(cv2.magnitude(gx, gy), outline, cv2.TM_CCOEFF_NORMED)
    edges = np.nan_to_num(edges, nan=0.0, posinf=0.0, neginf=0.0)
    score = _standardise(content) + _standardise(edges)
    yy, xx = np.unravel_index(int(np.argmax(score)), score.shape)
    margin = _margin(score, int(xx), RUNNER_UP_DX * scale)
    return SlideAnalysis(x=float(xx), with_piece=True, score=float(content[yy, xx]), margin=margin)


def _margin(score: F32, x: int, dx: float) -> float:
    profile = score.max(axis=0)
    far = np.abs(np.arange(profile.shape[0]) - x) > dx
    if not far.any():
        return 0.0
    return float(profile[x] - profile[far].max())


def _background_only(bg: Decoded, ty: float | None, scale: float) -> SlideAnalysis:
    log_l = np.log(luma(bg.rgb) + np.float32(0.03))
    full_sides = [max(16, round(2 * s * scale)) for s in SQUARE_SIDES]
    pad = round(BAND_PAD * scale) + 8
    if ty is not None:
        # the gap lies in the piece's rows
        bands = [_band(bg.height, ty, round(PIECE_SIZE * scale), pad)]
    else:
        # no tip_y: the two likeliest row bands at half resolution, then each at full resolution
        half = cv2.resize(log_l, (bg.width // 2, bg.height // 2), interpolation=cv2.INTER_AREA)
        coarse = _square_search(half, [max(8, round(s * scale)) for s in SQUARE_SIDES], full=False)
        if coarse is None:
            raise VisionError("background: too small to hold a gap")
        bands = []
        rows = coarse.rows.copy()
        for _ in range(COARSE_BANDS):
            yb = int(np.argmax(rows))
            if not np.isfinite(rows[yb]):
                break
            bands.append((max(0, 2 * yb - pad), min(bg.height, 2 * (yb + coarse.side) + pad)))
            rows[max(0, yb - coarse.side // 2): yb + coarse.side // 2 + 1] = -np.inf
    found: list[tuple[_Squares, int]] = []
    for y0, y1 in bands:
        squares = _square_search(log_l[y0:y1], full_sides, full=True)
        if squares is not None:
            found.append((squares, y0))
    if not found:
        raise VisionError("background: too small to hold a gap")
    best, y0 = max(found, key=lambda f: f[0].step)
    others = [f.step for f, _ in found if f is not best and abs(f.x - best.x) > best.side / 2]
    runner_up = max([best.runner_up, *others])
    x = _refine_left_edge(log_l, best.x, y0 + best.y, best.side) - GAP_BOX_INSET * scale
    stroke = _stroke(log_l, best.x, y0 + best.y, best.side, max(4, round(STROKE_REACH * scale)))
    return SlideAnalysis(x=max(0.0, float(x)), with_piece=False, score=best.step, margin=best.step - runner_up,
                         stroke=stroke)


@dataclass(frozen=True, slots=True)
class _Squares:
    step: float
    """The best square's step across its outline (log-luminance)."""
    x: int
    y: int
    side: int
    runner_up: float
    """The best step of squares away from the winner's columns."""
    rows: np.ndarray
    """Best step per top row (over columns and sides)."""


def _square_search(img: F32, sides: list[int], *, full: bool) -> _Squares | None:
    """The square (side in `sides`) whose outline the image steps across most uniformly."""
    h, w = img.shape
    best: tuple[float, int, int, int] | None = None
    columns = np.full(w, -np.inf, np.float32)
    rows = np.full(h, -np.inf, np.float32)
    for s in sides:
        if full:
            seg, inset, out, inn, width = max(3, s // 4), 4, 5, 3, 3
        else:
            seg, inset, out, inn, width = max(3, s // 4), 2, 3, 2, 2
        margin = out + width + 1
        xs0, xs1 = margin, w - s - margin
        ys0, ys1 = margin, h - s - margin
        if xs1 <= xs0 or ys1 <= ys0:
            continue
        # means of thin strips (width x seg, seg x width) anchored at their top-left corner
        vert = cv2.boxFilter(img, -1, (width, seg), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        horiz = cv2.boxFilter(img, -1, (seg, width), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)

        def at(strips: F32, dx: int, dy: int, ys0: int = ys0, ys1: int = ys1, xs0: int = xs0,
               xs1: int = xs1) -> F32:
            view: F32 = strips[ys0 + dy: ys1 + dy, xs0 + dx: xs1 + dx]
            return view

        steps: list[F32] = []
        for p in (inset, s - inset - seg):  # two segments per side, near its ends: knobs sit in the middle
            steps += [at(vert, -out - width, p) - at(vert, inn, p),  # left: outside minus inside
                      at(vert, s + out, p) - at(vert, s - inn - width, p),  # right
                      at(horiz, p, -out - width) - at(horiz, p, inn),  # top
                      at(horiz, p, s + out) - at(horiz, p, s - inn - width)]  # bottom
        ordered = _sorted8(steps)
        # darker inside (positive steps) or lighter (negative): the weaker half of the segments decides
        score = np.maximum(sum(ordered[:4]), -sum(ordered[4:])) / np.float32(4)
        np.maximum(columns[xs0:xs1], score.max(axis=0), out=columns[xs0:xs1])
        np.maximum(rows[ys0:ys1], score.max(axis=1), out=rows[ys0:ys1])
        i = int(np.argmax(score))
        yy, xx = divmod(i, score.shape[1])
        if best is None or float(score.flat[i]) > best[0]:
            best = (float(score.flat[i]), xs0 + xx, ys0 + yy, s)
    if best is None:
        return None
    step, x, y, side = best
    far = np.abs(np.arange(w) - x) > side / 2
    runner_up = float(columns[far].max()) if far.any() else -np.inf
    return _Squares(step, x, y, side, runner_up if np.isfinite(runner_up) else 0.0, rows)


_NETWORK_8 = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6), (0, 4), (3, 7), (1, 5),
              (2, 6), (1, 4), (3, 6), (2, 4), (3, 5), (3, 4))


def _sorted8(values: list[F32]) -> list[F32]:
    """Eight arrays sorted elementwise (a 19-comparator sorting network: much cheaper than np.sort on axis 0)."""
    v = list(values)
    for i, j in _NETWORK_8:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return v


def _stroke(log_l: F32, x: int, y: int, side: int, reach: int) -> float:
    """The median over the square's eight segments (those of `_square_search`) of the brightest line across its
    outline less the brighter of the two far ends of the profile (3 px each, `reach` px out and in)."""
    h, w = log_l.shape
    seg, inset = max(3, side // 4), 4
    profiles: list[F32] = []
    for p in (inset, side - inset - seg):
        rows, cols = slice(y + p, y + p + seg), slice(x + p, x + p + seg)
        if x - reach >= 0:
            profiles.append(log_l[rows, x - reach: x + reach].mean(axis=0))
        if x + side + reach <= w:
            profiles.append(log_l[rows, x + side - reach: x + side + reach].mean(axis=0))
        if y - reach >= 0:
            profiles.append(log_l[y - reach: y + reach, cols].mean(axis=1))
        if y + side + reach <= h:
            profiles.append(log_l[y + side - reach: y + side + reach, cols].mean(axis=1))
    steps = [float(q[3:-3].max() - max(q[:3].mean(), q[-3:].mean())) for q in profiles if q.shape[0] > 6]
    return float(np.median(steps)) if steps else 0.0


def _refine_left_edge(log_l: F32, x0: int, y0: int, side: int) -> int:
    """The column of the strongest vertical edge within a few px of the coarse left side (median over its rows)."""
    h, w = log_l.shape
    rows = log_l[max(0, y0 + 4): min(h, y0 + side - 4)]
    c0, c1 = max(1, x0 - 8), min(w, x0 + 9)
    if rows.shape[0] < 4 or c1 - c0 < 2:
        return x0
    steps = np.abs(rows[:, c0:c1] - rows[:, c0 - 1: c1 - 1])
    return c0 + int(np.argmax(np.median(steps, axis=0)))
