"""Synthetic ByteDance-style captchas from a seed, with their ground truth in a manifest (see CONTRACT.md).

    uv run python -m tests.kit.synth --seed 1 --count 50 --out DIR

Pictures are procedural scenes (landscapes and still lifes: gradients, textured hills, clouds, trees, fruit,
grain), so that the angle of a rotate challenge and the gap of a slide challenge are really there to be found.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

Mode = Literal["whirl", "slide", "3d", "icon"]
Format = Literal["png", "jpeg", "webp"]
RGB = tuple[int, int, int]

OUTER_SIZE, INNER_SIZE = 347, 211
HOLE_RADIUS = INNER_SIZE / 2
BG_SIZE = (552, 344)
PIECE_SIZE = 110
PIECE_INSET = (6.0, 7.0)
"""Where the piece's shape begins inside its 110-px tile on real 552x344 slides (px from the tile's left edge)."""
GAP_X_RANGE = (120, 430)
TIP_Y_RANGE = (10, BG_SIZE[1] - PIECE_SIZE - 10)
ANGLE_RANGE = (15.0, 345.0)
WHITE: RGB = (255, 255, 255)


# -- manifest ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Widget:
    width: int = 340
    handle: int = 69
    travel: int = 271


@dataclass(frozen=True, slots=True)
class ImageRef:
    file: str
    path: str
    sha256: str
    width: int
    height: int
    format: Format


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """One challenge of the manifest. `images` maps a role (outer/inner, background/piece) to its image."""

    MODE: ClassVar[Mode]
    ROLES: ClassVar[tuple[str, ...]]

    id: str
    variant: Format
    images: dict[str, ImageRef]
    url_style: str = "b4yrtqhy5a"

    @property
    def mode(self) -> Mode:
        return self.MODE

    @property
    def url1(self) -> ImageRef:
        return self.images[self.ROLES[0]]

    @property
    def url2(self) -> ImageRef | None:
        return self.images[self.ROLES[1]] if len(self.ROLES) > 1 else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "mode": self.mode, "variant": self.variant}
        out.update(self._truth())
        out["url_style"] = self.url_style
        out["images"] = {role: _image_json(img) for role, img in self.images.items()}
        return out

    def _truth(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, kw_only=True)
class WhirlChallenge(Challenge):
    MODE: ClassVar[Mode] = "whirl"
    ROLES: ClassVar[tuple[str, ...]] = ("outer", "inner")

    angle: float
    drag_px: float

    def _truth(self) -> dict[str, Any]:
        return {"angle": self.angle, "drag_px": self.drag_px}


@dataclass(frozen=True, kw_only=True)
class SlideChallenge(Challenge):
    MODE: ClassVar[Mode] = "slide"
    ROLES: ClassVar[tuple[str, ...]] = ("background", "piece")

    gap_x: int
    tip_y: int

    def _truth(self) -> dict[str, Any]:
        return {"gap_x": self.gap_x, "tip_y": self.tip_y}


@dataclass(frozen=True, kw_only=True)
class ThreeDChallenge(Challenge):
    """An object captcha of one image. `targets`: the boxes `[centre x, centre y, width, height]` (natural pixels)
    of the objects to click, one click in each; None when there is no ground truth (a made-up scene)."""

    MODE: ClassVar[Mode] = "3d"
    ROLES: ClassVar[tuple[str, ...]] = ("image",)

    targets: list[list[float]] | None = None
    question: str | None = None

    def _truth(self) -> dict[str, Any]:
        return {"targets": self.targets, "question": self.question}


@dataclass(frozen=True, kw_only=True)
class IconChallenge(ThreeDChallenge):
    MODE: ClassVar[Mode] = "icon"


AnyChallenge = WhirlChallenge | SlideChallenge | ThreeDChallenge


@dataclass(slots=True)
class Manifest:
    seed: int
    widget: Widget = field(default_factory=Widget)
    challenges: list[AnyChallenge] = field(default_factory=list)
    root: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed,
                "widget": {"width": self.widget.width, "handle": self.widget.handle, "travel": self.widget.travel},
                "challenges": [c.to_json() for c in self.challenges]}

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path | None = None) -> Manifest:
        widget = Widget(**data.get("widget", {}))
        return cls(seed=int(data.get("seed", 0)), widget=widget,
                   challenges=[_challenge_from_json(c, widget) for c in data["challenges"]], root=root)

    def whirls(self) -> list[WhirlChallenge]:
        return [c for c in self.challenges if isinstance(c, WhirlChallenge)]

    def slides(self) -> list[SlideChallenge]:
        return [c for c in self.challenges if isinstance(c, SlideChallenge)]

    def threeds(self) -> list[ThreeDChallenge]:
        return [c for c in self.challenges if isinstance(c, ThreeDChallenge)]

    def by_id(self, challenge_id: str) -> AnyChallenge | None:
        return next((c for c in self.challenges if c.id == challenge_id), None)

    def images(self) -> Iterator[tuple[AnyChallenge, str, ImageRef]]:
        for c in self.challenges:
            for role, img in c.images.items():
                yield c, role, img

    def file(self, img: ImageRef) -> Path:
        if self.root is None:
            raise ValueError("this manifest was not loaded from or written to a directory")
        return self.root / img.file


def _image_json(img: ImageRef) -> dict[str, Any]:
    return {"file": img.file, "path": img.path, "sha256": img.sha256, "width": img.width, "height": img.height,
            "format": img.format}


def _image_from_json(img: dict[str, Any]) -> ImageRef:
    return ImageRef(file=str(img["file"]), path=str(img["path"]), sha256=str(img.get("sha256", "")),
                    width=int(img["width"]), height=int(img["height"]), format=img["format"])


def _challenge_from_json(c: dict[str, Any], widget: Widget) -> AnyChallenge:
    images = {role: _image_from_json(img) for role, img in c["images"].items()}
    variant = c.get("variant") or next(iter(images.values())).format
    common: dict[str, Any] = {"id": c["id"], "variant": variant, "url_style": c.get("url_style", ""),
                              "images": images}
    if c["mode"] == "whirl":
        angle = float(c["angle"])
        drag_px = float(c["drag_px"]) if c.get("drag_px") is not None else angle / 360 * widget.travel
        return WhirlChallenge(angle=angle, drag_px=drag_px, **common)
    if c["mode"] == "slide":
        return SlideChallenge(gap_x=int(c["gap_x"]), tip_y=int(c["tip_y"]), **common)
    if c["mode"] in ("3d", "icon"):
        cls = IconChallenge if c["mode"] == "icon" else ThreeDChallenge
        return cls(targets=c.get("targets"), question=c.get("question"), **common)
    raise ValueError(f"unknown mode {c['mode']!r}")


def load_manifest(directory: Path | str) -> Manifest:
    root = Path(directory)
    return Manifest.from_json(json.loads((root / "manifest.json").read_text()), root=root)


# -- image paths (captcha-traffic.md §4) ---------------------------------------------------------------------------

STYLE_CYCLE = ("b4yrtqhy5a", "447w7jt563", "legacy-usa", "b4yrtqhy5a", "71rtze2081",
               "b4yrtqhy5a", "cn", "b4yrtqhy5a", "legacy-sg", "b4yrtqhy5a")
_TOS_PREFIX = {"b4yrtqhy5a": "/tos-maliva-i-b4yrtqhy5a-us", "447w7jt563": "/tos-useast2a-i-447w7jt563-euttp",
               "71rtze2081": "/tos-maliva-i-71rtze2081-us", "cn": "/tos-cn-i-188rlo5p4y"}
_TOS_TPLV = {"b4yrtqhy5a": "b4yrtqhy5a", "447w7jt563": "447w7jt563", "71rtze2081": "71rtze2081",
             "cn": "188rlo5p4y"}
_LEGACY_DIR = {"legacy-usa": "security-captcha-oversea-usa", "legacy-sg": "security-captcha-oversea-singapore"}


def image_path(style: str, mode: Mode, token: str, legacy_token: str, part: int, fmt: Format) -> str:
    """`token` is 32 hex (tos styles), `legacy_token` 40 hex shared by a challenge's parts (oldest style)."""
    if style in _LEGACY_DIR:
        ext = "png" if fmt == "png" else "jpg"
        return f"/img/{_LEGACY_DIR[style]}/{mode}_{legacy_token}_1_{part}.{ext}~tplv-obj.image"
    suffix = "1.png" if fmt == "png" else "2.jpeg"
    return f"{_TOS_PREFIX[style]}/{token}~tplv-{_TOS_TPLV[style]}-{suffix}"


# -- procedural pictures -------------------------------------------------------------------------------------------

_PALETTES: tuple[dict[str, Sequence[RGB]], ...] = (
    {"sky": ((70, 130, 200), (190, 220, 240)), "land": ((90, 120, 80), (60, 110, 50), (40, 80, 35)),
     "sun": ((255, 250, 220),)},
    {"sky": ((60, 50, 110), (250, 160, 90)), "land": ((110, 70, 90), (70, 50, 70), (40, 30, 45)),
     "sun": ((255, 200, 120),)},
    {"sky": ((150, 170, 190), (225, 225, 220)), "land": ((130, 145, 150), (90, 110, 105), (55, 75, 65)),
     "sun": ((245, 245, 235),)},
    {"sky": ((40, 110, 180), (150, 200, 230)), "land": ((190, 150, 90), (160, 110, 60), (120, 80, 40)),
     "sun": ((255, 240, 190),)},
    {"sky": ((100, 150, 200), (220, 200, 170)), "land": ((170, 120, 50), (150, 80, 40), (90, 60, 30)),
     "sun": ((255, 230, 170),)},
    {"sky": ((20, 40, 80), (80, 120, 150)), "land": ((50, 80, 90), (30, 60, 60), (15, 35, 40)),
     "sun": ((230, 235, 250),)},
)
_WALLS: tuple[tuple[RGB, RGB], ...] = (((235, 230, 220), (190, 180, 165)), ((200, 225, 215), (140, 170, 160)),
                                       ((230, 215, 225), (170, 150, 165)), ((215, 225, 240), (150, 160, 185)))
_FRUIT: tuple[RGB, ...] = ((245, 150, 20), (200, 30, 30), (120, 190, 40), (250, 210, 40), (120, 40, 110),
                           (230, 90, 60))


def _jitter(rng: random.Random, c: RGB, amount: int = 18) -> RGB:
    return cast(RGB, tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c))


def _shade(c: RGB, factor: float) -> RGB:
    return cast(RGB, tuple(max(0, min(255, round(v * factor))) for v in c))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return cast(RGB, tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True)))


def _noise(rng: random.Random, size: tuple[int, int], cell: tuple[float, float]) -> Image.Image:
    w, h = size
    sw, sh = max(2, math.ceil(w / cell[0]) + 1), max(2, math.ceil(h / cell[1]) + 1)
    small = Image.frombytes("L", (sw, sh), rng.randbytes(sw * sh))
    return small.resize(size, Image.Resampling.BICUBIC)


def _fractal(rng: random.Random, size: tuple[int, int], cell: float, stretch: float = 1.0,
             octaves: int = 4) -> Image.Image:
    out = _noise(rng, size, (cell * stretch, cell))
    for k, weight in ((2, 0.4), (4, 0.3), (8, 0.2))[: octaves - 1]:
        out = Image.blend(out, _noise(rng, size, (cell * stretch / k, cell / k)), weight)
    return ImageOps.autocontrast(out, cutoff=1)


_FLIPS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180)


class _Detail:
    """Two fractal noises of a picture, from which many distinct-looking textures are mixed cheaply."""

    def __init__(self, rng: random.Random, size: tuple[int, int]):
        self.size = size
        self.fine = _fractal(rng, size, rng.uniform(6, 10))
        self.coarse = _fractal(rng, size, rng.uniform(20, 40), octaves=2)
        self._n = rng.randrange(4)

    def texture(self, colour: RGB, contrast: float = 0.35, coarseness: float = 0.4) -> Image.Image:
        self._n += 1
        fine, coarse = self.fine, self.coarse
        if (flip := _FLIPS[self._n % 4]) is not None:
            fine = fine.transpose(flip)
        if (flip := _FLIPS[(self._n * 3 + 1) % 4]) is not None:
            coarse = coarse.transpose(flip)
        return ImageOps.colorize(Image.blend(fine, coarse, coarseness), _shade(colour, 1 - contrast),
                                 _shade(colour, 1 + contrast))


def _texture(rng: random.Random, size: tuple[int, int], colour: RGB, cell: float, contrast: float = 0.35,
             stretch: float = 1.0) -> Image.Image:
    return ImageOps.colorize(_fractal(rng, size, cell, stretch, octaves=3), _shade(colour, 1 - contrast),
                             _shade(colour, 1 + contrast))


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    return ImageOps.colorize(Image.linear_gradient("L").resize(size), top, bottom)


def _glow(img: Image.Image, colour: RGB, centre: tuple[float, float], r: float, blur: float, level: int) -> None:
    """A soft disc, blurred in a tile of its own rather than over the whole picture."""
    pad = r + 3 * blur
    tile = (math.ceil(2 * pad), math.ceil(2 * pad))
    mask = Image.new("L", tile, 0)
    ImageDraw.Draw(mask).ellipse((pad - r, pad - r, pad + r, pad + r), fill=level)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    img.paste(colour, (round(centre[0] - pad), round(centre[1] - pad), round(centre[0] - pad) + tile[0],
                       round(centre[1] - pad) + tile[1]), mask)


def _ridge(rng: random.Random, w: int, base: float, amp: float) -> list[tuple[float, float]]:
    waves = [(rng.uniform(0.6, 2.5) * k, rng.uniform(0, 2 * math.pi), amp / k) for k in (1, 2.3, 5.1, 11.7)]
    return [(x, base - sum(a * math.sin(f * 2 * math.pi * x / w + p) for f, p, a in waves))
            for x in range(-4, w + 8, 4)]


@cache
def _grain(size: tuple[int, int]) -> Image.Image:
    w, h = size[0] * 2, size[1] * 2
    return Image.frombytes("L", (w, h), random.Random(size[0] * 7919 + size[1]).randbytes(w * h)).convert("RGB")


def _finish(rng: random.Random, img: Image.Image) -> Image.Image:
    w, h = img.size
    x, y = rng.randrange(w), rng.randrange(h)
    grain = _grain(img.size).crop((x, y, x + w, y + h))
    return Image.blend(img, grain, 0.05).filter(ImageFilter.GaussianBlur(0.5))


def landscape(rng: random.Random, size: tuple[int, int], horizon: float) -> Image.Image:
    """Sky with clouds and a sun over layered textured hills, trees in front; `horizon` is a share of height."""
    w, h = size
    palette = rng.choice(_PALETTES)
    detail = _Detail(rng, size)
    sky_top, sky_low = (_jitter(rng, c) for c in palette["sky"])
    img = _gradient(size, sky_top, sky_low)
    clouds = _fractal(rng, size, rng.uniform(50, 120), stretch=rng.uniform(1.5, 3.0), octaves=3)
    cut = rng.randint(110, 160)
    img.paste(_mix(sky_low, WHITE, 0.7), (0, 0), clouds.point(lambda v: max(0, min(210, (v - cut) * 3))))
    sun = _jitter(rng, palette["sun"][0], 6)
    centre, r = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.08, 0.3) * h), rng.uniform(0.04, 0.08) * w
    _glow(img, sun, centre, 2.5 * r, r, 90)
    _glow(img, sun, centre, r, 1.0, 255)
    layers = len(palette["land"])
    for i, colour in enumerate(palette["land"]):
        base = h * (horizon + (1 - horizon) * 0.22 * i) + rng.uniform(-0.03, 0.03) * h
        ridge = _ridge(rng, w, base, h * rng.uniform(0.04, 0.09) / (1 + 0.4 * i))
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).polygon([(-4, h), *ridge, (w + 8, h)], fill=255)
        haze = 0.45 * (layers - 1 - i) / layers
        tone = _mix(_jitter(rng, colour), sky_low, haze)
        img.paste(detail.texture(tone, coarseness=rng.uniform(0.2, 0.7)), (0, 0), mask)
    _trees(rng, img, detail, palette["land"][-1], horizon)
    return _finish(rng, img)


def _trees(rng: random.Random, img: Image.Image, detail: _Detail, colour: RGB, horizon: float) -> None:
    w, h = img.size
    crowns, trunks = Image.new("L", img.size, 0), Image.new("L", img.size, 0)
    cd, td = ImageDraw.Draw(crowns), ImageDraw.Draw(trunks)
    for _ in range(rng.randint(2, 6)):
        x, foot = rng.uniform(0.05, 0.95) * w, rng.uniform(horizon + 0.12, 0.98) * h
        tall = rng.uniform(0.12, 0.3) * h
        td.rectangle((x - tall * 0.04, foot - tall * 0.55, x + tall * 0.04, foot), fill=255)
        if rng.random() < 0.5:
            cd.polygon([(x, foot - tall), (x - tall * 0.28, foot - tall * 0.25), (x + tall * 0.28, foot - tall * 0.25)],
                       fill=255)
        else:
            r = tall * rng.uniform(0.22, 0.32)
            cd.ellipse((x - r, foot - tall, x + r, foot - tall + 2.2 * r), fill=255)
    img.paste(_shade(_jitter(rng, (90, 60, 40)), 0.8), (0, 0), trunks)
    img.paste(detail.texture(_shade(_jitter(rng, colour), 0.9), contrast=0.5, coarseness=0.1), (0, 0), crowns)


def still_life(rng: random.Random, size: tuple[int, int], table: float) -> Image.Image:
    """A wall lit from above, a wooden table from `table` (share of height) down, fruit and a glass on it."""
    w, h = size
    detail = _Detail(rng, size)
    top, low = (_jitter(rng, c) for c in rng.choice(_WALLS))
    img = Image.blend(_gradient(size, top, low), detail.texture(_mix(top, low, 0.5), 0.15, 0.8), 0.3)
    ty = round(table * h)
    wood = _texture(rng, (w, h - ty), _jitter(rng, (150, 100, 60), 25), 4, 0.35, stretch=12)
    img.paste(wood, (0, ty))
    shadows = Image.new("L", size, 0)
    objects: list[tuple[float, float, float, RGB]] = []
    for _ in range(rng.randint(2, 4)):
        r = rng.uniform(0.07, 0.14) * w
        cx, cy = rng.uniform(0.1, 0.9) * w, ty + rng.uniform(0.02, 0.25) * h - r * 0.6
        objects.append((cx, cy, r, _jitter(rng, rng.choice(_FRUIT), 20)))
        ImageDraw.Draw(shadows).ellipse((cx - r * 1.1, cy + r * 0.5, cx + r * 1.4, cy + r * 1.1), fill=120)
    gx, gw = rng.uniform(0.15, 0.85) * w, rng.uniform(0.08, 0.14) * w
    glass_box = (gx - gw / 2, ty - rng.uniform(0.3, 0.5) * h, gx + gw / 2, ty + 0.05 * h)
    ImageDraw.Draw(shadows).rectangle((glass_box[0] + gw * 0.3, glass_box[3] - 6, glass_box[2] + gw, glass_box[3] + 6),
                                      fill=90)
    img.paste((30, 20, 10), (0, 0), shadows.filter(ImageFilter.GaussianBlur(6)))
    juice = _jitter(rng, rng.choice(_FRUIT), 15)
    glass = Image.new("L", size, 0)
    draw = ImageDraw.Draw(glass)
    draw.rounded_rectangle(glass_box, radius=gw * 0.15, fill=140)
    img.paste(_gradient(size, _mix(juice, WHITE, 0.4), juice), (0, 0), glass)
    glass.paste(0, (0, 0, w, h))
    draw.rectangle((glass_box[0] + gw * 0.15, glass_box[1] + 8, glass_box[0] + gw * 0.28, glass_box[3] - 8), fill=120)
    img.paste(WHITE, (0, 0), glass)
    for cx, cy, r, colour in sorted(objects, key=lambda o: o[1]):
        _fruit(rng, img, (cx, cy), r, colour)
    return _finish(rng, img)


def _fruit(rng: random.Random, img: Image.Image, centre: tuple[float, float], r: float, colour: RGB) -> None:
    d = max(4, round(2 * r))
    light = round(0.7 * d)
    shading = Image.radial_gradient("L").resize((2 * d, 2 * d)).crop((light, light, light + d, light + d))
    body = ImageOps.colorize(shading, _mix(colour, WHITE, 0.45), _shade(colour, 0.45), mid=colour)
    body = Image.blend(body, _texture(rng, (d, d), colour, 3, 0.2), 0.25)
    mask = Image.new("L", (d, d), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, d - 1, d - 1), fill=255)
    img.paste(body, (round(centre[0] - r), round(centre[1] - r)), mask)
    if rng.random() < 0.6:
        stem = (round(centre[0]), round(centre[1] - r))
        ImageDraw.Draw(img).line((stem[0], stem[1] + 3, stem[0] + r * 0.15, stem[1] - r * 0.25), fill=(70, 50, 20),
                                 width=max(2, round(r * 0.06)))


def picture(rng: random.Random, size: tuple[int, int], horizon: tuple[float, float]) -> Image.Image:
    """A scene whose horizon (or table edge) lies within `horizon` (shares of the height)."""
    level = rng.uniform(*horizon)
    return still_life(rng, size, level + 0.1) if rng.random() < 0.3 else landscape(rng, size, level)


def three_d_scene(rng: random.Random) -> Image.Image:
    """Extruded letters on a light floor with soft shadows, two of them alike (the real 3d challenge's look)."""
    w, h = BG_SIZE
    img = _gradient(BG_SIZE, _jitter(rng, (248, 248, 248), 4), _jitter(rng, (236, 236, 236), 4))
    glyphs = [rng.choice("23456789ABEFHKMPRSVXYZahkrwy") for _ in range(rng.randint(3, 5))]
    colours = [_jitter(rng, rng.choice(((200, 120, 220), (140, 200, 140), (190, 170, 160), (120, 170, 220))), 10)
               for _ in glyphs]
    glyphs.append(glyphs[0])
    colours.append(colours[0])
    shadows = Image.new("L", BG_SIZE, 0)
    placed: list[tuple[str, RGB, int, tuple[float, float]]] = []
    for glyph, colour in zip(glyphs, colours, strict=True):
        size = rng.randint(40, 110)
        pos = (rng.uniform(20, w - size - 20), rng.uniform(10, h - size - 25))
        placed.append((glyph, colour, size, pos))
        ImageDraw.Draw(shadows).text((pos[0] - size * 0.4, pos[1] + size * 0.2), glyph, fill=110, font=_font(size))
    img.paste((90, 90, 90), (0, 0), shadows.filter(ImageFilter.GaussianBlur(5)))
    draw = ImageDraw.Draw(img)
    for glyph, colour, size, (x, y) in sorted(placed, key=lambda p: p[3][1] + p[2]):
        depth = max(3, size // 10)
        for k in range(depth, 0, -1):
            draw.text((x + k, y + k * 0.6), glyph, fill=_shade(colour, 0.7), font=_font(size))
        draw.text((x, y), glyph, fill=colour, font=_font(size))
    return img.filter(ImageFilter.GaussianBlur(0.4))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# -- challenge images ----------------------------------------------------------------------------------------------


@cache
def _disc(size: int, radius: float, hole: float = 0.0) -> Image.Image:
    """Anti-aliased mask of a centred disc (minus a centred hole), drawn 4x larger then reduced."""
    big, c = size * 4, size * 2
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((c - radius * 4, c - radius * 4, c + radius * 4, c + radius * 4), fill=255)
    if hole:
        draw.ellipse((c - hole * 4, c - hole * 4, c + hole * 4, c + hole * 4), fill=0)
    return mask.resize((size, size), Image.Resampling.BOX)


def _cut(img: Image.Image, mask: Image.Image, variant: Format) -> Image.Image:
    if variant == "png":
        out = img.convert("RGBA")
        out.putalpha(mask)
        return out
    out = Image.new("RGB", img.size, WHITE)
    out.paste(img, (0, 0), mask)
    return out


def whirl_images(scene: Image.Image, angle: float, variant: Format) -> tuple[Image.Image, Image.Image]:
    """Outer ring (hole r = 105.5, corners cut) and the inner disc turned so that `angle` degrees clockwise fix it."""
    outer = _cut(scene, _disc(OUTER_SIZE, OUTER_SIZE / 2, HOLE_RADIUS), variant)
    margin = (OUTER_SIZE - INNER_SIZE) // 2 - 2
    centre = scene.crop((margin, margin, OUTER_SIZE - margin, OUTER_SIZE - margin))
    turned = centre.rotate(angle, resample=Image.Resampling.BICUBIC).crop((2, 2, 2 + INNER_SIZE, 2 + INNER_SIZE))
    return outer, _cut(turned, _disc(INNER_SIZE, INNER_SIZE / 2), variant)


def piece_mask(rng: random.Random) -> Image.Image:
    """A jigsaw piece in a 110x110 tile, as real slides draw it: its shape begins PIECE_INSET px (6-7) inside the
    tile's left edge (the answer is the tile's left edge, not the shape's); knobs stick out or in elsewhere."""
    s = 4
    side = rng.randint(62, 72)
    r = rng.uniform(10, 12)
    reach = r * 0.6
    x0, y0 = rng.uniform(*PIECE_INSET), (PIECE_SIZE - side) / 2
    x1, y1 = x0 + side, y0 + side
    cx, cy = (x0 + x1) / 2 + rng.uniform(-6, 6), (y0 + y1) / 2 + rng.uniform(-6, 6)
    big = Image.new("L", (PIECE_SIZE * s, PIECE_SIZE * s), 0)
    draw = ImageDraw.Draw(big)
    draw.rounded_rectangle((x0 * s, y0 * s, x1 * s - 1, y1 * s - 1), radius=3 * s, fill=255)

    def knob(x: float, y: float, out: bool) -> None:
        draw.ellipse(((x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s), fill=255 if out else 0)

    right_out = rng.random() < 0.75
    knob(x1 + reach if right_out else x1 - reach, cy, right_out)
    if rng.random() < 0.8:
        top_out = rng.random() < 0.6
        knob(cx, y0 - reach if top_out else y0 + reach, top_out)
    if rng.random() < 0.6:
        bottom_out = rng.random() < 0.5
        knob(cx, y1 + reach if bottom_out else y1 - reach, bottom_out)
    if rng.random() < 0.4:
        knob(x0 + reach, cy, False)
    return big.resize((PIECE_SIZE, PIECE_SIZE), Image.Resampling.BOX)


def slide_images(scene: Image.Image, gap_x: int, tip_y: int, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The background with the gap carved (darkened, with a white stroke about 2 px wide along its outline, as on
    real slides) and the piece cut from the untouched scene."""
    box = (gap_x, tip_y, gap_x + PIECE_SIZE, tip_y + PIECE_SIZE)
    tile = scene.crop(box)
    rim = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(5)))
    carved = Image.blend(tile, Image.new("RGB", tile.size, (10, 10, 10)), 0.55)
    carved.paste(WHITE, (0, 0), rim)
    background = scene.copy()
    background.paste(carved, box[:2], mask)
    piece = tile.copy()
    piece.paste(WHITE, (0, 0), rim.point(lambda v: v // 3))
    piece = piece.convert("RGBA")
    piece.putalpha(mask)
    return background, piece


# -- generation ----------------------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def save(self, img: Image.Image, name: str, fmt: Format, path: str) -> ImageRef:
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG", compress_level=1)
        elif fmt == "webp":
            img.convert("RGB").save(buf, "WEBP", quality=85)
        else:
            img.convert("RGB").save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        file = f"{name}.{ {'png': 'png', 'webp': 'webp', 'jpeg': 'jpg'}[fmt] }"
        (self.out_dir / file).write_bytes(data)
        return ImageRef(file, path, hashlib.sha256(data).hexdigest(), img.width, img.height, fmt)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _paths(rng: random.Random, style: str, mode: Mode, formats: Sequence[Format]) -> list[str]:
    legacy = _hex(rng, 40)
    return [image_path(style, mode, _hex(rng, 32), legacy, n, fmt) for n, fmt in enumerate(formats, start=1)]


def make_whirl(writer: _Writer, seed: int, i: int, widget: Widget) -> WhirlChallenge:
    rng = random.Random(f"{seed}/whirl/{i}")
    variant: Format = "png" if i % 2 == 0 else "jpeg"
    cid, style = _hex(rng, 40), STYLE_CYCLE[i % len(STYLE_CYCLE)]
    angle = round(rng.uniform(*ANGLE_RANGE), 1)
    outer, inner = whirl_images(picture(rng, (OUTER_SIZE, OUTER_SIZE), (0.35, 0.6)), angle, variant)
    p1, p2 = _paths(rng, style, "whirl", (variant, variant))
    name = f"whirl-{i:04d}"
    return WhirlChallenge(id=cid, variant=variant, url_style=style, angle=angle,
                          drag_px=round(angle / 360 * widget.travel, 1),
                          images={"outer": writer.save(outer, f"{name}-outer", variant, p1),
                                  "inner": writer.save(inner, f"{name}-inner", variant, p2)})


def make_slide(writer: _Writer, seed: int, i: int) -> SlideChallenge:
    rng = random.Random(f"{seed}/slide/{i}")
    cid, style = _hex(rng, 40), STYLE_CYCLE[(i + 3) % len(STYLE_CYCLE)]
    gap_x, tip_y = rng.randint(*GAP_X_RANGE), rng.randint(*TIP_Y_RANGE)
    background, piece = slide_images(picture(rng, BG_SIZE, (0.3, 0.6)), gap_x, tip_y, piece_mask(rng))
    p1, p2 = _paths(rng, style, "slide", ("jpeg", "png"))
    name = f"slide-{i:04d}"
    return SlideChallenge(id=cid, variant="jpeg", url_style=style, gap_x=gap_x, tip_y=tip_y,
                          images={"background": writer.save(background, f"{name}-background", "jpeg", p1),
                                  "piece": writer.save(piece, f"{name}-piece", "png", p2)})


def make_3d(writer: _Writer, seed: int, i: int) -> ThreeDChallenge:
    """PNG bytes under a `.jpeg`/`.jpg` path, as the published 3d sample was."""
    rng = random.Random(f"{seed}/3d/{i}")
    cid, style = _hex(rng, 40), STYLE_CYCLE[(i + 6) % len(STYLE_CYCLE)]
    (path,) = _paths(rng, style, "3d", ("jpeg",))
    image = three_d_scene(rng).convert("RGBA")
    return ThreeDChallenge(id=cid, variant="png", url_style=style,
                           images={"image": writer.save(image, f"3d-{i:04d}-image", "png", path)})


SAMPLES_3D = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "3d-train"
"""The real labelled 3d captchas (read at run time, never copied into the repository)."""
ICON_PROMPTS = {"circle": "Which of these objects are round?", "square": "Which of these objects are square?",
                "triangle": "Which of these objects have three corners?"}


def object_path(rng: random.Random, mode: Mode, fmt: Format) -> str:
    """A newest-style object image path: `/tos-maliva-i-b4yrtqhy5a-us/3d_2385_<40 hex>_1.jpg~tplv-...`."""
    ext = {"png": "1.png", "jpeg": "2.jpeg", "webp": "3.webp"}[fmt]
    return f"/tos-maliva-i-b4yrtqhy5a-us/{mode}_2385_{_hex(rng, 40)}_1.jpg~tplv-b4yrtqhy5a-{ext}"


def make_real_3d(writer: _Writer, name: str, fmt: Format, samples: Path = SAMPLES_3D) -> ThreeDChallenge:
    """A 3d challenge from one labelled real image (`name` in its labels.json, whose `pair` is not null): its two
    boxes of the duplicated shape are the truth. JPEG is the file's own bytes; PNG and WebP are re-encoded."""
    labels = json.loads((samples / "labels.json").read_text())["labels"][name]
    pair = labels["pair"]
    if pair is None:
        raise ValueError(f"{name} has no pair")
    targets = [b["box"] for b in labels["boxes"] if b["cls"] == pair["cls"]]
    rng = random.Random(f"real3d/{name}/{fmt}")
    cid, path = _hex(rng, 40), object_path(rng, "3d", fmt)
    if fmt == "jpeg":
        data = (samples / name).read_bytes()
        file = f"3d-{name}"
        (writer.out_dir / file).write_bytes(data)
        with Image.open(io.BytesIO(data)) as img:
            ref = ImageRef(file, path, hashlib.sha256(data).hexdigest(), img.width, img.height, "jpeg")
    else:
        with Image.open(samples / name) as img:
            ref = writer.save(img.convert("RGB"), f"3d-{Path(name).stem}-{fmt}", fmt, path)
    return ThreeDChallenge(id=cid, variant=fmt, url_style="b4yrtqhy5a", images={"image": ref}, targets=targets)


def real_3d_names(count: int, samples: Path = SAMPLES_3D) -> list[str]:
    """The first `count` files with a pair, one per source picture."""
    labels = json.loads((samples / "labels.json").read_text())["labels"]
    seen: set[str] = set()
    out = []
    for name in sorted(labels):
        entry = labels[name]
        pair = entry["pair"]
        if pair is not None and entry["source"] not in seen and [b["cls"] for b in entry["boxes"]].count(pair["cls"]) == 2:
            seen.add(entry["source"])
            out.append(name)
        if len(out) == count:
            break
    return out


def make_icon(writer: _Writer, seed: int, i: int, fmt: Format = "png") -> IconChallenge:
    """A made-up icon challenge: six shapes on a pale ground, two of them the prompt's kind (the targets)."""
    rng = random.Random(f"{seed}/icon/{i}")
    cid = _hex(rng, 40)
    wanted = list(ICON_PROMPTS)[i % len(ICON_PROMPTS)]
    others = [k for k in ICON_PROMPTS if k != wanted]
    shapes = [wanted, wanted] + [rng.choice(others) for _ in range(4)]
    rng.shuffle(shapes)
    img = Image.new("RGB", BG_SIZE, (236, 234, 228))
    draw = ImageDraw.Draw(img)
    targets: list[list[float]] = []
    for n, shape in enumerate(shapes):
        cx, cy = 60 + (n % 3) * 180 + rng.uniform(-15, 15), 90 + (n // 3) * 170 + rng.uniform(-15, 15)
        r = rng.uniform(28, 40)
        colour = (rng.randint(30, 200), rng.randint(30, 200), rng.randint(30, 200))
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        if shape == wanted:
            targets.append([round(cx, 1), round(cy, 1), round(2 * r, 1), round(2 * r, 1)])
    path = object_path(rng, "icon", fmt)
    ref = writer.save(img, f"icon-{i:04d}", fmt, path)
    return IconChallenge(id=cid, variant=fmt, url_style="b4yrtqhy5a", images={"image": ref}, targets=targets,
                         question=ICON_PROMPTS[wanted])


def add_object_challenges(out_dir: Path | str, *, real_3d: Sequence[tuple[str, Format]] = (), icons: int = 0,
                          seed: int = 1) -> Manifest:
    """Adds 3d challenges from the real labelled images (file name, format) and `icons` made-up icon challenges
    to the manifest in `out_dir` (written by `generate`)."""
    root = Path(out_dir)
    manifest = load_manifest(root)
    writer = _Writer(root)
    # The made-up 3d scenes have no truth: the real ones take their place.
    manifest.challenges = [c for c in manifest.challenges if not isinstance(c, ThreeDChallenge)]
    manifest.challenges += [make_real_3d(writer, name, fmt) for name, fmt in real_3d]
    manifest.challenges += [make_icon(writer, seed, i) for i in range(icons)]
    (root / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1) + "\n")
    return manifest


def three_d_count(count: int) -> int:
    return count // 10 + 1


def generate(out_dir: Path | str, seed: int, count: int) -> Manifest:
    """`count` whirl challenges (even indexes PNG, odd JPEG), `count` slide ones and `count // 10 + 1` 3d ones."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    writer, widget = _Writer(root), Widget()
    challenges: list[AnyChallenge] = []
    challenges += [make_whirl(writer, seed, i, widget) for i in range(count)]
    challenges += [make_slide(writer, seed, i) for i in range(count)]
    challenges += [make_3d(writer, seed, i) for i in range(three_d_count(count))]
    manifest = Manifest(seed=seed, widget=widget, challenges=challenges, root=root)
    (root / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write synthetic whirl, slide and 3d captchas and their manifest.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=50, help="whirl and slide challenges each")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    start = time.perf_counter()
    manifest = generate(args.out, args.seed, args.count)
    seconds = time.perf_counter() - start
    print(json.dumps({"dir": str(args.out), "challenges": len(manifest.challenges), "seconds": round(seconds, 2),
                      "ms_per_challenge": round(1000 * seconds / max(1, len(manifest.challenges)), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
