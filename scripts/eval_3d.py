"""Accuracy, calibration and speed of the local 3D-objects solver (addon/solving/vision/objects3d.py).

    uv run python -m scripts.eval_3d [--data ../shared/samples/3d-train] [--threshold 0.5] [--markdown]

Per split of the model's own split by source (`meta.split`, written by scripts/train_3d.py), for the files as they
are (with their pasted black rectangles) and for the recombined source pictures (without them, as real challenges
are; see scripts/train_3d.py): right (each point in a different box of the duplicated shape), answered at the
threshold, right when answered, a reliability table,
time per solve (decode included, one core) and the confusions left (true pair class -> the classes answered).
Then images that are not this captcha (a whirl ring, a slide-sized noise picture, a blank, a photo-like
landscape as a slide background) given as 3d: refused
(VisionError) or low confidence, never a confident answer.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from addon.solving.vision import objects3d as o3
from addon.solving.vision.common import VisionError
from scripts.train_3d import DEFAULT_DATA, challenges, inside, is_right, load_labels
from tests.kit.synth import landscape

DEFAULT_THRESHOLD = 0.5
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001)
SAMPLES = DEFAULT_DATA.parent


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def foreign_images() -> dict[str, bytes]:
    """Pictures that are not a 3D-objects captcha, at its size."""
    out: dict[str, bytes] = {"blank": _png(Image.new("RGB", (552, 344), (243, 244, 246))),
                             "noise": _png(Image.effect_noise((552, 344), 60).convert("RGB"))}
    for seed in (1, 2):
        out[f"landscape {seed}"] = _png(landscape(random.Random(seed), (552, 344), 0.45).convert("RGB"))
    for name in ("whirl-png-outer-347.png", "whirl-jpeg-outer-347.jpg"):
        path = SAMPLES / name
        if path.exists():
            ring = Image.open(path).convert("RGB")
            out[f"{name} resized"] = _png(ring.resize((552, 344)))
            padded = Image.new("RGB", (552, 344), (255, 255, 255))
            padded.paste(ring, ((552 - 347) // 2, 0))
            out[f"{name} padded"] = _png(padded)
    return out


def evaluate(data: Path, threshold: float, markdown: bool) -> str:
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    model = o3.load_model()
    split: dict[str, str] = model.meta["split"]
    labels = load_labels(data)
    rows: dict[str, list[tuple[bool, float, float]]] = defaultdict(list)
    confusions: dict[str, Counter[str]] = defaultdict(Counter)
    for which in ("train", "calib", "test"):
        for name, bgr, lab in challenges(data, labels, split, which):
            if lab["pair"] is None:
                continue
            recombined = name.endswith(" recombined")
            s = f"{which}, recombined" if recombined else which
            raw = cv2.imencode(".png", bgr)[1].tobytes() if recombined else (data / name).read_bytes()
            start = time.perf_counter()
            try:
                r = o3.solve_3d(raw, model)
            except VisionError:
                rows[s].append((False, 0.0, time.perf_counter() - start))
                continue
            dt = time.perf_counter() - start
            ok = is_right(r.points, lab)
            rows[s].append((ok, r.confidence, dt))
            if not ok and which == "test":
                got = [next((b["cls"] for b in lab["boxes"] if inside(b["box"], *p)), "-") for p in r.points]
                confusions[lab["pair"]["cls"]]["+".join(sorted(got))] += 1

    def table(title: str, header: list[str], body: list[list[str]]) -> str:
        if markdown:
            lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"
        return "\n".join([title, "  ".join(header), *("  ".join(r) for r in body)]) + "\n"

    out = []
    body = []
    for s in ("train", "train, recombined", "calib", "calib, recombined", "test", "test, recombined"):
        rs = rows[s]
        if not rs:
            continue
        right = [ok for ok, _, _ in rs]
        answered = [ok for ok, c, _ in rs if c >= threshold]
        ms = [1000 * dt for _, _, dt in rs]
        body.append([s, str(len(rs)), f"{100 * np.mean(right):.1f} %", f"{100 * len(answered) / len(rs):.1f} %",
                     f"{100 * np.mean(answered):.1f} %" if answered else "-",
                     f"{np.percentile(ms, 50):.1f}", f"{np.percentile(ms, 99):.1f}"])
    out.append(table(f"3d: by split (threshold {threshold})",
                     ["split", "challenges", "right", "answered", "right when answered", "p50 ms", "p99 ms"], body))
    rel = []
    for s in ("calib", "calib, recombined", "test", "test, recombined"):
        for lo, hi in itertools.pairwise(BINS):
            sel = [ok for ok, c, _ in rows[s] if lo <= c < hi]
            if sel:
                rel.append([s, f"{lo:.1f}-{min(hi, 1.0):.1f}", str(len(sel)), f"{100 * np.mean(sel):.1f} %"])
    out.append(table("3d: reliability (confidence bin -> share right)", ["split", "confidence", "n", "right"], rel))
    conf_rows = [[k, ", ".join(f"{g} x{n}" for g, n in v.most_common(3)), str(sum(v.values()))]
                 for k, v in sorted(confusions.items(), key=lambda kv: -sum(kv[1].values()))[:12]]
    out.append(table("3d: wrong answers on test (pair class -> classes answered)", ["pair", "answered", "n"],
                     conf_rows))
    bad = []
    for name, raw in foreign_images().items():
        try:
            r = o3.solve_3d(raw, model)
            bad.append([name, f"confidence {r.confidence:.2f}"])
        except VisionError as e:
            bad.append([name, f"refused: {e}"])
    out.append(table("3d: not a 3d captcha", ["image", "outcome"], bad))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    print(evaluate(args.data, args.threshold, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
