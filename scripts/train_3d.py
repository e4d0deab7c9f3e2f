"""Trains the 3D-objects detector and shape classifier (addon/solving/vision/models/objects3d_detector.onnx,
objects3d.onnx and objects3d.json).

The networks are trained with PyTorch, which the project does not depend on (the addon runs the ONNX file with
OpenCV's `cv2.dnn`). Train in a separate Python 3.11 venv with the CPU wheel, from the repository root:

    python3.11 -m venv /tmp/train311
    /tmp/train311/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
        onnx numpy opencv-python-headless pillow        # or `torch` from PyPI's CPU index elsewhere
    PYTHONPATH=. nice -n 10 /tmp/train311/bin/python -m scripts.train_3d [--data ../shared/samples/3d-train]
        [--seed 20] [--epochs 30] [--detector-epochs 24] [--only detector|classifier]

Deterministic for a given seed, data and torch build (2 threads).

- Split by source (never by file: each source picture has ~3 augmented copies): the sources, sorted, shuffled
  with `random.Random(seed)`, 60 % `train`, 20 % `calib`, 20 % `test`. The split is written into the metadata
  (`split`: source -> split) and summarised in BENCHMARKS.md.
- Recombined pictures: a source's copies are pixel-aligned and differ only in where the black rectangles were
  pasted, so the per-pixel maximum over them is the source picture nearly without rectangles (0.3 % of its pixels
  stay black, against 12 % in one copy): what a real challenge looks like. Each split uses its own sources' copies
  and recombined pictures; the test split's are only ever evaluated (`scripts/eval_3d.py`).
- Detector (`train`): a small fully convolutional network on the half-size picture gives, per 8-px cell, a centre
  score (focal loss against Gaussians round the labelled centres, as CenterNet) and the box's offset and size (L1
  at the centres); augmented by mirroring (objects' shapes do not matter here), a channel shuffle and brightness.
- Classifier (`train`): one crop per labelled object, from its ground-truth box (the detector's boxes are only
  used at inference), augmented each epoch: scale, rotation, shift, random grey weights of B/G/R and inversion
  (the pair differs in colour), black rectangles erasing part of it. A 4-conv CNN, softmax over the shape classes
  ("g" and "g hoa" are one class: they look alike).
- `calib`: the solver runs on each challenge (copies and recombined pictures) with the exported networks; a
  logistic regression of right/wrong on (log best pair score, log margin over the runner-up), shifted so that the
  calib answers at confidence >= 0.5 are 99 % right, gives the confidence mapping.
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
PROBE_SEED = 0
TARGET_RIGHT = 0.99
"""Share right that the answers at confidence >= 0.5 should have on calib."""


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


def class_of(cls: str) -> str:
    return "g hoa" if cls == "g" else cls


def gt_box(label: dict[str, Any]) -> tuple[float, float, float, float]:
    cx, cy, w, h = label["box"]
    return cx - w / 2, cy - h / 2, w, h


Challenge = tuple[str, o3.U8, dict[str, Any]]
"""(name: a file, or `<source> recombined`; the picture as BGR; its label)."""


def recombine(copies: list[o3.U8]) -> o3.U8:
    """The source picture from its pixel-aligned copies: each pasted rectangle is black in one copy only."""
    return np.max(np.stack(copies), axis=0)


def challenges(data: Path, labels: dict[str, Any], split: dict[str, str], which: str, *,
               copies: bool = True, recombined: bool = True) -> list[Challenge]:
    """The split's challenges: its files as they are, and one recombined picture per source."""
    by_source: dict[str, list[str]] = {}
    for name in sorted(labels):
        if split[labels[name]["source"]] == which:
            by_source.setdefault(labels[name]["source"], []).append(name)
    out: list[Challenge] = []
    for source, names in sorted(by_source.items()):
        pictures = [read(data / n) for n in names]
        if copies:
            out += [(n, p, labels[n]) for n, p in zip(names, pictures, strict=True)]
        if recombined:
            out.append((f"{source} recombined", recombine(pictures), labels[names[0]]))
    return out


def build_detector() -> Any:
    import torch  # type: ignore[import-not-found, unused-ignore]
    import torch.nn as nn  # type: ignore[import-not-found, unused-ignore]

    def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    class Detector(nn.Module):  # type: ignore[misc, unused-ignore]
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*conv(3, 16, 2), *conv(16, 24), *conv(24, 32, 2), *conv(32, 40),
                                      *conv(40, 40, dilation=2), *conv(40, 48, dilation=4), *conv(48, 48, dilation=2),
                                      *conv(48, 40))
            self.centre = nn.Conv2d(40, 1, 1)
            self.box = nn.Conv2d(40, 4, 1)
            self.centre.bias.data.fill_(-2.2)

        def forward(self, x: Any) -> Any:
            f = self.body(x)
            return torch.cat([self.centre(f), self.box(f)], 1)

    return Detector()


def detector_targets(boxes: list[list[float]], mirrored: bool) -> tuple[F64, F64, F64]:
    """Centre map (a Gaussian per object, 1 at its centre's cell), box targets (offset in the cell, log size) and
    the centres' cells, on the detector's output grid."""
    gw, gh = o3.DETECTOR_WIDTH // 4, o3.DETECTOR_HEIGHT // 4
    heat, box, at = np.zeros((gh, gw)), np.zeros((4, gh, gw)), np.zeros((gh, gw))
    ys, xs = np.mgrid[0:gh, 0:gw]
    for cx, cy, w, h in boxes:
        ox, oy = (o3.WIDTH - cx if mirrored else cx) / o3.DETECTOR_STRIDE, cy / o3.DETECTOR_STRIDE
        ix, iy = int(ox), int(oy)
        if not (0 <= ix < gw and 0 <= iy < gh):
            continue
        sigma = max(0.6, min(w, h) / o3.DETECTOR_STRIDE / 6)
        heat = np.maximum(heat, np.exp(-((xs - ox + 0.5) ** 2 + (ys - oy + 0.5) ** 2) / (2 * sigma * sigma)))
        heat[iy, ix] = 1.0
        box[:, iy, ix] = (ox - ix, oy - iy, np.log(w / o3.SIZE_UNIT), np.log(h / o3.SIZE_UNIT))
        at[iy, ix] = 1.0
    return heat, box, at


def detector_sample(bgr: o3.U8, label: dict[str, Any], rng: np.random.Generator) -> tuple[F64, F64, F64, F64]:
    mirrored = bool(rng.random() < 0.5)
    img = bgr[:, ::-1] if mirrored else bgr
    img = img[:, :, rng.permutation(3)].astype(np.float32) * float(rng.uniform(0.85, 1.1)) + float(rng.uniform(-15, 15))
    x = o3.detector_input(np.clip(img, 0, 255).astype(np.uint8))[0]
    return (x, *detector_targets([b["box"] for b in label["boxes"]], mirrored))


def train_detector(train: list[Challenge], epochs: int, seed: int) -> Any:
    import torch  # type: ignore[import-not-found, unused-ignore]
    import torch.nn.functional as F  # type: ignore[import-not-found, unused-ignore]

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    net = build_detector()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 16
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * -(-len(train) // batch))

    def focal(logit: Any, heat: Any) -> Any:
        p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
        centre = heat.eq(1).float()
        loss = torch.log(p) * (1 - p) ** 2 * centre + torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - centre)
        return -loss.sum() / centre.sum().clamp(min=1)

    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        total = 0.0
        order = rng.permutation(len(train))
        for k in range(0, len(train), batch):
            parts = [detector_sample(train[i][1], train[i][2], rng) for i in order[k:k + batch]]
            x, heat, box, at = (torch.from_numpy(np.stack([p[q] for p in parts]).astype(np.float32)) for q in range(4))
            out = net(x)
            loss = focal(out[:, 0], heat) + (F.l1_loss(out[:, 1:], box, reduction="none") * at[:, None]).sum() / \
                at.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(parts)
        print(f"detector epoch {epoch + 1}/{epochs}: loss {total / len(train):.3f}, "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    net.eval()
    return net


def detector_recall(detector: Any, items: list[Challenge]) -> float:
    """Share of labelled objects whose nearest detection (by centre) lies inside the object's box and is nobody
    else's nearest."""
    model = o3.Model(None, detector, (0.0, 1.0, 0.0), {})
    hit = total = 0
    for _, bgr, label in items:
        found = [(b[0] + b[2] / 2, b[1] + b[3] / 2) for b, _ in o3.find_objects(bgr, model)]
        nearest = []
        for ob in label["boxes"]:
            cx, cy = ob["box"][:2]
            d = [(x - cx) ** 2 + (y - cy) ** 2 for x, y in found]
            k = int(np.argmin(d)) if d else -1
            nearest.append(k if k >= 0 and inside(ob["box"], *found[k]) else -1)
        hit += sum(1 for k in nearest if k >= 0 and nearest.count(k) == 1)
        total += len(nearest)
    return hit / max(total, 1)


def augmented(bgr: o3.U8, mask: o3.U8, box: tuple[float, float, float, float],
              rng: np.random.Generator) -> npt.NDArray[np.float32]:
    img, m = o3.crop_patch(bgr, mask, box, scale=float(rng.uniform(0.85, 1.2)), angle=float(rng.uniform(-15, 15)),
                           shift=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))))
    w = rng.dirichlet((1.5, 1.5, 1.5))
    x = o3.net_input(img, m, (float(w[0]), float(w[1]), float(w[2])), invert=bool(rng.random() < 0.3))
    if rng.random() < 0.5:  # a pasted black rectangle: nothing there, in both channels
        eh, ew = (int(v) for v in rng.integers(6, o3.CROP // 2, size=2))
        ey, ex = (int(v) for v in rng.integers(0, o3.CROP - 6, size=2))
        x[:, ey:ey + eh, ex:ex + ew] = 0.0
    return x


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


def build_net(n_classes: int) -> Any:
    import torch.nn as nn  # type: ignore[import-not-found, unused-ignore]

    def block(cin: int, cout: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(2, 24), *block(24, 48), *block(48, 64), *block(64, 96), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(96 * (o3.CROP // 16) ** 2, n_classes))


def train_net(samples: list[tuple[o3.U8, o3.U8, tuple[float, float, float, float], int]], n_classes: int,
              epochs: int, seed: int) -> Any:
    import torch  # type: ignore[import-not-found, unused-ignore]

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    net = build_net(n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 128
    steps = epochs * ((len(samples) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack([augmented(b, m, box, rng) for b, m, box, _ in samples]))
        y = torch.tensor([c for *_, c in samples])
        order = torch.from_numpy(rng.permutation(len(samples)))
        net.train()
        total, right = 0.0, 0
        for k in range(0, len(samples), batch):
            idx = order[k:k + batch]
            out = net(x[idx])
            loss = loss_fn(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
            right += int((out.argmax(1) == y[idx]).sum())
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(samples):.3f}, train acc {right / len(samples):.3f}, "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    net.eval()
    return net


def export(net: Any, path: Path, shape: tuple[int, ...], names: tuple[str, str]) -> None:
    import torch  # type: ignore[import-not-found, unused-ignore]

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, (torch.zeros(*shape),), str(path), input_names=[names[0]], output_names=[names[1]],
                      opset_version=13, dynamic_axes={names[0]: {0: "n"}, names[1]: {0: "n"}}, dynamo=False)


def probe(net: Any, path: Path, shape: tuple[int, ...]) -> dict[str, Any]:
    """A fixed input's output from torch, checked against cv2.dnn on the exported file (here, and by the tests in
    the project's own environment): the ONNX file computes what was trained."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    x = np.random.default_rng(PROBE_SEED).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    cvnet = o3.read_net(path)
    cvnet.setInput(x)
    got = np.asarray(cvnet.forward())
    if not np.allclose(want, got, atol=1e-3):
        raise SystemExit(f"{path}: cv2.dnn differs from torch by {np.abs(want - got).max():.2g}")
    flat = want.reshape(-1)
    return {"seed": PROBE_SEED, "shape": list(x.shape), "sample": flat[:: max(1, flat.size // 64)].round(5).tolist()}


def crop_accuracy(model: o3.Model, items: list[Challenge], classes: list[str]) -> float:
    """Share of ground-truth crops (no augmentation) the network puts in their own class."""
    right = n = 0
    for _, bgr, label in items:
        mask, _ = o3.object_mask(bgr)
        boxes = label["boxes"]
        x = np.stack([o3.net_input(*o3.crop_patch(bgr, mask, gt_box(b))) for b in boxes])
        model.net.setInput(x)
        got = np.asarray(model.net.forward()).argmax(1)
        right += sum(classes[int(g)] == class_of(b["cls"]) for g, b in zip(got, boxes, strict=True))
        n += len(boxes)
    return right / max(n, 1)


def calibrate(model: o3.Model, items: list[Challenge]) -> tuple[F64, float]:
    """The confidence mapping (logistic of right/wrong on the solver's own confidence features) fitted on the calib
    challenges with the exported networks, and the share right there."""
    rows, right = [], []
    for _, bgr, label in items:
        if label["pair"] is None:
            continue
        try:
            boxes, probs = o3.classify(bgr, model)
        except VisionError:
            rows.append((-20.0, 0.0))
            right.append(0.0)
            continue
        pairs = o3.pair_scores(probs)
        _, i, j = pairs[0]
        pts = tuple((b[0] + b[2] / 2, b[1] + b[3] / 2) for b in (boxes[i], boxes[j]))
        rows.append(o3.confidence_features(pairs))
        right.append(float(is_right(pts, label)))  # type: ignore[arg-type]
    x, y = np.array(rows), np.array(right)
    w = fit_logistic(x, y)
    # Then shift it so that 0.5 (the addon's default threshold) is where calib's answers start being
    # TARGET_RIGHT right: the largest confident set that is at least that right.
    z = w[0] + x @ w[1:]
    order = np.argsort(-z)
    share = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    ok = np.nonzero(share >= TARGET_RIGHT)[0]
    cut = float(z[order][ok.max()]) if ok.size else float(z.max()) + 1.0
    w[0] -= cut - 1e-6
    return w, float(np.mean(right))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=30, help="the classifier's")
    ap.add_argument("--detector-epochs", type=int, default=24)
    ap.add_argument("--only", choices=("detector", "classifier"),
                    help="train one network and keep the other (the confidence mapping is refitted either way)")
    ap.add_argument("--out", type=Path, default=o3.MODEL_PATH)
    ap.add_argument("--calibrate-only", action="store_true",
                    help="keep the trained networks, refit only the confidence mapping (needs no torch: "
                         "`uv run python -m scripts.train_3d --calibrate-only`)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    start = time.perf_counter()
    labels = load_labels(args.data)
    split = split_sources(labels, args.seed)
    classes = sorted({class_of(b["cls"]) for v in labels.values() for b in v["boxes"]})
    meta_path = args.out.with_suffix(".json")
    detector_path = args.out.with_name(o3.DETECTOR_PATH.name)
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    train = challenges(args.data, labels, split, "train")
    calib = challenges(args.data, labels, split, "calib")
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "calib", "test")}
    meta.update({"seed": args.seed, "classes": classes, "split_counts": counts, "split": dict(sorted(split.items())),
                 "labels_sha256": hashlib.sha256((args.data / "labels.json").read_bytes()).hexdigest()})
    if not args.calibrate_only and args.only in (None, "detector"):
        t0 = time.perf_counter()
        detector = train_detector(train, args.detector_epochs, args.seed)
        shape = (1, 3, o3.DETECTOR_HEIGHT, o3.DETECTOR_WIDTH)
        export(detector, detector_path, shape, ("image", "maps"))
        meta["detector"] = {"epochs": args.detector_epochs, "pictures": len(train),
                            "train_seconds": round(time.perf_counter() - t0, 1),
                            "probe": probe(detector, detector_path, shape)}
    if not args.calibrate_only and args.only in (None, "classifier"):
        t0 = time.perf_counter()
        samples = []
        for _, bgr, label in train:
            mask, _ = o3.object_mask(bgr)
            for b in label["boxes"]:
                samples.append((bgr, mask, gt_box(b), classes.index(class_of(b["cls"]))))
        net = train_net(samples, len(classes), args.epochs, args.seed)
        shape = (2, 2, o3.CROP, o3.CROP)
        export(net, args.out, shape, ("crop", "logits"))
        meta.update({"epochs": args.epochs, "crop": o3.CROP, "crops": len(samples),
                     "train_seconds": round(time.perf_counter() - t0, 1), "probe": probe(net, args.out, shape)})
    model = o3.Model(o3.read_net(args.out), o3.read_net(detector_path), (0.0, 1.0, 0.0), {})
    w, calib_right = calibrate(model, calib)
    meta.update({
        "calibration": [float(v) for v in w], "calibration_features": ["1", "log best pair score", "log margin"],
        "calibration_target_right_at_0.5": TARGET_RIGHT, "calib_right": calib_right,
        "calib_crop_accuracy": crop_accuracy(model, calib, classes),
        "calib_detector_recall": detector_recall(model.detector, calib),
    })
    meta.pop("chroma_edge", None)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"calib crops right {meta['calib_crop_accuracy']:.3f}; detector recall {meta['calib_detector_recall']:.3f}; "
          f"calib right {calib_right:.3f}; conf {w.round(3).tolist()}; {time.perf_counter() - start:.0f} s -> "
          f"{args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
