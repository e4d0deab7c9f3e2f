"""3D objects ("Select 2 objects that are the same shape"): the centres of the two objects that share a shape.

Objects: the ground is pale and nearly grey, its shadows light grey; an object is what is coloured (saturation) or
dark. Pure-black pixels are left out (the training copies have black rectangles pasted on them; a real challenge
has none). Connected regions of that mask, big enough, are the objects; a region is first cut where its colour
changes sharply (two touching objects of different colours), each part growing back over the cut.

Shape: each object's square crop (grey levels standardised within the object pixels so colour and lighting drop
out, plus the object mask, scaled to CROP x CROP so size drops out) goes through a small CNN (ONNX, run by
`cv2.dnn`; trained by `scripts/train_3d.py` on the ground-truth boxes of the training split) that gives a
probability per shape class. The answer is the pair of objects most likely to share a class (sum over classes of
p_i(c) p_j(c)); its confidence is a logistic of that score and of how far ahead of the runner-up pair it is, fitted
on the calibration split (other sources than training) and shifted so that 0.5 is where answers are 99 % right.
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
MODELS = Path(__file__).with_name("models")
MODEL_PATH = MODELS / "objects3d.onnx"
META_PATH = MODELS / "objects3d.json"

MIN_AREA = 150
"""Smallest region (natural px) that counts as an object; letters are a few hundred px and more."""
MAX_OBJECTS = 12
"""More regions than this: the biggest are kept (a real challenge has 7)."""
SATURATION_MIN, VALUE_MAX, BLACK_MAX = 28, 165, 30
CHROMA_EDGE = 10.0
"""A jump of the Lab (a, b) colour this big between neighbours is the border of two touching objects."""
CROP = 48
"""Side of the square each object is scaled to for the network."""
CONTEXT = 1.15
"""The crop's side over the box's longer side."""
GREY_WEIGHTS = (0.114, 0.587, 0.299)
"""B, G, R weights of the grey level the network sees (training varies them so colour does not matter)."""

U8 = npt.NDArray[Any]
"""An image or mask (typed loosely: OpenCV's stubs return untyped arrays)."""
Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class ObjectsResult:
    points: tuple[tuple[float, float], tuple[float, float]]
    """The two objects' centres (x, y) in the image's natural pixels (what the verify scales by
    modified_img_width / natural width)."""
    confidence: float
    """0..1, fitted on sources the model never saw (calib split) as a logistic of the pair's score and margin,
    shifted so that answers at 0.5 and above were 99 % right there; below 0.5 it is not a share right."""
    boxes: tuple[Box, ...]
    """Every object found, (x, y, width, height) in natural pixels: for debugging."""
    pair: tuple[int, int]
    """Indexes into `boxes` of the two answered objects."""


@dataclass(frozen=True, slots=True)
class Model:
    net: Any
    """cv2.dnn network: (N, 2, CROP, CROP) float32 -> (N, classes) logits."""
    conf: tuple[float, float, float]
    """bias, weight of the best pair's log score, weight of its log margin over the runner-up."""
    meta: dict[str, Any]


def read_net(path: Path) -> Any:
    return cv2.dnn.readNetFromONNX(str(path))


@cache
def load_model(path: Path = MODEL_PATH, meta_path: Path = META_PATH) -> Model:
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    c = meta["calibration"]
    return Model(read_net(path), (float(c[0]), float(c[1]), float(c[2])), meta)


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


def colour_cuts(bgr: U8) -> U8:
    """Pixels (bool) where the (a, b) colour changes sharply: the borders between touching objects."""
    lab = cv2.cvtColor(cv2.GaussianBlur(bgr, (3, 3), 0), cv2.COLOR_BGR2LAB).astype(np.float32)
    edge: U8 = np.zeros(bgr.shape[:2], np.float32)
    for ch in (1, 2):
        gx: U8 = cv2.Sobel(lab[:, :, ch], cv2.CV_32F, 1, 0, ksize=3) / 4.0
        gy: U8 = cv2.Sobel(lab[:, :, ch], cv2.CV_32F, 0, 1, ksize=3) / 4.0
        edge = edge + gx * gx + gy * gy
    return np.sqrt(edge) > CHROMA_EDGE


def find_objects(mask: U8, bgr: U8 | None = None) -> list[tuple[Box, U8]]:
    """(box, the region's own mask within its box) for each object, biggest first. With the image, regions are cut
    along sharp colour changes first, and every cut pixel joins the nearest part of its own region."""
    _, regions = cv2.connectedComponents(mask, connectivity=8)
    labels = regions
    if bgr is not None:
        core = (mask > 0) & ~colour_cuts(bgr)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(core.astype(np.uint8), connectivity=4)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, 4] >= MIN_AREA // 2
        markers = np.where(keep[lab], lab, 0).astype(np.int32)
        if markers.any():
            _, nearest = cv2.distanceTransformWithLabels((markers == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                         labelType=cv2.DIST_LABEL_PIXEL)
            ys, xs = np.nonzero(markers)
            marker_of = np.zeros(int(nearest.max()) + 1, np.int32)
            region_of = np.zeros_like(marker_of)
            marker_of[nearest[ys, xs]] = markers[ys, xs]
            region_of[nearest[ys, xs]] = regions[ys, xs]
            same = (mask > 0) & (region_of[nearest] == regions)
            labels = np.where(same, marker_of[nearest], 0).astype(np.int32)
            orphan = (mask > 0) & (labels == 0)  # a region with no part big enough stays whole
            labels[orphan] = regions[orphan] + n
    found: list[tuple[Box, U8]] = []
    for v in np.unique(labels[labels > 0]):
        k, parts, stats, _ = cv2.connectedComponentsWithStats((labels == v).astype(np.uint8), connectivity=8)
        for i in range(1, k):
            if stats[i, 4] >= MIN_AREA:
                x, y, w, h = (int(q) for q in stats[i, :4])
                found.append(((x, y, w, h), (parts[y:y + h, x:x + w] == i).astype(np.uint8)))
    found.sort(key=lambda t: -int(t[1].sum()))
    return found[:MAX_OBJECTS]


def crop_patch(bgr: U8, mask: U8, box: tuple[float, float, float, float], *, scale: float = 1.0,
               angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[U8, U8]:
    """The square around a box (x, y, w, h), as CROP x CROP BGR float32 and mask float32; outside the image is
    ground (mask 0). scale/angle/shift (fractions of the side) jitter it for training."""
    x, y, w, h = box
    side = max(w, h) * CONTEXT + 4.0
    cx, cy = x + w / 2 + shift[0] * side, y + h / 2 + shift[1] * side
    k = CROP / (side * scale)
    a = cv2.getRotationMatrix2D((cx, cy), angle, k)
    a[0, 2] += CROP / 2 - cx
    a[1, 2] += CROP / 2 - cy
    img = cv2.warpAffine(bgr, a, (CROP, CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(245, 245, 245))
    m = cv2.warpAffine(mask * np.uint8(255), a, (CROP, CROP), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return img.astype(np.float32), m.astype(np.float32) / 255.0


def net_input(img: U8, m: U8, weights: tuple[float, float, float] = GREY_WEIGHTS,
              invert: bool = False) -> npt.NDArray[np.float32]:
    """(2, CROP, CROP): the grey level standardised over the object's pixels (0 elsewhere), and the mask."""
    g = img[:, :, 0] * weights[0] + img[:, :, 1] * weights[1] + img[:, :, 2] * weights[2]
    on = m > 0.5
    px = g[on]
    mu, sd = (float(px.mean()), float(px.std()) + 8.0) if px.size else (0.0, 8.0)
    norm = (g - mu) / sd * m
    if invert:
        norm = -norm
    return np.stack([norm, m]).astype(np.float32)


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


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classify(bgr: U8, model: Model) -> tuple[list[Box], npt.NDArray[np.float64]]:
    """The objects' boxes and each one's class probabilities."""
    mask, black = object_mask(bgr)
    if not ground_is_pale(bgr, mask, black):
        raise VisionError("3d image: no pale ground (not a 3D-objects captcha)")
    objects = find_objects(mask, bgr)
    if len(objects) < 2:
        raise VisionError(f"3d image: {len(objects)} object(s) found, two at least are needed")
    boxes = [b for b, _ in objects]
    batch = np.stack([net_input(*crop_patch(bgr, mask, b)) for b in boxes])
    model.net.setInput(batch)
    return boxes, softmax(np.asarray(model.net.forward()).reshape(len(boxes), -1))


def pair_scores(probs: npt.NDArray[np.float64]) -> list[tuple[float, int, int]]:
    """(probability the two share a class, i, j) for every pair, most likely first."""
    same = probs @ probs.T
    n = probs.shape[0]
    return sorted(((float(same[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), reverse=True)


def confidence_features(pairs: list[tuple[float, int, int]]) -> tuple[float, float]:
    """(log of the best pair's score, log of how many times the runner-up's score it is)."""
    best = pairs[0][0]
    runner = pairs[1][0] if len(pairs) > 1 else 0.0
    return math.log(best + 1e-6), math.log((best + 1e-6) / (runner + 1e-6))


def confidence_of(pairs: list[tuple[float, int, int]], conf: tuple[float, float, float]) -> float:
    f_best, f_margin = confidence_features(pairs)
    return clamp01(logistic(conf[0] + conf[1] * f_best + conf[2] * f_margin))


def solve_3d(image: bytes, model: Model | None = None) -> ObjectsResult:
    """The two objects of the same shape in a 552x344 3D-objects captcha (any format OpenCV decodes).

    Raises VisionError for input that cannot be this captcha (not an image, blank, another shape, no pale ground,
    fewer than two objects)."""
    m = model or load_model()
    bgr, sx, sy = prepare(image)
    boxes, probs = classify(bgr, m)
    pairs = pair_scores(probs)
    confidence = confidence_of(pairs, m.conf)
    _, i, j = pairs[0]

    def centre(b: Box) -> tuple[float, float]:
        return ((b[0] + b[2] / 2) * sx, (b[1] + b[3] / 2) * sy)

    scaled = tuple((round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)) for b in boxes)
    return ObjectsResult((centre(boxes[i]), centre(boxes[j])), confidence, scaled, (i, j))
