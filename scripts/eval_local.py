"""Accuracy, confidence calibration and speed of the local vision solvers (addon/solving/vision) on the evaluation set.

    uv run python -m scripts.eval_local [--set DIR] [--quick] [--markdown] [--threshold 0.5] [--photos FILE ...]
    uv run python -m scripts.eval_local --fit [--set DIR]

Without ``--set`` the set is built first (``scripts/evalset.py``, seed 1) in a temporary directory and removed after;
``--quick`` builds a quarter of it. Reports on the ``eval`` split only (the ``tune`` split is where the confidence
mapping and the thresholds were fitted; its accuracy is printed on one line for reference):

- accuracy per kind and source/era: rotate within ±4° (circular), slide within ±3 natural px; slides with the
  piece, from the background alone with tip_y, and from the background alone without tip_y;
- the confidence calibration: accuracy per confidence bin, and above/below the threshold;
- bad inputs: the share refused (VisionError) or answered with a confidence under 0.2, and under the threshold;
- time per solve (decode included) on one core: ``cv2.setNumThreads(1)`` and the process pinned to one CPU.

``--fit`` fits the logistic confidence mappings on the tune split and prints the constants to paste into
``rotate.py``/``slide.py``; the background-only one on both its paths (with and without tip_y), its bias then
shifted so that the tune answers at 0.5 or more are ``GAP_RIGHT`` (99 %) right.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from addon.solving.vision import VisionError
from addon.solving.vision import rotate as vrotate
from addon.solving.vision import slide as vslide
from scripts import evalset

ROTATE_TOLERANCE = 4.0
SLIDE_TOLERANCE = 3.0
DEFAULT_THRESHOLD = 0.5
LOW_CONFIDENCE = 0.2
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001)
GAP_RIGHT = 0.99
"""Share right that the background-only confidence's 0.5 is fitted to on the tune split."""


@dataclass(frozen=True, slots=True)
class Outcome:
    split: str
    path: str
    """rotate | slide+piece | slide-gap | slide-gap-notip | bad"""
    group: str
    correct: bool
    error: float | None
    confidence: float | None
    refused: str | None
    seconds: float
    features: tuple[float, ...]


def _circular(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, str | None]:
    start = time.perf_counter()
    try:
        result = fn()
    except VisionError as e:
        return None, time.perf_counter() - start, str(e)
    return result, time.perf_counter() - start, None


def _rotate(files: dict[str, bytes]) -> vrotate.RotateAnalysis:
    return vrotate.analyse(files["inner"], files["outer"])


def _slide(files: dict[str, bytes], piece: bytes | None, tip_y: float | None) -> vslide.SlideAnalysis:
    return vslide.analyse(files["background"], piece, tip_y)


def run_items(root: Path, items: Iterable[dict[str, Any]]) -> list[Outcome]:
    out: list[Outcome] = []
    for item in items:
        files = {role: (root / name).read_bytes() for role, name in item["files"].items()}
        split, source = item["split"], item["source"]
        if item["kind"] == "rotate":
            r, dt, refused = _timed(partial(_rotate, files))
            truth = item["angle"]
            err = _circular(r.angle, truth) if r is not None and truth is not None else None
            out.append(Outcome(split, "rotate", f"{source}/{item['era']}", err is not None and err <= ROTATE_TOLERANCE,
                               err, r.confidence if r else None, refused, dt, (r.margin, r.cost) if r else ()))
        elif item["kind"] == "slide":
            runs = [("slide+piece", files["piece"], item["tip_y"])] if "piece" in files else []
            if item.get("shape_offset", 0) == 0:
                # without the piece the answer is the shape's left edge: only where that is the box's
                runs += [("slide-gap", None, item["tip_y"]), ("slide-gap-notip", None, None)]
            for path, piece, tip in runs:
                s, dt, refused = _timed(partial(_slide, files, piece, tip))
                truth = item["gap_x"]
                err = abs(s.x - truth) if s is not None and truth is not None else None
                group = f"{source}/{item.get('style', 'kit')}" + ("/offset" if item.get("shape_offset") else "")
                features = () if s is None else (s.margin, s.score) if s.with_piece else (
                    s.margin, s.score, s.stroke)
                out.append(Outcome(split, path, group, err is not None and err <= SLIDE_TOLERANCE, err,
                                   s.confidence if s else None, refused, dt, features))
        elif item["solver"] == "rotate":
            r, dt, refused = _timed(partial(_rotate, files))
            out.append(Outcome(split, "bad", source, False, None, r.confidence if r else None, refused, dt, ()))
        else:
            for piece in [files["piece"], None] if "piece" in files else [None]:
                s, dt, refused = _timed(partial(_slide, files, piece, item.get("tip_y")))
                name = f"{source} + piece" if piece is not None else source
                out.append(Outcome(split, "bad", name, False, None, s.confidence if s else None, refused, dt, ()))
    return out


# -- reporting -----------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * float(np.percentile(values, q)):.1f}" if values else "-"


class Table:
    def __init__(self, title: str, header: list[str], markdown: bool):
        self.title, self.header, self.markdown = title, header, markdown
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        if self.markdown:
            lines = [f"**{self.title}**", "", "| " + " | ".join(self.header) + " |",
                     "|" + "|".join("---" for _ in self.header) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            return "\n".join(lines) + "\n"
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [self.title, fmt.format(*self.header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in self.rows]
        return "\n".join(lines) + "\n"


PATH_NAMES = {"rotate": "rotate", "slide+piece": "slide, with piece", "slide-gap": "slide, background only (tip_y)",
              "slide-gap-notip": "slide, background only (no tip_y)"}


def report(outcomes: list[Outcome], threshold: float, markdown: bool) -> str:
    ev = [o for o in outcomes if o.split == "eval"]
    solved = [o for o in ev if o.path != "bad"]
    parts: list[str] = []

    acc = Table(f"Accuracy (eval split; rotate ±{ROTATE_TOLERANCE:g}°, slide ±{SLIDE_TOLERANCE:g} px; "
                f"threshold {threshold:g})",
                ["kind", "source", "n", "correct", f"answered (conf ≥ {threshold:g})", "correct when answered"],
                markdown)
    for path in PATH_NAMES:
        rows = [o for o in solved if o.path == path]
        if not rows:
            continue
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in rows:
            groups[o.group.split("/")[0] + ("/" + o.group.split("/")[1] if path == "rotate" else "")].append(o)
        for name in sorted(groups):
            _acc_row(acc, PATH_NAMES[path], name, groups[name], threshold)
        _acc_row(acc, PATH_NAMES[path], "**all**" if markdown else "ALL", rows, threshold)
    parts.append(acc.render())

    style = Table("Slides by the gap's shading (eval split)", ["kind", "shading", "n", "correct"], markdown)
    for path in ("slide+piece", "slide-gap"):
        by_style: dict[str, list[Outcome]] = defaultdict(list)
        for o in solved:
            if o.path == path and "/" in o.group:
                by_style[o.group.split("/")[1]].append(o)
        for name in sorted(by_style):
            rows = by_style[name]
            style.add(PATH_NAMES[path], name, len(rows), _pct(sum(o.correct for o in rows) / len(rows)))
        if path == "slide+piece":
            rows = [o for o in solved if o.path == path and o.group.endswith("/offset")]
            if rows:
                style.add(PATH_NAMES[path], "(any; piece's shape 2-8 px into its box)", len(rows),
                          _pct(sum(o.correct for o in rows) / len(rows)))
    parts.append(style.render())

    cal = Table("Confidence calibration (eval split, every answered solve)",
                ["kind", "confidence", "n", "correct"], markdown)
    for path in ("rotate", "slide+piece", "slide-gap"):
        rows = [o for o in solved if o.path == path and o.confidence is not None]
        for lo, hi in itertools.pairwise(BINS):
            b = [o for o in rows if lo <= (o.confidence or 0.0) < hi]
            if b:
                cal.add(PATH_NAMES[path], f"{lo:.1f} to {min(hi, 1.0):.1f}", len(b),
                        _pct(sum(o.correct for o in b) / len(b)))
        above = [o for o in rows if (o.confidence or 0.0) >= threshold]
        below = [o for o in rows if (o.confidence or 0.0) < threshold]
        for name, part in ((f"≥ {threshold:g}", above), (f"< {threshold:g}", below)):
            cal.add(PATH_NAMES[path], name, len(part),
                    _pct(sum(o.correct for o in part) / len(part)) if part else "-")
    parts.append(cal.render())

    bad = [o for o in ev if o.path == "bad"]
    badt = Table("Bad inputs (eval split): refused, or answered with a low confidence",
                 ["input", "n", "refused", f"conf < {LOW_CONFIDENCE:g}", f"conf < {threshold:g}", "max ms"], markdown)
    groups_b: dict[str, list[Outcome]] = defaultdict(list)
    for o in bad:
        groups_b[o.group].append(o)
    for name in sorted(groups_b):
        rows = groups_b[name]
        refused = sum(o.refused is not None for o in rows)
        low = sum(o.refused is None and (o.confidence or 0.0) < LOW_CONFIDENCE for o in rows)
        under = sum(o.refused is None and (o.confidence or 0.0) < threshold for o in rows)
        badt.add(name, len(rows), refused, low, under, f"{1000 * max(o.seconds for o in rows):.1f}")
    parts.append(badt.render())

    speed = Table("Time per solve, one core (ms, decode included)", ["kind", "n", "p50", "p99", "max"], markdown)
    for path in PATH_NAMES:
        secs = [o.seconds for o in outcomes if o.path == path]
        if secs:
            speed.add(PATH_NAMES[path], len(secs), _ms(secs, 50), _ms(secs, 99), _ms(secs, 100))
    parts.append(speed.render())

    tune = [o for o in outcomes if o.split == "tune" and o.path != "bad"]
    if tune:
        line = ", ".join(
            f"{PATH_NAMES[p]} {_pct(sum(o.correct for o in rows) / len(rows))} (n={len(rows)})"
            for p in PATH_NAMES if (rows := [o for o in tune if o.path == p and _solvable(o)]))
        parts.append(f"Tune split (generated pictures only, where the confidence was fitted): {line}.\n")
    return "\n".join(parts)


def _solvable(o: Outcome) -> bool:
    return o.group.split("/")[0] not in ("mismatch", "kit-3d", "nogap-synth")


def _acc_row(t: Table, kind: str, name: str, rows: list[Outcome], threshold: float) -> None:
    answered = [o for o in rows if (o.confidence or 0.0) >= threshold]
    t.add(kind, name, len(rows), _pct(sum(o.correct for o in rows) / len(rows)),
          _pct(len(answered) / len(rows)),
          _pct(sum(o.correct for o in answered) / len(answered)) if answered else "-")


# -- fitting the confidence ----------------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Weights (bias first) of a logistic regression, by Newton's method on standardised features."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([np.ones((x.shape[0], 1)), (x - mu) / sd])
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        grad = z.T @ (p - y) + l2 * np.r_[0.0, w[1:]]
        hess = (z * (p * (1 - p))[:, None]).T @ z + l2 * np.diag(np.r_[0.0, np.ones(len(w) - 1)])
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    raw = np.empty_like(w)
    raw[1:] = w[1:] / sd
    raw[0] = w[0] - float((w[1:] * mu / sd).sum())
    return raw


def shift_to_right_share(w: np.ndarray, x: np.ndarray, y: np.ndarray, target: float) -> np.ndarray:
    """`w` with its bias moved so that 0.5 is where the answers start being `target` right: the largest set of
    the most confident answers of which that share is right (none, when no such set exists)."""
    z = w[0] + x @ w[1:]
    order = np.argsort(-z)
    share = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    ok = np.nonzero(share >= target)[0]
    cut = float(z[order][ok.max()]) if ok.size else float(z.max()) + 1.0
    out = w.copy()
    out[0] -= cut - 1e-6
    return out


def fit(outcomes: list[Outcome]) -> str:
    """The logistic mappings of the confidence, fitted on the tune split. The background-only one serves both its
    paths (with and without tip_y), so it is fitted on both; it also has many sure wrong answers to learn from
    (a gap-like shape of the picture), so its bias is shifted to make 0.5 mean GAP_RIGHT right on tune."""
    tune = [o for o in outcomes if o.split == "tune" and o.features]
    lines = []
    for paths, name in ((("rotate",), "rotate.CONF_BIAS, CONF_MARGIN, CONF_COST"),
                        (("slide+piece",), "slide.PIECE_CONF"), (("slide-gap", "slide-gap-notip"), "slide.GAP_CONF")):
        rows = [o for o in tune if o.path in paths]
        x = np.array([o.features for o in rows], float)
        y = np.array([o.correct for o in rows], float)
        w = fit_logistic(x, y)
        if name == "slide.GAP_CONF":
            w = shift_to_right_share(w, x, y, GAP_RIGHT)
        answered = (w[0] + x @ w[1:]) >= 0
        lines.append(f"{name} = {', '.join(f'{v:.3f}' for v in w)}   # n={len(rows)}, correct={int(y.sum())}, "
                     f"answered at 0.5: {int(answered.sum())}, of them correct: {int(y[answered].sum())}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------------------


def warm_up(root: Path, items: list[dict[str, Any]]) -> None:
    """One untimed solve of each kind first: the first call pays for OpenCV's and numpy's lazy set-up."""
    for kind in ("rotate", "slide"):
        item = next((i for i in items if i["kind"] == kind), None)
        if item is not None:
            run_items(root, [item])


def one_core() -> str:
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "cv2 threads 1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluate the local vision solvers on the evaluation set.")
    p.add_argument("--set", type=Path, help="an evaluation set written by scripts/evalset.py (else one is built)")
    p.add_argument("--quick", action="store_true", help="build a quarter-size set (about 30 s in all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--photos", type=Path, nargs="*", default=[], help="extra real photographs for slides")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for BENCHMARKS.md)")
    p.add_argument("--fit", action="store_true", help="fit the confidence mappings on the tune split and print them")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="also the 3d solver's figures per split of the real labelled set (scripts/eval_3d.py)")
    args = p.parse_args(argv)
    where = one_core()
    tmp: Path | None = None
    start = time.perf_counter()
    try:
        if args.set is None:
            tmp = Path(tempfile.mkdtemp(prefix="evalset-"))
            evalset.build(tmp, args.seed, 0.25 if args.quick else 1.0, args.photos)
            root = tmp
        else:
            root = args.set
        manifest = evalset.load(root)
        built = time.perf_counter() - start
        warm_up(root, manifest["items"])
        outcomes = run_items(root, manifest["items"])
        if args.fit:
            print(fit(outcomes))
            return 0
        print(report(outcomes, args.threshold, args.markdown))
        if args.three_d:
            from scripts import eval_3d
            from scripts.train_3d import DEFAULT_DATA

            print(eval_3d.evaluate(DEFAULT_DATA, args.threshold, args.markdown))
        crashes = [o for o in outcomes if o.confidence is not None and not math.isfinite(o.confidence)]
        print(f"{len(outcomes)} solves on {where}; set seed {manifest['seed']} scale {manifest['scale']}"
              f"{' photos ' + ', '.join(Path(x).name for x in manifest['photos']) if manifest['photos'] else ''}; "
              f"building {built:.0f} s, evaluating {time.perf_counter() - start - built:.0f} s.")
        return 1 if crashes else 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
