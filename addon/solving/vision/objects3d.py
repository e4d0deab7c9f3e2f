"""3D objects ("Select 2 objects that are the same shape"): the centres of the two objects that share a shape.

Objects: the ground is pale and nearly grey, its shadows light grey; an object is what is coloured (saturation) or
dark. Pure-black pixels are left out (the training copies have black rectangles pasted on them; a real challenge
has none). Connected regions of that mask, big enough, are the objects.

Shape: each object's crop (its own pixels only, grey levels standardised so colour and lighting drop out, the
crop scaled to a fixed square so size drops out) is described by a HOG of the grey levels plus its silhouette,
projected by a Fisher discriminant (PCA then LDA, fitted by `scripts/train_3d.py` on the shape classes of the
training split) into a space where views of one shape lie close and different shapes far apart. The answer is
the pair of objects closest in that space; its confidence is a logistic of how much closer it is than the
runner-up pair, fitted on the calibration split (other sources than training).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from addon.solving.vision.common import VisionError, check_not_blank, clamp01, decode, logistic

WIDTH, HEIGHT = 552, 344
"""The natural size; an image of about the same aspect ratio is taken as a scaled copy."""
MODEL_PATH = Path(__file__).with_name("models") / "objects3d.npz"

MIN_AREA = 150
"""Smallest region (natural px) that counts as an object; letters are a few hundred px and more."""
MAX_OBJECTS = 12
"""More regions than this: the biggest are kept (a real challenge has 7)."""
SATURATION_MIN, VALUE_MAX, BLACK_MAX = 28, 165, 30
CROP = 40
"""Side of the square each object is scaled to before its features are taken."""
PAD = 3

CELL, BINS = 8, 9
MASK_GRID = 10

U8 = npt.NDArray[Any]
"""An image or mask (typed loosely: OpenCV's stubs return untyped arrays)."""
Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class ObjectsResult:
    points: tuple[tuple[float, float], tuple[float, float]]
    """The two objects' centres (x, y) in the image's natural pixels (what the verify scales by
    modified_img_width / natural width)."""
    confidence: float
    """0..1, calibrated on sources the model never saw: the share of answers about this sure that were right."""
    boxes: tuple[Box, ...]
    """Every object found, (x, y, width, height) in natural pixels: for debugging."""
    pair: tuple[int, int]
    """Indexes into `boxes` of the two answered objects."""


@dataclass(frozen=True, slots=True)
class Model:
    mean: npt.NDArray[np.float64]
    projection: npt.NDArray[np.float64]
    """features -> embedding (PCA then LDA, whitened within class)."""
    conf: tuple[float, float, float]
    """bias, weight of the margin (best vs runner-up distance), weight of the best distance."""
    meta: dict[str, Any]


@cache
def load_model(path: Path = MODEL_PATH) -> Model:
    with np.load(path, allow_pickle=False) as z:
        conf = z["conf"].astype(float)
        return Model(z["mean"].astype(np.float64), z["projection"].astype(np.float64),
                     (float(conf[0]), float(conf[1]), float(conf[2])), json.loads(str(z["meta"])))


def object_mask(bgr: U8) -> tuple[U8, U8]:
    """The objects' pixels (uint8 0/1) and the pasted black pixels (bool) of a BGR image."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    black_u8: U8 = (bgr.max(axis=2) < BLACK_MAX).astype(np.uint8)
    black_u8 = cv2.morphologyEx(black_u8, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    black = cv2.dilate(black_u8, np.ones((3, 3), np.uint8)).astype(bool)
    mask = ((hsv[:, :, 1] > SATURATION_MIN) | (hsv[:, :, 2] < VALUE_MAX)) & ~black
    m: U8 = mask.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return m, black


def find_objects(mask: U8) -> list[tuple[Box, U8]]:
    """(box, the region's own mask within its box) for each region of the object mask, biggest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    order = sorted((i for i in range(1, n) if stats[i, 4] >= MIN_AREA), key=lambda i: -int(stats[i, 4]))
    out: list[tuple[Box, U8]] = []
    for i in order[:MAX_OBJECTS]:
        x, y, w, h = (int(v) for v in stats[i, :4])
        out.append(((x, y, w, h), (labels[y:y + h, x:x + w] == i).astype(np.uint8)))
    return out


def hog(img: U8) -> npt.NDArray[np.float32]:
    """Histogram of oriented gradients (unsigned, BINS bins, CELL-px cells, 2x2-cell blocks L2-normalised)."""
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)
    mag, ang = cv2.cartToPolar(gx, gy)
    b = np.minimum((np.mod(ang, np.pi) * (BINS / np.pi)).astype(np.int32), BINS - 1)
    n = img.shape[0] // CELL
    cells = np.zeros((n, n, BINS), np.float32)
    cy, cx = np.divmod(np.arange(n * CELL), CELL)[0], np.divmod(np.arange(n * CELL), CELL)[0]
    idx = (cy[:, None] * n + cx[None, :]) * BINS + b[: n * CELL, : n * CELL]
    np.add.at(cells.reshape(-1), idx.reshape(-1), mag[: n * CELL, : n * CELL].reshape(-1))
    blocks = np.concatenate([cells[:-1, :-1], cells[1:, :-1], cells[:-1, 1:], cells[1:, 1:]], axis=2)
    blocks /= np.sqrt((blocks**2).sum(axis=2, keepdims=True)) + 1e-3
    return blocks.reshape(-1)


def crop_features(grey: U8, box: Box, own: U8) -> npt.NDArray[np.float32]:
    """HOG of the object's standardised grey levels and its silhouette, from a square crop around its box."""
    x, y, w, h = box
    g = grey[y:y + h, x:x + w].astype(np.float32)
    px = g[own > 0]
    mu, sd = (float(px.mean()), float(px.std()) + 8.0) if px.size else (0.0, 8.0)
    norm = np.where(own > 0, (g - mu) / sd, 0.0).astype(np.float32)
    side = max(w, h) + 2 * PAD
    canvas = np.zeros((side, side), np.float32)
    sil = np.zeros((side, side), np.float32)
    ox, oy = (side - w) // 2, (side - h) // 2
    canvas[oy:oy + h, ox:ox + w] = norm
    sil[oy:oy + h, ox:ox + w] = own
    small = cv2.resize(canvas, (CROP, CROP), interpolation=cv2.INTER_AREA)
    outline = cv2.resize(sil, (CROP, CROP), interpolation=cv2.INTER_AREA)
    grads = np.concatenate([hog(small), hog(outline)])
    silhouette = cv2.resize(sil, (MASK_GRID, MASK_GRID), interpolation=cv2.INTER_AREA).reshape(-1)
    aspect = np.array([math.log(max(w, 1) / max(h, 1))], np.float32)
    return np.concatenate([grads, silhouette, aspect]).astype(np.float32)


def prepare(image: bytes) -> tuple[U8, float, float]:
    """Decodes and checks the image; returns it as BGR uint8 at the natural size and the scale factors back."""
    d = decode(image, "3d image", min_side=64)
    aspect = d.width / d.height
    if abs(aspect / (WIDTH / HEIGHT) - 1.0) > 0.04:
        raise VisionError(f"3d image: {d.width}x{d.height} is not the 552x344 shape of this captcha")
    check_not_blank(d.rgb, None, "3d image", min_std=0.02)
    rgb = d.rgb
    if d.alpha is not None:
        a = d.alpha[:, :, None]
        rgb = rgb * a + (1.0 - a)
    bgr = cv2.cvtColor(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    if (d.width, d.height) != (WIDTH, HEIGHT):
        bgr = cv2.resize(bgr, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return bgr, d.width / WIDTH, d.height / HEIGHT


def ground_is_pale(bgr: U8, mask: U8, black: U8) -> bool:
    """This captcha's ground: most of the picture is light and grey (a photo, a ring or noise is not)."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    ground = (mask == 0) & ~black
    if ground.mean() < 0.5:
        return False
    pale = (hsv[:, :, 2] > 200) & (hsv[:, :, 1] < 30) & ground
    return float(pale.sum()) / max(1.0, float(ground.sum())) > 0.8


def embed(bgr: U8, model: Model) -> tuple[list[Box], npt.NDArray[np.float64]]:
    mask, black = object_mask(bgr)
    if not ground_is_pale(bgr, mask, black):
        raise VisionError("3d image: no pale ground (not a 3D-objects captcha)")
    objects = find_objects(mask)
    if len(objects) < 2:
        raise VisionError(f"3d image: {len(objects)} object(s) found, two at least are needed")
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    feats = np.stack([crop_features(grey, box, own) for box, own in objects]).astype(np.float64)
    return [b for b, _ in objects], (feats - model.mean) @ model.projection


def pair_distances(emb: npt.NDArray[np.float64]) -> list[tuple[float, int, int]]:
    n = emb.shape[0]
    d = np.sqrt(((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1))
    return sorted((float(d[i, j]), i, j) for i in range(n) for j in range(i + 1, n))


def confidence_of(pairs: list[tuple[float, int, int]], conf: tuple[float, float, float]) -> tuple[float, float, float]:
    """(confidence, margin, best distance): the margin compares the best pair with the best pair sharing neither
    of its objects... and with any other pair (the smaller of the two gaps, relative to the best distance)."""
    best = pairs[0][0]
    runner = pairs[1][0] if len(pairs) > 1 else best * 3 + 1
    margin = math.log((runner + 1e-6) / (best + 1e-6))
    bias, w_margin, w_best = conf
    return clamp01(logistic(bias + w_margin * margin + w_best * best)), margin, best


def solve_3d(image: bytes, model: Model | None = None) -> ObjectsResult:
    """The two objects of the same shape in a 552x344 3D-objects captcha (any format OpenCV decodes).

    Raises VisionError for input that cannot be this captcha (not an image, blank, another shape, no pale ground,
    fewer than two objects)."""
    m = model or load_model()
    bgr, sx, sy = prepare(image)
    boxes, emb = embed(bgr, m)
    pairs = pair_distances(emb)
    confidence, _, _ = confidence_of(pairs, m.conf)
    _, i, j = pairs[0]

    def centre(b: Box) -> tuple[float, float]:
        return ((b[0] + b[2] / 2) * sx, (b[1] + b[3] / 2) * sy)

    scaled = tuple((round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)) for b in boxes)
    return ObjectsResult((centre(boxes[i]), centre(boxes[j])), confidence, scaled, (i, j))
