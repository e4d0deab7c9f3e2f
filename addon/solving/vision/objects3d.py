"""3D objects ("Select 2 objects that are the same shape"): the centres of the two objects that share a shape.

Objects: a small fully convolutional detector (ONNX, run by `cv2.dnn`) looks at the picture at half size and
gives, per 8-px cell, how likely an object's centre is there and that object's box; its local maxima are the
objects (a real challenge has 7; they touch and overlap, which is why thresholding the pale ground was not enough).

Shape: each object's square crop (grey levels standardised within the object pixels so colour and lighting drop
out, plus the object mask: what is coloured or dark on the pale ground, scaled to CROP x CROP so size drops out)
goes through a small CNN that gives a probability per shape class. The answer is the pair of objects most likely
to share a class (sum over classes of p_i(c) p_j(c)); its confidence is a logistic of that score and of how far
ahead of the runner-up pair it is, fitted on the calibration split (other sources than training) and shifted so
that 0.5 is where answers are 99 % right. Both networks are trained by `scripts/train_3d.py`.
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

DETECTOR_PATH = MODELS / "objects3d_detector.onnx"
DETECTOR_WIDTH, DETECTOR_HEIGHT = WIDTH // 2, HEIGHT // 2
DETECTOR_STRIDE = 8
"""Natural pixels per cell of the detector's output map (stride 4 on its half-size input)."""
SIZE_UNIT = 32.0
"""The detector predicts log(width / SIZE_UNIT), log(height / SIZE_UNIT) in natural pixels."""
DETECTION_MIN = 0.1
"""Smallest centre score that counts as an object."""
SURE_DETECTION, SURE_OBJECTS_MIN = 0.3, 5
"""A picture with fewer than SURE_OBJECTS_MIN objects scoring SURE_DETECTION is not this captcha: every labelled
calib picture has 6 or more (7 objects each), a whirl ring stretched to this size 2."""
MAX_OBJECTS = 9
"""More objects than this: the best are kept (a real challenge has 7)."""
SATURATION_MIN, VALUE_MAX, BLACK_MAX = 28, 165, 30
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
    detector: Any
    """cv2.dnn network: (1, 3, DETECTOR_HEIGHT, DETECTOR_WIDTH) -> (1, 5, H / 4, W / 4), see decode_detections."""
    conf: tuple[float, float, float]
    """bias, weight of the best pair's log score, weight of its log margin over the runner-up."""
    meta: dict[str, Any]


def read_net(path: Path) -> Any:
    return cv2.dnn.readNetFromONNX(str(path))


@cache
def load_model(path: Path = MODEL_PATH, meta_path: Path = META_PATH, detector_path: Path = DETECTOR_PATH) -> Model:
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    c = meta["calibration"]
    return Model(read_net(path), read_net(detector_path), (float(c[0]), float(c[1]), float(c[2])), meta)


def object_mask(bgr: U8, hsv: U8 | None = None) -> tuple[U8, U8]:
    """The objects' pixels (uint8 0/1) and the pasted black pixels (bool) of a BGR image (and its HSV)."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV) if hsv is None else hsv
    black_u8: U8 = (bgr.max(axis=2) < BLACK_MAX).astype(np.uint8)
    black_u8 = cv2.morphologyEx(black_u8, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    black = cv2.dilate(black_u8, np.ones((3, 3), np.uint8)).astype(bool)
    mask = ((hsv[:, :, 1] > SATURATION_MIN) | (hsv[:, :, 2] < VALUE_MAX)) & ~black
    m: U8 = mask.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return m, black


def detector_input(bgr: U8) -> npt.NDArray[np.float32]:
    """(1, 3, DETECTOR_HEIGHT, DETECTOR_WIDTH): the picture at half size, scaled to about -2..2."""
    small = cv2.resize(bgr, (DETECTOR_WIDTH, DETECTOR_HEIGHT), interpolation=cv2.INTER_AREA)
    x = (small.astype(np.float32) * (1.0 / 255.0) - 0.5) * 4.0
    return x.transpose(2, 0, 1)[None].copy()


def decode_detections(out: npt.NDArray[np.float32]) -> list[tuple[Box, float]]:
    """The detector's (5, H, W) output (centre logit; x, y offset in the cell; log width, log height over
    SIZE_UNIT) as boxes in natural pixels with their scores, best first: the local maxima of the centre map."""
    heat = 1.0 / (1.0 + np.exp(-out[0]))
    peak = (heat == cv2.dilate(heat, np.ones((3, 3), np.float32))) & (heat >= DETECTION_MIN)
    ys, xs = np.nonzero(peak)
    order = np.argsort(-heat[ys, xs])[:MAX_OBJECTS]
    found: list[tuple[Box, float]] = []
    for y, x in zip(ys[order], xs[order], strict=True):
        ox, oy, lw, lh = (float(v) for v in out[1:, y, x])
        cx, cy = (x + ox) * DETECTOR_STRIDE, (y + oy) * DETECTOR_STRIDE
        w, h = math.exp(min(lw, 3.0)) * SIZE_UNIT, math.exp(min(lh, 3.0)) * SIZE_UNIT
        x0, y0 = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
        box = (x0, y0, max(1, min(WIDTH, round(cx + w / 2)) - x0), max(1, min(HEIGHT, round(cy + h / 2)) - y0))
        found.append((box, float(heat[y, x])))
    return found


def find_objects(bgr: U8, model: Model) -> list[tuple[Box, float]]:
    """Every object the detector finds, (box, score), best first."""
    model.detector.setInput(detector_input(bgr))
    return decode_detections(np.asarray(model.detector.forward())[0])


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


def ground_is_pale(hsv: U8, mask: U8, black: U8) -> bool:
    """This captcha's ground: most of the picture is light and grey (a photo, a ring or noise is not)."""
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
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    mask, black = object_mask(bgr, hsv)
    if not ground_is_pale(hsv, mask, black):
        raise VisionError("3d image: no pale ground (not a 3D-objects captcha)")
    objects = find_objects(bgr, model)
    sure = sum(1 for _, score in objects if score >= SURE_DETECTION)
    if sure < SURE_OBJECTS_MIN:
        raise VisionError(f"3d image: {sure} clear object(s) found, not the 7 of this captcha")
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
    fewer than five clear objects)."""
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
