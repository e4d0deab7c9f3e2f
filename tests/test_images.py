from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from addon.capture import images
from addon.capture.images import BadImage, Role
from tests.conftest import sample


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "role", "fmt", "alpha"),
    [
        ("whirl-png-outer-347.png", Role.OUTER, "png", True),
        ("whirl-png-inner-211.png", Role.INNER, "png", True),
        ("whirl-jpeg-outer-347.jpg", Role.OUTER, "jpeg", False),
        ("whirl-jpeg-inner-211.jpg", Role.INNER, "jpeg", False),
    ],
)
def test_real_whirl_samples(name: str, role: Role, fmt: str, alpha: bool) -> None:
    body = sample(name)
    info = images.probe(body)
    assert (info.format, info.has_alpha) == (fmt, alpha)
    assert images.role_by_geometry(info) is role
    assert images.has_open_centre(body) is (role is Role.OUTER)


def test_3d_sample_is_only_a_background_candidate() -> None:
    body = sample("3d-552x344.png")
    info = images.probe(body)
    assert (info.width, info.height) == (552, 344)
    assert images.role_by_geometry(info) is Role.BACKGROUND


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_formats_and_sizes_from_headers(fmt: str) -> None:
    mode = "RGBA" if fmt in ("PNG", "WEBP") else "RGB"
    body = encode(Image.new(mode, (110, 110), (10, 20, 30, 0) if mode == "RGBA" else (1, 2, 3)), fmt)
    info = images.probe(body)
    assert (info.format, info.width, info.height) == (fmt.lower(), 110, 110)
    if fmt in ("PNG", "GIF"):
        assert images.role_by_geometry(info) is Role.PIECE


def test_piece_needs_alpha() -> None:
    info = images.probe(encode(Image.new("RGB", (110, 110)), "JPEG"))
    assert images.role_by_geometry(info) is None


def test_decompression_bomb_is_refused_from_the_header() -> None:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(BadImage, match="too large"):
        images.probe(b"\x89PNG\r\n\x1a\n" + chunk)


@pytest.mark.parametrize("body", [b"", b"<html>", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"GIF8"])
def test_garbage_is_bad_image(body: bytes) -> None:
    with pytest.raises(BadImage):
        images.probe(body)


def test_truncated_image_fails_decode_not_probe() -> None:
    body = encode(Image.effect_noise((347, 347), 60).convert("RGB"), "JPEG")
    info = images.probe(body[: len(body) // 3])
    assert info.width == 347
    with pytest.raises(BadImage):
        images.decode(body[: len(body) // 3])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_complete_images_pass_and_cut_ones_fail_the_end_marker_check(fmt: str) -> None:
    body = encode(Image.effect_noise((211, 211), 50).convert("RGB"), fmt)
    info = images.probe(body)
    images.check_complete(body, info)
    with pytest.raises(BadImage, match="truncated"):
        images.check_complete(body[: len(body) * 2 // 3], info)
