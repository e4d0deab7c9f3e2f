"""Trains the 3D-objects shape embedding (addon/solving/vision/models/objects3d.npz) from the shared labelled set.

    nice -n 10 uv run python -m scripts.train_3d [--data ../shared/samples/3d-train] [--seed 20] [--out PATH]

Numpy and OpenCV only (no training dependencies). Deterministic for a given seed and data.

- Split by source (never by file: each source picture has ~3 augmented copies): the sources, sorted, shuffled
  with `random.Random(seed)`, 60 % `train`, 20 % `calib`, 20 % `test`. The split is written into the model's
  metadata (`meta.split`: source -> split) and summarised in BENCHMARKS.md.
- `train`: every labelled object that the solver's own segmentation finds (a region whose centre lies in the
  label's box) gives one crop; PCA (keeping `--pca` components) then Fisher LDA on the shape classes, whitened
  within class, gives the embedding.
- `calib`: the solver runs on each challenge; a logistic regression of right/wrong on (margin, best distance)
  gives the confidence mapping.
- `test` is left alone here: `scripts/eval_3d.py` reports on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from addon.solving.vision import objects3d as o3
from addon.solving.vision.common import VisionError

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "3d-train"
F64 = npt.NDArray[np.float64]


def load_labels(data: Path) -> dict[str, Any]:
    labels: dict[str, Any] = json.loads((data / "labels.json").read_text())["labels"]
    return labels


def split_sources(labels: dict[str, Any], seed: int) -> dict[str, str]:
    sources = sorted({v["source"] for v in labels.values()})
    random.Random(seed).shuffle(sources)
    n = len(sources)
    a, b = round(0.6 * n), round(0.8 * n)
    return {s: ("train" if k < a else "calib" if k < b else "test") for k, s in enumerate(sources)}


def read(path: Path) -> o3.U8:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: does not decode")
    return bgr


def inside(box: list[float], x: float, y: float) -> bool:
    cx, cy, w, h = box
    return abs(x - cx) <= w / 2 and abs(y - cy) <= h / 2


def crops_of(bgr: o3.U8, boxes: list[dict[str, Any]]) -> list[tuple[str, npt.NDArray[np.float32]]]:
    mask, _ = o3.object_mask(bgr)
    objects = o3.find_objects(mask)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out = []
    for label in boxes:
        hits = [(b, own) for b, own in objects if inside(label["box"], b[0] + b[2] / 2, b[1] + b[3] / 2)]
        if hits:
            b, own = max(hits, key=lambda t: int(t[1].sum()))
            out.append((label["cls"], o3.crop_features(grey, b, own)))
    return out


def fisher(x: F64, y: list[str], n_pca: int, shrink: float) -> tuple[F64, F64]:
    """mean and projection: PCA to n_pca dimensions, then LDA whitened within class."""
    mean = x.mean(axis=0)
    xc = x - mean
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pca = vt[:n_pca].T
    z = xc @ pca
    classes = sorted(set(y))
    ya = np.array(y)
    sw = np.zeros((n_pca, n_pca))
    sb = np.zeros((n_pca, n_pca))
    for c in classes:
        zc = z[ya == c]
        mu = zc.mean(axis=0)
        d = zc - mu
        sw += d.T @ d
        sb += len(zc) * np.outer(mu, mu)
    sw /= len(z)
    sb /= len(z)
    sw = (1 - shrink) * sw + shrink * np.eye(n_pca) * np.trace(sw) / n_pca
    evals, evecs = np.linalg.eigh(sw)
    white = evecs / np.sqrt(evals)
    bw = white.T @ sb @ white
    bev, bvec = np.linalg.eigh(bw)
    order = np.argsort(bev)[::-1][: len(classes) - 1]
    projection = pca @ white @ bvec[:, order]
    return mean, projection


def fit_logistic(x: F64, y: F64, l2: float = 1e-2, steps: int = 50) -> F64:
    """Newton's method for the logistic regression of y on [1, x]."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a @ w)))
        g = a.T @ (p - y) + l2 * w
        h = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(len(w))
        w -= np.linalg.solve(h, g)
    return w


def is_right(points: tuple[tuple[float, float], tuple[float, float]], label: dict[str, Any]) -> bool:
    pair = label["pair"]
    boxes = [b["box"] for b in label["boxes"] if b["cls"] == pair["cls"]]
    a = [k for k, b in enumerate(boxes) if inside(b, *points[0])]
    b = [k for k, bb in enumerate(boxes) if inside(bb, *points[1])]
    return any(i != j for i in a for j in b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--pca", type=int, default=160)
    ap.add_argument("--shrink", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=o3.MODEL_PATH)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    start = time.perf_counter()
    labels = load_labels(args.data)
    split = split_sources(labels, args.seed)
    feats: list[npt.NDArray[np.float32]] = []
    classes: list[str] = []
    for name in sorted(labels):
        if split[labels[name]["source"]] != "train":
            continue
        bgr = read(args.data / name)
        for cls, f in crops_of(bgr, labels[name]["boxes"]):
            classes.append("g hoa" if cls == "g" else cls)
            feats.append(f)
    mean, projection = fisher(np.stack(feats).astype(np.float64), classes, args.pca, args.shrink)
    model = o3.Model(mean, projection, (0.0, 1.0, 0.0), {})
    rows, right = [], []
    for name in sorted(labels):
        lab = labels[name]
        if split[lab["source"]] != "calib" or lab["pair"] is None:
            continue
        bgr = read(args.data / name)
        try:
            boxes, emb = o3.embed(bgr, model)
        except VisionError:
            continue
        pairs = o3.pair_distances(emb)
        _, margin, best = o3.confidence_of(pairs, model.conf)
        _, i, j = pairs[0]
        pts = tuple((b[0] + b[2] / 2, b[1] + b[3] / 2) for b in (boxes[i], boxes[j]))
        rows.append((margin, best))
        right.append(float(is_right(pts, lab)))  # type: ignore[arg-type]
    w = fit_logistic(np.array(rows), np.array(right))
    seconds = time.perf_counter() - start
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "calib", "test")}
    meta = {
        "seed": args.seed, "pca": args.pca, "shrink": args.shrink, "crops": len(feats),
        "classes": sorted(set(classes)), "split_counts": counts, "split": dict(sorted(split.items())),
        "labels_sha256": hashlib.sha256((args.data / "labels.json").read_bytes()).hexdigest(),
        "calib_right": float(np.mean(right)), "train_seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as fh:
        np.savez_compressed(fh, mean=mean.astype(np.float32), projection=projection.astype(np.float32),
                            conf=w, meta=np.array(json.dumps(meta)))
    print(f"{len(feats)} crops from {counts['train']} train sources; calib right {np.mean(right):.3f} "
          f"on {len(right)}; conf {w.round(3).tolist()}; {seconds:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
