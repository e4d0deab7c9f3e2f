"""Image sniffing: format from magic bytes, size from the header, and the captcha role an image's geometry implies."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image

from addon.kinds import Role as Role  # re-exported: the roles live with the kinds

MAX_PIXELS = 4_000_000
"""Larger images are refused before anything is decoded: captcha parts are at most 552x344."""


class BadImage(ValueError):
    """The bytes are not an image this addon can use; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    width: int
    height: int
    has_alpha: bool


def probe(body: bytes) -> ImageInfo:
    """Reads format, size and whether there is an alpha channel from the header alone."""
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        info = _png(body)
    elif body.startswith(b"\xff\xd8\xff"):
        info = _jpeg(body)
    elif body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        info = _webp(body)
    elif body[:6] in (b"GIF87a", b"GIF89a"):
        info = _gif(body)
    else:
        raise BadImage("not a PNG, JPEG, WebP or GIF (unknown magic bytes)")
    if info.width <= 0 or info.height <= 0:
        raise BadImage(f"{info.format} header gives an empty size {info.width}x{info.height}")
    if info.width * info.height > MAX_PIXELS:
        raise BadImage(f"{info.format} header announces {info.width}x{info.height}, too large to be a captcha")
    return info


def _png(b: bytes) -> ImageInfo:
    if len(b) < 33 or b[12:16] != b"IHDR":
        raise BadImage("PNG without an IHDR header")
    width, height = struct.unpack(">II", b[16:24])
    color_type = b[25]
    alpha = color_type in (4, 6)
    if not alpha and color_type == 3:
        pos = 33
        while pos + 8 <= len(b):
            length, kind = struct.unpack(">I4s", b[pos : pos + 8])
            if kind == b"tRNS":
                alpha = True
                break
            if kind == b"IDAT":
                break
            pos += 12 + length
    return ImageInfo("png", width, height, alpha)


_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _jpeg(b: bytes) -> ImageInfo:
    pos = 2
    n = len(b)
    while pos + 4 <= n:
        if b[pos] != 0xFF:
            raise BadImage("JPEG with a broken marker sequence")
        marker = b[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", b[pos + 2 : pos + 4])
        if marker in _SOF:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", b[pos + 5 : pos + 9])
            return ImageInfo("jpeg", width, height, False)
        if marker in (0xD9, 0xDA) or length < 2:
            break
        pos += 2 + length
    raise BadImage("JPEG without a frame header (truncated?)")


def _webp(b: bytes) -> ImageInfo:
    kind = b[12:16]
    if kind == b"VP8X" and len(b) >= 30:
        alpha = bool(b[20] & 0x10)
        width = 1 + int.from_bytes(b[24:27], "little")
        height = 1 + int.from_bytes(b[27:30], "little")
        return ImageInfo("webp", width, height, alpha)
    if kind == b"VP8L" and len(b) >= 25 and b[20] == 0x2F:
        bits = int.from_bytes(b[21:25], "little")
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1))
    if kind == b"VP8 " and len(b) >= 30 and b[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", b[26:30])
        return ImageInfo("webp", width & 0x3FFF, height & 0x3FFF, False)
    raise BadImage("WebP without a readable frame header")


def _gif(b: bytes) -> ImageInfo:
    if len(b) < 10:
        raise BadImage("GIF header truncated")
    width, height = struct.unpack("<HH", b[6:10])
    return ImageInfo("gif", width, height, True)


def _near(value: int, target: int, tolerance: int) -> bool:
    return abs(value - target) <= tolerance


def role_by_geometry(info: ImageInfo) -> Role | None:
    """The role an image's size alone suggests; OUTER still needs `has_open_centre` to be believed.

    Never an object image's role: a 3d or icon image is 552x344 like a slide background, and only a get or its
    path (`addon.kinds.kind_by_path`) tells them apart."""
    w, h = info.width, info.height
    if w == h:
        if _near(w, 347, 8):
            return Role.OUTER
        if _near(w, 211, 8):
            return Role.INNER
        if _near(w, 110, 6) and info.has_alpha:
            return Role.PIECE
        return None
    if _near(w, 552, 8) and _near(h, 344, 8):
        return Role.BACKGROUND
    return None


_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


def check_complete(body: bytes, info: ImageInfo) -> None:
    """Raises BadImage when the body stops before its format's end marker (a truncated download).

    Much cheaper than decoding: it runs before every job, so a cut image fails without costing one.
    """
    tail = body[-64:]
    if info.format == "png":
        complete = b"IEND\xaeB`\x82" in tail
    elif info.format == "jpeg":
        complete = b"\xff\xd9" in tail
    elif info.format == "gif":
        complete = b"\x3b" in tail[-16:]
    else:
        complete = len(body) >= 8 + int.from_bytes(body[4:8], "little")
    if not complete:
        raise BadImage(f"{info.format} ends before its end marker (truncated)")


def decode(body: bytes) -> Image.Image:
    """Decodes the whole image (after `probe` accepted its size); raises BadImage for truncated or corrupt data."""
    try:
        with Image.open(io.BytesIO(body), formats=_FORMATS) as img:
            # Pillow's idea of the size can differ from probe's (a later JPEG SOF, a GIF frame larger than its
            # screen), so the ceiling is checked again before any pixel memory is allocated.
            if img.width * img.height > MAX_PIXELS:
                raise BadImage(f"image decodes to {img.width}x{img.height}, too large to be a captcha")
            img.load()
            return img.copy()
    except BadImage:
        raise
    except Exception as e:
        # Hostile bytes make Pillow's decoders raise more than OSError/ValueError (struct.error, EOFError,
        # IndexError, MemoryError, ...); every one of them means the same thing here.
        raise BadImage(f"image does not decode: {type(e).__name__}") from None


def has_open_centre(body: bytes) -> bool:
    """True when the middle of the image is transparent or white: the hole of a rotate captcha's outer ring."""
    img = decode(body)
    w, h = img.size
    r = min(w, h) * 0.22
    cx, cy = w / 2, h / 2
    samples = [(cx + dx * r, cy + dy * r) for dx in (-1, -0.5, 0, 0.5, 1) for dy in (-1, -0.5, 0, 0.5, 1)]
    try:
        rgba = img.convert("RGBA")
    except (OSError, ValueError) as e:
        raise BadImage(f"image mode {img.mode} does not convert to RGBA: {type(e).__name__}") from None
    open_points = 0
    for x, y in samples:
        red, green, blue, alpha = rgba.getpixel((int(x), int(y)))  # type: ignore[misc]
        if alpha < 32 or min(red, green, blue) > 235:
            open_points += 1
    return open_points >= len(samples) * 0.8


OBJECT_ASPECT = (1.3, 1.95)
"""Width / height of an object captcha's image: 552x344 is 1.6; a square or a strip is not one."""
OBJECT_MIN_WIDTH = 200
BLANK_SPREAD = 8
"""An image whose every channel spans fewer levels than this is blank: there are no objects on it."""


def check_object_image(body: bytes, info: ImageInfo) -> None:
    """Raises BadImage unless the body is a whole, decodable, non-blank picture shaped like a 3d/icon image.

    Runs before any paid job (off the event loop: it decodes the image)."""
    check_complete(body, info)
    aspect = info.width / info.height
    if info.width < OBJECT_MIN_WIDTH or not OBJECT_ASPECT[0] <= aspect <= OBJECT_ASPECT[1]:
        raise BadImage(f"{info.width}x{info.height} is not the size of an object captcha's image (552x344)")
    img = decode(body)
    try:
        extrema = img.convert("RGB").getextrema()
    except (OSError, ValueError) as e:
        raise BadImage(f"image mode {img.mode} does not convert to RGB: {type(e).__name__}") from None
    if all(int(hi) - int(lo) < BLANK_SPREAD for lo, hi in extrema):  # type: ignore[misc]
        raise BadImage("the image is blank (one colour): no objects to pick")
