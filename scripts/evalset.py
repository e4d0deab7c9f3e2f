"""The local solver's evaluation set: rotate and slide challenges with their ground truth, from a seed.

    uv run python -m scripts.evalset --out DIR [--seed 1] [--scale 1.0] [--photos FILE ...]

Two splits, kept apart on purpose (`scripts/eval_local.py` reports on `eval` only):

- ``tune``: generated pictures only (the test kit's procedural scenes, ``tests/kit/synth.py``), cut into whirl
  pairs and slides and degraded the same way as the evaluation items, a test-kit batch of its own seed, and
  negatives for the confidence fit (whirl parts of two pictures; pictures without a gap, and the kit's 3D images,
  with a foreign piece). The confidence mapping and every threshold of the solver were fitted on this split.
- ``eval``:
  - ``real-png`` / ``real-jpeg``: the two real whirl pairs of ``../shared/samples`` re-cut: the inner disc lined up
    by its label (``LABELS.md``) and turned by known angles, in both eras (alpha <-> white), JPEG re-compressed at
    several qualities, some blurred, some with noise, a few scaled;
  - ``photo-*``: slides over real photographic pixels: the real whirl pictures (ring plus lined-up disc, a
    rectangle inside the circle, upscaled), the real 3D sample's picture, and any ``--photos`` files; the piece's
    shape and the gap's shading as the test kit cuts them (and two other shadings), background JPEG-compressed;
  - ``kit``: a test-kit batch (``synth.generate``) of another seed;
  - ``bad``: inputs that must be refused or answered with a confidence near 0 (undecodable, truncated, blank, huge,
    swapped or mismatched parts, 3D images, photographs without a gap).

Everything is written to ``DIR`` (``manifest.json`` plus the image files); nothing of it belongs in the repository.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops, ImageFilter

from tests.kit import synth

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
REAL_PAIRS = (("real-png", "whirl-png-outer-347.png", "whirl-png-inner-211.png"),
              ("real-jpeg", "whirl-jpeg-outer-347.jpg", "whirl-jpeg-inner-211.jpg"))
OUTER, INNER, HOLE = synth.OUTER_SIZE, synth.INNER_SIZE, synth.HOLE_RADIUS
BG_W, BG_H = synth.BG_SIZE
PIECE = synth.PIECE_SIZE
U8 = npt.NDArray[np.uint8]

TUNE_KIT_SEED_OFFSET = 1000
EVAL_KIT_SEED_OFFSET = 2000


@dataclass(slots=True)
class Counts:
    """Items per group at --scale 1 (a full evaluation run stays well under three minutes)."""

    real_angles: int = 50
    """Per real pair and era (two pairs x two eras)."""
    photo_slides: int = 80
    """Per photographic source."""
    tune_whirls: int = 160
    tune_slides: int = 160
    kit_tune: int = 60
    kit_eval: int = 100
    tune_mismatches: int = 40
    no_gaps: int = 40
    eval_mismatches: int = 20

    def scaled(self, scale: float) -> Counts:
        return Counts(*(max(2, round(getattr(self, f.name) * scale)) for f in fields(self)))


@dataclass(slots=True)
class Writer:
    root: Path
    items: list[dict[str, Any]] = field(default_factory=list)

    def save(self, name: str, img: Image.Image, fmt: str, quality: int = 90) -> str:
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG", compress_level=1)
            file = f"{name}.png"
        else:
            img.convert("RGB").save(buf, "JPEG", quality=quality)
            file = f"{name}.jpg"
        (self.root / file).write_bytes(buf.getvalue())
        return file

    def raw(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return name


# -- degradations --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Degrade:
    quality: int | None
    """JPEG quality of the RGB (for the PNG era too: a picture that went through JPEG once), None for none."""
    blur: float
    noise: float
    """Gaussian noise sigma in 8-bit levels."""
    scale: float

    @classmethod
    def draw(cls, rng: random.Random, era: str, *, allow_scale: bool = True) -> Degrade:
        if rng.random() < 0.08:
            # a hard one now and then: heavy compression, blur and noise together
            return cls(20 if era == "jpeg" else 35, 1.4, 7.0, 1.0)
        if era == "jpeg":
            quality: int | None = rng.choice((40, 55, 70, 80, 90, 95))
        else:
            quality = rng.choice((None, None, 60, 85))
        blur = rng.choice((0.0, 0.0, 0.0, 0.5, 0.8))
        noise = rng.choice((0.0, 0.0, 2.0, 4.0))
        scale = rng.choice((0.8, 1.25, 1.5)) if allow_scale and rng.random() < 0.1 else 1.0
        return cls(quality, blur, noise, scale)

    def apply_rgb(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """Blur and noise (before any cut, so that alpha edges stay as the era makes them)."""
        out = img
        if self.blur:
            out = out.filter(ImageFilter.GaussianBlur(self.blur))
        if self.noise:
            arr = np.asarray(out.convert("RGB"), np.float32)
            nrng = np.random.default_rng(rng.getrandbits(32))
            arr = np.clip(arr + nrng.normal(0, self.noise, arr.shape), 0, 255).astype(np.uint8)
            out = Image.fromarray(arr)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"quality": self.quality, "blur": self.blur, "noise": self.noise, "scale": self.scale}


def recompress(img: Image.Image, quality: int | None) -> Image.Image:
    if quality is None:
        return img
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# -- whirl pairs ---------------------------------------------------------------------------------------------------


def _rotate_ccw(img: Image.Image, degrees: float, fill: tuple[int, ...]) -> Image.Image:
    return img.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=fill)


def _era_cut(rgb: Image.Image, mask: Image.Image, era: str) -> Image.Image:
    if era == "png":
        out = rgb.convert("RGBA")
        out.putalpha(mask)
        return out
    out = Image.new("RGB", rgb.size, (255, 255, 255))
    out.paste(rgb.convert("RGB"), (0, 0), mask)
    return out


def _ring_mask(size: int) -> Image.Image:
    return synth._disc(size, size / 2, HOLE * size / OUTER)


def _disc_mask(size: int) -> Image.Image:
    return synth._disc(size, size / 2)


def read_label(name: str) -> float:
    """The angle LABELS.md gives for the pair whose inner file is `name`."""
    text = (SAMPLES / "LABELS.md").read_text()
    for line in text.splitlines():
        if name in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            return float(cells[1])
    raise ValueError(f"no label for {name} in LABELS.md")


@dataclass(frozen=True, slots=True)
class RealPair:
    """A real pair, flattened to RGB with its alpha (or white) known; `label` is its clockwise angle."""

    name: str
    outer: Image.Image
    inner: Image.Image
    label: float

    def aligned_inner(self) -> Image.Image:
        """The inner disc turned clockwise by its label: it now continues the ring's picture."""
        return _rotate_ccw(self.inner, -self.label, (255, 255, 255))

    def picture(self) -> Image.Image:
        """The whole picture: the ring with the lined-up disc in its hole (corners stay white)."""
        full = self.outer.copy()
        offset = (OUTER - INNER) // 2
        full.paste(self.aligned_inner(), (offset, offset), _disc_mask(INNER))
        # The seam (the ring's hole edge, white-fringed in the JPEG era) is painted over from its surroundings:
        # a photograph has no circle drawn on it.
        seam = np.zeros((OUTER, OUTER), np.uint8)
        cv2.circle(seam, (OUTER // 2, OUTER // 2), round(HOLE), 255, thickness=7)
        arr = cv2.inpaint(np.asarray(full.convert("RGB")), seam, 4, cv2.INPAINT_TELEA)
        return Image.fromarray(arr)


def load_real_pairs() -> list[RealPair]:
    pairs = []
    for name, outer_file, inner_file in REAL_PAIRS:
        outer = Image.open(SAMPLES / outer_file)
        inner = Image.open(SAMPLES / inner_file)
        pairs.append(RealPair(name, _flatten(outer), _flatten(inner), read_label(inner_file)))
    return pairs


def _flatten(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", img.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), (0, 0), rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def cut_pair(outer_rgb: Image.Image, inner_rgb: Image.Image, era: str, deg: Degrade,
             rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """Both parts of one whirl in `era`, degraded; `inner_rgb` is already turned to its angle."""
    outer_rgb, inner_rgb = deg.apply_rgb(outer_rgb, rng), deg.apply_rgb(inner_rgb, rng)
    if deg.scale != 1.0:
        so, si = round(OUTER * deg.scale), round(INNER * deg.scale)
        outer_rgb = outer_rgb.resize((so, so), Image.Resampling.LANCZOS)
        inner_rgb = inner_rgb.resize((si, si), Image.Resampling.LANCZOS)
    outer_rgb, inner_rgb = recompress(outer_rgb, deg.quality), recompress(inner_rgb, deg.quality)
    outer = _era_cut(outer_rgb, _ring_mask(outer_rgb.width), era)
    inner = _era_cut(inner_rgb, _disc_mask(inner_rgb.width), era)
    return outer, inner


def write_whirl(w: Writer, item: dict[str, Any], outer: Image.Image, inner: Image.Image, era: str,
                quality: int | None) -> None:
    q = quality or 90
    item["files"] = {"outer": w.save(f"{item['id']}-outer", outer, era, q),
                     "inner": w.save(f"{item['id']}-inner", inner, era, q)}
    w.items.append(item)


def real_whirls(w: Writer, seed: int, counts: Counts) -> None:
    for pair in load_real_pairs():
        aligned = pair.aligned_inner()
        for era in ("png", "jpeg"):
            rng = random.Random(f"{seed}/real/{pair.name}/{era}")
            for n in range(counts.real_angles):
                angle = round(rng.uniform(0, 360), 1) % 360
                deg = Degrade.draw(rng, era)
                # The disc shows the picture turned counter-clockwise by `angle`: a clockwise turn fixes it.
                inner = _rotate_ccw(aligned, angle, (255, 255, 255))
                outer, inner = cut_pair(pair.outer, inner, era, deg, rng)
                item = {"id": f"{pair.name}-{era}-{n:03d}", "split": "eval", "kind": "rotate", "source": pair.name,
                        "era": era, "angle": angle, "degrade": deg.to_json()}
                write_whirl(w, item, outer, inner, era, deg.quality)


def synth_whirls(w: Writer, seed: int, count: int, split: str) -> None:
    for n in range(count):
        rng = random.Random(f"{seed}/synth-whirl/{split}/{n}")
        era = "png" if n % 2 == 0 else "jpeg"
        scene = synth.picture(rng, (OUTER, OUTER), (0.35, 0.6))
        angle = round(rng.uniform(0, 360), 1) % 360
        deg = Degrade.draw(rng, era)
        margin = (OUTER - INNER) // 2 - 2
        centre = scene.crop((margin, margin, OUTER - margin, OUTER - margin))
        turned = _rotate_ccw(centre, angle, (255, 255, 255)).crop((2, 2, 2 + INNER, 2 + INNER))
        outer, inner = cut_pair(scene, turned, era, deg, rng)
        item = {"id": f"synth-whirl-{split}-{n:03d}", "split": split, "kind": "rotate", "source": "synth",
                "era": era, "angle": angle, "degrade": deg.to_json()}
        write_whirl(w, item, outer, inner, era, deg.quality)


# -- slides --------------------------------------------------------------------------------------------------------


def photo_sources(pairs: list[RealPair], extra: list[Path]) -> dict[str, list[Image.Image]]:
    """Real photographic pictures by source name (whole images; crops are drawn per item)."""
    sources: dict[str, list[Image.Image]] = {"photo-whirl": [p.picture() for p in pairs]}
    three_d = SAMPLES / "3d-552x344.png"
    if three_d.exists():
        sources["photo-3d"] = [_flatten(Image.open(three_d))]
    photos = [_flatten(Image.open(p)) for p in extra]
    if photos:
        sources["photo-extra"] = photos
    return sources


def photo_crop(rng: random.Random, source: str, img: Image.Image) -> Image.Image:
    """A 552x344 picture from a real one: whirl pictures by a rectangle inside their circle, others by a crop."""
    aspect = BG_W / BG_H
    if source == "photo-whirl":
        t = math.atan(1 / aspect)
        r = OUTER / 2 - 2
        full_w, full_h = 2 * r * math.cos(t), 2 * r * math.sin(t)
        share = rng.uniform(0.65, 1.0)
        cw, ch = full_w * share, full_h * share
        # the rectangle's corners stay inside the circle
        slack_x, slack_y = (full_w - cw) / 2, (full_h - ch) / 2
        cx, cy = OUTER / 2 + rng.uniform(-slack_x, slack_x), OUTER / 2 + rng.uniform(-slack_y, slack_y)
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
    else:
        zoom = rng.uniform(0.75, 1.0) if img.width >= BG_W and img.height >= BG_H else 1.0
        cw = min(img.width, img.height * aspect) * zoom
        ch = cw / aspect
        x0, y0 = rng.uniform(0, img.width - cw), rng.uniform(0, img.height - ch)
        box = (x0, y0, x0 + cw, y0 + ch)
    out = img.resize((BG_W, BG_H), Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def shade_gap(scene: Image.Image, gap_x: int, tip_y: int, mask: Image.Image, style: str,
              rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """Background with the gap and the piece. `kit` is the test kit's own cut; `dark`/`light` vary its shading."""
    if style == "kit":
        return synth.slide_images(scene, gap_x, tip_y, mask)
    box = (gap_x, tip_y, gap_x + PIECE, tip_y + PIECE)
    tile = scene.crop(box)
    rim = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(rng.choice((3, 5)))))
    if style == "dark":
        carved = Image.blend(tile, Image.new("RGB", tile.size, (0, 0, 0)), rng.uniform(0.35, 0.65))
    else:
        carved = Image.blend(tile, Image.new("RGB", tile.size, (255, 255, 255)), rng.uniform(0.4, 0.6))
    rim_level = rng.uniform(0.2, 0.8)
    carved.paste((255, 255, 255), (0, 0), rim.point(lambda v: round(v * rim_level)))
    background = scene.copy()
    background.paste(carved, box[:2], mask)
    piece = tile.copy().convert("RGBA")
    piece.putalpha(mask)
    return background, piece


def shifted(mask: Image.Image, dx: int) -> Image.Image:
    """The piece's shape moved `dx` px right inside its tile (a piece box wider than the visible piece)."""
    out = Image.new("L", mask.size, 0)
    out.paste(mask.crop((0, 0, PIECE - dx, PIECE)), (dx, 0))
    return out


def make_slide(w: Writer, rng: random.Random, item: dict[str, Any], scene: Image.Image, *, offset: int = 0) -> None:
    gap_x = rng.randint(100, BG_W - PIECE - 10)
    tip_y = rng.randint(*synth.TIP_Y_RANGE)
    mask = synth.piece_mask(rng)
    if offset:
        mask = shifted(mask, offset)
    style = rng.choices(("kit", "dark", "light"), (0.6, 0.3, 0.1))[0]
    deg = Degrade.draw(rng, "jpeg", allow_scale=False)
    scene = deg.apply_rgb(scene, rng)
    background, piece = shade_gap(scene, gap_x, tip_y, mask, style, rng)
    item.update({"kind": "slide", "era": "jpeg", "gap_x": gap_x, "tip_y": tip_y, "style": style,
                 "shape_offset": offset, "degrade": deg.to_json()})
    item["files"] = {"background": w.save(f"{item['id']}-background", background, "jpeg", deg.quality or 85),
                     "piece": w.save(f"{item['id']}-piece", piece, "png")}
    w.items.append(item)


def photo_slides(w: Writer, seed: int, counts: Counts, sources: dict[str, list[Image.Image]]) -> None:
    for source, pictures in sources.items():
        rng = random.Random(f"{seed}/photo-slide/{source}")
        for n in range(counts.photo_slides):
            scene = photo_crop(rng, source, rng.choice(pictures))
            # one in eight pieces sits a few px into its box: only the piece can tell that offset
            offset = rng.randint(2, 8) if n % 8 == 7 else 0
            make_slide(w, rng, {"id": f"{source}-{n:03d}", "split": "eval", "source": source}, scene,
                       offset=offset)


def no_gaps(w: Writer, seed: int, count: int, split: str, pictures: list[tuple[str, Image.Image]]) -> None:
    """Slide-sized pictures without any gap, with a piece of another slide: whatever is found there is wrong."""
    rng = random.Random(f"{seed}/no-gap/{split}")
    pieces = [i["files"]["piece"] for i in w.items if i["split"] == split and i["kind"] == "slide"
              and "piece" in i["files"]]
    for n, (source, scene) in enumerate(pictures[:count]):
        deg = Degrade.draw(rng, "jpeg", allow_scale=False)
        img = deg.apply_rgb(scene, rng)
        item: dict[str, Any] = {"id": f"nogap-{split}-{n:03d}", "split": split, "source": source, "era": "jpeg",
                                "tip_y": rng.randint(*synth.TIP_Y_RANGE)}
        item["files"] = {"background": w.save(item["id"], img, "jpeg", deg.quality or 85),
                         "piece": rng.choice(pieces)}
        if split == "tune":
            item.update({"kind": "slide", "gap_x": None, "shape_offset": 0, "style": "none"})
        else:
            item.update({"kind": "bad", "solver": "slide"})
        w.items.append(item)


def synth_slides(w: Writer, seed: int, count: int, split: str) -> None:
    for n in range(count):
        rng = random.Random(f"{seed}/synth-slide/{split}/{n}")
        scene = synth.picture(rng, synth.BG_SIZE, (0.3, 0.6))
        offset = rng.randint(2, 8) if n % 8 == 7 else 0
        make_slide(w, rng, {"id": f"synth-slide-{split}-{n:03d}", "split": split, "source": "synth"}, scene,
                   offset=offset)


def mismatches(w: Writer, split: str, count: int, kind: str, sources: tuple[str, ...]) -> None:
    """Parts of two different challenges put together: no answer is right, the confidence should say so.

    Only whirls: a slide's piece from another challenge may still have the gap's shape (all pieces look alike),
    so an answer there can be right for the background; slides get pictures without a gap instead (`no_gaps`).
    """
    pool = [i for i in w.items if i["split"] == split and i["kind"] == kind and i["source"] in sources
            and i.get("shape_offset", 0) == 0]
    roles = ("outer", "inner") if kind == "rotate" else ("background", "piece")
    firsts = [i for i in pool if i["source"] == sources[0]]
    if len(sources) > 1:
        # parts of two different pictures (two items of one real pair would still make a valid whirl)
        seconds = [i for i in pool if i["source"] != sources[0]]
        pairs = list(zip(firsts, seconds, strict=False))
    else:
        pairs = list(zip(firsts[::2], firsts[1::2], strict=False))
    for n, (a, b) in enumerate(pairs[:count]):
        item: dict[str, Any] = {"id": f"mismatch-{kind}-{split}-{n:03d}", "split": split, "source": "mismatch",
                                "era": a["era"], "files": {roles[0]: a["files"][roles[0]],
                                                           roles[1]: b["files"][roles[1]]}}
        if split == "tune":
            # in the tune split they are negatives for the confidence fit: an answer that cannot be right
            item.update({"kind": kind, "angle": None} if kind == "rotate" else
                        {"kind": kind, "gap_x": None, "tip_y": a["tip_y"], "shape_offset": 0})
        else:
            item.update({"kind": "bad", "solver": "rotate" if kind == "rotate" else "slide"})
            if kind == "slide":
                item["tip_y"] = a["tip_y"]
        w.items.append(item)


# -- test kit batches ----------------------------------------------------------------------------------------------


def kit_batch(w: Writer, seed: int, count: int, split: str) -> None:
    sub = f"kit-{split}"
    manifest = synth.generate(w.root / sub, seed, count)
    for c in manifest.whirls():
        w.items.append({"id": f"{sub}-{c.id[:10]}", "split": split, "kind": "rotate", "source": "kit",
                        "era": c.variant, "angle": c.angle,
                        "files": {role: f"{sub}/{img.file}" for role, img in c.images.items()}})
    for s in manifest.slides():
        w.items.append({"id": f"{sub}-{s.id[:10]}", "split": split, "kind": "slide", "source": "kit", "era": "jpeg",
                        "gap_x": s.gap_x, "tip_y": s.tip_y, "style": "kit", "shape_offset": 0,
                        "files": {role: f"{sub}/{img.file}" for role, img in s.images.items()}})
    for t in manifest.threeds():
        piece = next(f"{sub}/{s.images['piece'].file}" for s in manifest.slides())
        item: dict[str, Any] = {"id": f"{sub}-{t.id[:10]}", "split": split, "source": "kit-3d",
                                "files": {"background": f"{sub}/{t.images['image'].file}", "piece": piece}}
        if split == "eval":
            item.update({"kind": "bad", "solver": "slide"})
        else:
            # a negative for the background-only confidence fit
            item.update({"kind": "slide", "era": "png", "gap_x": None, "tip_y": 100, "shape_offset": 0,
                         "style": "none"})
        w.items.append(item)


# -- bad inputs ----------------------------------------------------------------------------------------------------


def bad_inputs(w: Writer, seed: int) -> None:
    """Inputs the solver must refuse (VisionError) or answer with a confidence near 0."""
    rng = random.Random(f"{seed}/bad")
    kit_slide = next(i for i in w.items if i["kind"] == "slide" and i["split"] == "eval")
    kit_whirl = next(i for i in w.items if i["kind"] == "rotate" and i["split"] == "eval")
    bg_bytes = (w.root / kit_slide["files"]["background"]).read_bytes()
    piece_file = kit_slide["files"]["piece"]
    outer_file, inner_file = kit_whirl["files"]["outer"], kit_whirl["files"]["inner"]

    def add(name: str, solver: str, files: dict[str, str]) -> None:
        w.items.append({"id": f"bad-{name}", "split": "eval", "kind": "bad", "source": name, "solver": solver,
                        "files": files})

    if (SAMPLES / "3d-552x344.png").exists():
        three_d = w.raw("bad-3d.png", (SAMPLES / "3d-552x344.png").read_bytes())
        add("3d-sample", "slide", {"background": three_d, "piece": piece_file})
    add("truncated-background", "slide", {"background": w.raw("bad-trunc.jpg", bg_bytes[: len(bg_bytes) // 2])})
    add("garbage", "slide", {"background": w.raw("bad-garbage.jpg", rng.randbytes(5000))})
    for name, colour in (("blank-white", (255, 255, 255)), ("blank-grey", (128, 128, 128))):
        add(f"{name}-background", "slide", {"background": w.save(f"bad-{name}", Image.new("RGB", (BG_W, BG_H), colour),
                                                                "jpeg")})
        add(f"{name}-whirl", "rotate", {"outer": w.save(f"bad-{name}-outer", Image.new("RGB", (OUTER, OUTER), colour),
                                                        "jpeg"),
                                        "inner": w.save(f"bad-{name}-inner", Image.new("RGB", (INNER, INNER), colour),
                                                        "jpeg")})
    add("swapped-whirl", "rotate", {"outer": inner_file, "inner": outer_file})
    add("slide-as-whirl", "rotate", {"outer": kit_slide["files"]["background"], "inner": piece_file})
    noise = Image.effect_noise((BG_W, BG_H), 60).convert("RGB")
    add("noise-background", "slide", {"background": w.save("bad-noise", noise, "jpeg")})
    big = Image.new("RGB", (5000, 400), (10, 200, 30))
    add("huge-background", "slide", {"background": w.save("bad-huge", big, "jpeg")})


# -- main ----------------------------------------------------------------------------------------------------------


def build(out: Path, seed: int, scale: float = 1.0, photos: list[Path] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    counts = Counts().scaled(scale)
    w = Writer(out)
    if not SAMPLES.exists():
        raise SystemExit(f"{SAMPLES} is missing: the evaluation set needs the real samples")
    pairs = load_real_pairs()
    synth_whirls(w, seed, counts.tune_whirls, "tune")
    synth_slides(w, seed, counts.tune_slides, "tune")
    kit_batch(w, seed + TUNE_KIT_SEED_OFFSET, counts.kit_tune, "tune")
    rng = random.Random(f"{seed}/no-gap-pictures")
    no_gaps(w, seed, counts.no_gaps, "tune",
            [("nogap-synth", synth.picture(rng, synth.BG_SIZE, (0.3, 0.6))) for _ in range(counts.no_gaps)])
    mismatches(w, "tune", counts.tune_mismatches, "rotate", ("synth",))
    real_whirls(w, seed, counts)
    photo_slides(w, seed, counts, sources := photo_sources(pairs, photos or []))
    kit_batch(w, seed + EVAL_KIT_SEED_OFFSET, counts.kit_eval, "eval")
    names = sorted(sources)
    no_gaps(w, seed, counts.no_gaps // 2, "eval",
            [(f"nogap-{name}", photo_crop(rng, name, rng.choice(sources[name])))
             for name in (names[k % len(names)] for k in range(counts.no_gaps // 2))])
    # a real pair's ring with the other real pair's disc
    mismatches(w, "eval", counts.eval_mismatches, "rotate", ("real-png", "real-jpeg"))
    bad_inputs(w, seed)
    manifest = {"seed": seed, "scale": scale, "photos": [str(p) for p in photos or []], "items": w.items}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    return data


def iter_items(manifest: dict[str, Any], split: str | None = None) -> Iterator[dict[str, Any]]:
    for item in manifest["items"]:
        if split is None or item["split"] == split:
            yield item


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the local solver's evaluation set (tune and eval splits).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every group's size")
    p.add_argument("--photos", type=Path, nargs="*", default=[], help="extra real photographs for slides")
    args = p.parse_args(argv)
    start = time.perf_counter()
    manifest = build(args.out, args.seed, args.scale, args.photos)
    groups: dict[str, int] = {}
    for item in manifest["items"]:
        key = f"{item['split']}/{item['kind']}/{item['source']}"
        groups[key] = groups.get(key, 0) + 1
    print(json.dumps({"dir": str(args.out), "items": len(manifest["items"]), "groups": groups,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
