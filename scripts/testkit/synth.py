"""Synthetic ByteDance-style captchas from a seed, with their ground truth in a manifest.

    uv run python -m scripts.testkit.synth --seed 1 --count 50 --out DIR

Pictures are procedural landscapes (sky gradient, layered hills, sun, blobs, grain), so that the angle of a
rotate challenge and the gap of a slide challenge are really there to be found. See CONTRACT.md for the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter

OUTER_SIZE, INNER_SIZE, HOLE_RADIUS = 347, 211, 105
BG_SIZE, PIECE_SIZE = (552, 344), 110
WIDGET = {"width": 340, "handle": 69, "travel": 271}


@dataclass
class ImageEntry:
    file: str
    path: str
    sha256: str
    width: int
    height: int
    format: str


@dataclass
class ChallengeEntry:
    id: str
    mode: str
    variant: str
    images: dict[str, ImageEntry]
    angle: float | None = None
    drag_px: float | None = None
    gap_x: int | None = None
    tip_y: int | None = None


@dataclass
class Manifest:
    seed: int
    widget: dict[str, int] = field(default_factory=lambda: dict(WIDGET))
    challenges: list[ChallengeEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "widget": self.widget, "challenges": []}
        for c in self.challenges:
            entry = {k: v for k, v in asdict(c).items() if v is not None}
            out["challenges"].append(entry)
        return out


def _colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def scene(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A small landscape: no two alike, with structure at every scale and no rotational symmetry."""
    w, h = size
    top, bottom = _colour(rng, 40, 200), _colour(rng, 120, 255)
    gradient = Image.linear_gradient("L").resize((w, h))
    img = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(img)
    sx, sy, sr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.4) * h, rng.uniform(0.05, 0.12) * w
    draw.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=_colour(rng, 180, 255))
    for layer in range(rng.randint(2, 4)):
        base = h * (0.45 + 0.15 * layer) + rng.uniform(-20, 20)
        phase, freq, amp = rng.uniform(0, 6.3), rng.uniform(1.0, 4.0), rng.uniform(10, 45)
        points = [(x, base - amp * math.sin(phase + freq * x / w * math.pi) - rng.uniform(0, 6))
                  for x in range(0, w + 8, 8)]
        draw.polygon([(0, h), *points, (w, h)], fill=_colour(rng, 10, 160))
    for _ in range(rng.randint(6, 14)):
        x, y, r = rng.uniform(0, w), rng.uniform(0.3 * h, h), rng.uniform(4, 0.08 * w)
        draw.ellipse((x - r, y - r * rng.uniform(0.5, 2.0), x + r, y + r), fill=_colour(rng))
    grain = Image.effect_noise(size, rng.uniform(20, 40)).convert("RGB")
    img = ImageChops.blend(img, ImageChops.multiply(img, grain), 0.25)
    return img.filter(ImageFilter.GaussianBlur(0.8))


def _disc_mask(size: int, radius: float, inside: bool = True) -> Image.Image:
    mask = Image.new("L", (size, size), 0 if inside else 255)
    c = size / 2
    ImageDraw.Draw(mask).ellipse((c - radius, c - radius, c + radius, c + radius), fill=255 if inside else 0)
    return mask


def _finish(img: Image.Image, mask: Image.Image, variant: str) -> Image.Image:
    if variant == "png":
        out = img.convert("RGBA")
        out.putalpha(mask)
        return out
    return Image.composite(img.convert("RGB"), Image.new("RGB", img.size, (255, 255, 255)), mask)


def whirl_images(picture: Image.Image, angle: float, variant: str) -> tuple[Image.Image, Image.Image]:
    """Outer ring (hole r≈105, corners cut) and the inner disc turned so that `angle` degrees clockwise fix it."""
    ring_mask = ImageChops.subtract(_disc_mask(OUTER_SIZE, OUTER_SIZE / 2), _disc_mask(OUTER_SIZE, HOLE_RADIUS))
    outer = _finish(picture, ring_mask, variant)
    offset = (OUTER_SIZE - INNER_SIZE) // 2
    centre = picture.crop((offset, offset, offset + INNER_SIZE, offset + INNER_SIZE))
    turned = centre.rotate(angle, resample=Image.Resampling.BICUBIC)  # PIL turns counter-clockwise
    inner = _finish(turned, _disc_mask(INNER_SIZE, INNER_SIZE / 2), variant)
    return outer, inner


def piece_mask(rng: random.Random) -> Image.Image:
    """A jigsaw piece: an 80-px square with a knob on two sides, inside a 110x110 tile."""
    mask = Image.new("L", (PIECE_SIZE, PIECE_SIZE), 0)
    draw = ImageDraw.Draw(mask)
    a, b = 15, 95
    draw.rounded_rectangle((a, a, b, b), radius=6, fill=255)
    knob = 13
    cx = rng.randint(45, 65)
    draw.ellipse((cx - knob, a - knob - 2, cx + knob, a + knob - 2), fill=255)
    cy = rng.randint(45, 65)
    draw.ellipse((b - knob + 2, cy - knob, b + knob + 2, cy + knob), fill=255)
    return mask


def slide_images(picture: Image.Image, gap_x: int, tip_y: int, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    mask = piece_mask(rng)
    box = (gap_x, tip_y, gap_x + PIECE_SIZE, tip_y + PIECE_SIZE)
    piece = picture.crop(box).convert("RGBA")
    piece.putalpha(mask)
    background = picture.copy()
    shadow = Image.blend(picture.crop(box), Image.new("RGB", (PIECE_SIZE, PIECE_SIZE), (20, 20, 20)), 0.55)
    background.paste(shadow, box[:2], mask)
    outline = mask.filter(ImageFilter.FIND_EDGES)
    background.paste(Image.new("RGB", (PIECE_SIZE, PIECE_SIZE), (245, 245, 245)), box[:2], outline)
    return background, piece


_STYLES = ("newest", "useast2a", "71rtze", "security", "china")


def image_path(style: str, token: str, kind: str, n: int, fmt: str) -> str:
    ext = "png" if fmt == "png" else "jpeg"
    variant = 1 if fmt == "png" else 2
    if style == "useast2a":
        return f"/tos-useast2a-i-447w7jt563-euttp/{token}~tplv-447w7jt563-{variant}.{ext}"
    if style == "71rtze":
        return f"/tos-maliva-i-71rtze2081-us/{token}~tplv-71rtze2081-{variant}.{ext}"
    if style == "security":
        return f"/img/security-captcha-oversea-usa/{kind}_{token}{token[:8]}_{n}_1.{ext}~tplv-obj.image"
    if style == "china":
        return f"/tos-cn-i-188rlo5p4y/{token}~tplv-188rlo5p4y-{variant}.{ext}"
    return f"/tos-maliva-i-b4yrtqhy5a-us/{token}~tplv-b4yrtqhy5a-{variant}.{ext}"


class _Writer:
    def __init__(self, out_dir: Path, rng: random.Random):
        self.out_dir = out_dir
        self.rng = rng

    def save(self, img: Image.Image, name: str, fmt: str, style: str, kind: str, n: int) -> ImageEntry:
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG", compress_level=1)
        else:
            img.convert("RGB").save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        file = f"{name}.{'png' if fmt == 'png' else 'jpg'}"
        (self.out_dir / file).write_bytes(data)
        token = f"{self.rng.getrandbits(128):032x}"
        return ImageEntry(file, image_path(style, token, kind, n, fmt), hashlib.sha256(data).hexdigest(),
                          img.width, img.height, fmt)


def generate(out_dir: Path, seed: int, count: int) -> Manifest:
    """`count` whirl challenges (half PNG, half JPEG), `count` slide challenges and count//10 + 1 3d ones."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    writer = _Writer(out_dir, rng)
    manifest = Manifest(seed=seed)

    def new_id() -> str:
        return f"{rng.getrandbits(160):040x}"

    for i in range(count):
        cid, variant, style = new_id(), ("png", "jpeg")[i % 2], _STYLES[i % len(_STYLES)]
        angle = round(rng.uniform(15, 345), 2)
        outer, inner = whirl_images(scene(rng, (OUTER_SIZE, OUTER_SIZE)), angle, variant)
        manifest.challenges.append(ChallengeEntry(
            id=cid, mode="whirl", variant=variant, angle=angle,
            drag_px=round(angle / 360 * WIDGET["travel"], 3), images={
                "outer": writer.save(outer, f"{cid}-outer", variant, style, "whirl", 1),
                "inner": writer.save(inner, f"{cid}-inner", variant, style, "whirl", 2)}))
    for i in range(count):
        cid, style = new_id(), _STYLES[(i + 2) % len(_STYLES)]
        gap_x, tip_y = rng.randint(120, 430), rng.randint(10, BG_SIZE[1] - PIECE_SIZE - 10)
        background, piece = slide_images(scene(rng, BG_SIZE), gap_x, tip_y, rng)
        manifest.challenges.append(ChallengeEntry(
            id=cid, mode="slide", variant="jpeg", gap_x=gap_x, tip_y=tip_y, images={
                "background": writer.save(background, f"{cid}-background", "jpeg", style, "slide", 1),
                "piece": writer.save(piece, f"{cid}-piece", "png", style, "slide", 2)}))
    for _ in range(count // 10 + 1):
        cid = new_id()
        picture = scene(rng, BG_SIZE)
        draw = ImageDraw.Draw(picture)
        for _ in range(6):
            x, y = rng.uniform(40, 500), rng.uniform(40, 300)
            draw.regular_polygon((x, y, rng.uniform(15, 35)), rng.randint(3, 6), rotation=rng.uniform(0, 90),
                                 fill=_colour(rng), outline=(0, 0, 0))
        manifest.challenges.append(ChallengeEntry(id=cid, mode="3d", variant="png", images={
            "background": writer.save(picture.convert("RGBA"), f"{cid}-3d", "png", "newest", "3d", 1)}))
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1))
    return manifest


def load_manifest(directory: Path) -> dict[str, Any]:
    """The manifest as plain JSON (the shape CONTRACT.md documents)."""
    data: dict[str, Any] = json.loads((Path(directory) / "manifest.json").read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=20, help="whirl and slide challenges each")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    m = generate(args.out, args.seed, args.count)
    print(json.dumps({"dir": str(args.out), "challenges": len(m.challenges)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
