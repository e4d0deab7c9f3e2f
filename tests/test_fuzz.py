"""Hostile input for the pure parsers (edata, images, recognise, bodies) and for the response hook.

The rule under test: on any input each parser returns a sensible result or raises its documented error
(EdataError, BadImage, NotRecognised, BodyTooLarge / ValueError), never anything else, and refuses bombs
(huge announced images, compression bombs, deep JSON, huge edata) cheaply.

The hypothesis runs are derandomized so the suite cannot flake; for a longer random campaign run e.g.
`CAPTCHA_FUZZ_RANDOM=1 CAPTCHA_FUZZ_SCALE=20 uv run pytest tests/test_fuzz.py` (the suite's default is 0.2).
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import copy
import functools
import io
import json
import logging
import math
import os
import random
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils
from PIL import Image, ImageCms, ImageDraw, PngImagePlugin

from addon.capture import edata, images, recognise
from addon.capture.bodies import BodyTooLarge, bounded_content
from addon.capture.clients import ClientKeyer
from addon.capture.images import BadImage, ImageInfo, Role
from addon.capture.recognise import AnnouncedChallenge, Kind, NotRecognised, VerifyRequest
from addon.mitm.capture import MAX_IMAGE_BODY, CaptchaCapture
from addon.mitm.outlets import CaptchaEvents
from addon.wiring import build_addons
from tests.conftest import SAMPLES, samples_missing

MB = 1024 * 1024
JSON_LIMIT = recognise.MAX_JSON_BODY
SCALE = float(os.environ.get("CAPTCHA_FUZZ_SCALE", "0.2"))
"""The share of each test's full example count that a run makes: 0.2 keeps the suite quick (the inputs are
derandomized, so every run replays the same cases); 1 is the full campaign the counts were set for."""
RANDOM = bool(os.environ.get("CAPTCHA_FUZZ_RANDOM"))
CDN = "p16-rc-captcha-va.ibyteimg.com"
VERIFY_HOST = "verification-va.tiktok.com"


ANY_CHAR = st.characters(exclude_categories=()) | st.sampled_from("\ud800\udcff\x00\ufeff/:[]@?#%=+")
"""Any code point, lone surrogates included (JSON can carry them: "\\ud800")."""


def any_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(ANY_CHAR, max_size=max_size)


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=max(25, round(examples * SCALE)),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


def event(text: str) -> None:
    """Counts an outcome for `--hypothesis-show-statistics`; the check helpers also run outside hypothesis."""
    if currently_in_test_context():
        hypothesis_event(text)


@contextlib.contextmanager
def cheap(seconds: float = 1.0, megabytes: float | None = None) -> Iterator[None]:
    """Asserts the block is quick and (when megabytes is given) allocates little through Python's allocator.

    Generous bounds: what is measured takes milliseconds; without the guards it took seconds and hundreds of MB.
    The time is this thread's CPU time, not the wall clock: other processes on a loaded machine do not count.
    """
    if megabytes is not None:
        tracemalloc.start()
    start = time.thread_time()
    try:
        yield
    finally:
        elapsed = time.thread_time() - start
        peak = 0
        if megabytes is not None:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    if megabytes is not None:
        assert peak < megabytes * MB, f"peak {peak / MB:.1f} MB"


# ---------------------------------------------------------------------------------------------------------------
# images


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _ring(size: int) -> Image.Image:
    img = Image.effect_noise((size, size), 50).convert("RGBA")
    c, r = size // 2, size * 105 // 347
    ImageDraw.Draw(img).ellipse((c - r, c - r, c + r, c + r), fill=(0, 0, 0, 0))
    return img


@functools.cache
def corpus() -> tuple[bytes, ...]:
    """Small valid images of every format, mode and encoder flavour the probe knows; the mutation seeds."""
    noise = Image.effect_noise((64, 48), 40)
    palette = noise.convert("P")
    trns = Image.new("P", (110, 110), 1)
    trns.info["transparency"] = 0
    frames = [Image.new("P", (40, 30), i) for i in range(3)]
    anim_gif = io.BytesIO()
    frames[0].save(anim_gif, "GIF", save_all=True, append_images=frames[1:])
    anim_webp = io.BytesIO()
    Image.new("RGBA", (40, 30), (1, 2, 3, 4)).save(
        anim_webp, "WEBP", save_all=True, append_images=[Image.new("RGBA", (40, 30), (9, 9, 9, 9))]
    )
    rgb = noise.convert("RGB")
    mpo = io.BytesIO()
    rgb.save(mpo, "MPO", save_all=True, append_images=[rgb])
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x8769] = {0x9003: "2020:01:01 00:00:00"}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "x")
    text.add_text("z", "y" * 100, zip=True)
    text.add_itxt("i", "t", zip=True)
    metadata = {"exif": exif.tobytes(), "icc_profile": icc}
    return (
        encode(_ring(347), "PNG"),
        encode(_ring(96), "PNG"),
        encode(noise.convert("RGB"), "PNG"),
        encode(palette, "PNG"),
        encode(trns, "PNG"),
        encode(noise.convert("LA"), "PNG"),
        encode(noise.convert("I;16"), "PNG"),
        encode(noise.convert("1"), "PNG"),
        encode(noise.convert("RGBA"), "PNG", optimize=True),
        encode(noise, "PNG"),
        encode(_ring(347).convert("RGB"), "JPEG", quality=40),
        encode(noise.convert("RGB"), "JPEG"),
        encode(noise.convert("RGB"), "JPEG", progressive=True),
        encode(noise.convert("RGB"), "JPEG", subsampling=0, quality=95),
        encode(noise.convert("L"), "JPEG"),
        encode(noise.convert("CMYK"), "JPEG"),
        encode(noise.convert("RGB"), "WEBP"),
        encode(noise.convert("RGBA"), "WEBP"),
        encode(noise.convert("RGBA"), "WEBP", lossless=True),
        encode(noise.convert("RGB"), "WEBP", lossless=True),
        anim_webp.getvalue(),
        mpo.getvalue(),
        encode(rgb, "JPEG", **metadata),
        encode(rgb, "PNG", pnginfo=text, **metadata),
        encode(rgb, "WEBP", **metadata),
        encode(palette, "GIF", comment=b"hello", loop=0),
        encode(palette, "GIF"),
        encode(trns, "GIF"),
        anim_gif.getvalue(),
    )


@functools.cache
def samples() -> tuple[bytes, ...]:
    if not SAMPLES.is_dir():
        return ()
    return tuple(p.read_bytes() for p in sorted(SAMPLES.iterdir()) if p.suffix in (".png", ".jpg", ".jpeg"))


INTERESTING = (
    0, 1, 2, 7, 8, 9, 0x7F, 0x80, 0xFF, 0x100, 110, 211, 347, 552, 4001, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFF,
    0x10000, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
)  # fmt: skip
JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def put(b: bytearray, pos: int, width: int, value: int, order: str = "big") -> None:
    if pos >= 0 and pos + width <= len(b):
        b[pos : pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, order)  # type: ignore[arg-type]


def png_chunks(b: bytes | bytearray) -> list[int]:
    """Offsets of the length field of each chunk."""
    pos, out = 8, []
    while pos + 8 <= len(b) and len(out) < 64:
        out.append(pos)
        pos += 12 + int.from_bytes(b[pos : pos + 4], "big")
    return out


def png_fix_crc(b: bytearray, pos: int) -> None:
    length = int.from_bytes(b[pos : pos + 4], "big")
    end = pos + 8 + length
    if end + 4 <= len(b):
        b[end : end + 4] = struct.pack(">I", zlib.crc32(b[pos + 4 : end]))


def jpeg_segments(b: bytes | bytearray) -> list[tuple[int, int]]:
    """(offset of the 0xFF, marker) of each segment up to the first SOS."""
    pos, out = 2, []
    while pos + 4 <= len(b) and len(out) < 64:
        if b[pos] != 0xFF:
            break
        marker = b[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        out.append((pos, marker))
        if marker in (0xD9, 0xDA):
            break
        pos += 2 + int.from_bytes(b[pos + 2 : pos + 4], "big")
    return out


def sof0(width: int, height: int) -> bytes:
    return b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"


def header_edit(b: bytearray, field: int, value: int, index: int, fix_crc: bool) -> bytearray:
    """A format-aware change of a header field: sizes, lengths, types, flags. Does nothing when it does not apply."""
    if b.startswith(b"\x89PNG\r\n\x1a\n"):
        chunks = png_chunks(b)
        chunk = chunks[index % len(chunks)] if chunks else 8
        match field % 9:
            case 0:
                put(b, 8, 4, value)  # the IHDR length lies
            case 1:
                put(b, 16, 4, value)
            case 2:
                put(b, 20, 4, value)
            case 3:
                put(b, 16, 4, value)
                put(b, 20, 4, value)
            case 4:
                put(b, 24, 1, (1, 2, 4, 8, 16, 0, 3, 255)[value % 8])  # bit depth
            case 5:
                put(b, 25, 1, (0, 2, 3, 4, 6, 1, 5, 7, 255)[value % 9])  # colour type
            case 6:
                put(b, 28, 1, value % 3)  # interlace
            case 7:
                put(b, chunk, 4, value)  # any chunk's length lies
            case _:
                b[chunk + 4 : chunk + 8] = (b"tRNS", b"IDAT", b"IEND", b"PLTE", b"acTL", b"iCCP")[value % 6]
        if fix_crc:
            png_fix_crc(b, 8)
            if chunks:
                png_fix_crc(b, chunk)
    elif b.startswith(b"\xff\xd8\xff"):
        segments = jpeg_segments(b)
        sofs = [p for p, m in segments if m in JPEG_SOF]
        pos = sofs[0] if sofs else (segments[index % len(segments)][0] if segments else 2)
        match field % 9:
            case 0:
                put(b, pos + 2, 2, value)  # the SOF length lies
            case 1:
                put(b, pos + 5, 2, value)  # height
            case 2:
                put(b, pos + 7, 2, value)  # width
            case 3:
                put(b, pos + 9, 1, value)  # number of components
            case 4:
                put(b, pos + 4, 1, value)  # precision
            case 5:
                if segments:
                    put(b, segments[index % len(segments)][0] + 2, 2, value)  # any segment's length lies
            case 6:
                b[pos:pos] = sof0(value & 0xFFFF or 1, value & 0xFFFF or 1)  # a second SOF, probe sees the first
            case 7:
                b[2:2] = sof0(347, 347)  # a small first SOF in front of the real one
            case _:
                if sofs:
                    del b[pos : pos + 2 + int.from_bytes(b[pos + 2 : pos + 4], "big")]  # no SOF at all
    elif b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        match field % 9:
            case 0:
                put(b, 4, 4, value, "little")  # RIFF size
            case 1:
                put(b, 16, 4, value, "little")  # first chunk size
            case 2:
                b[12:16] = (b"VP8X", b"VP8L", b"VP8 ", b"ALPH", b"ANIM")[value % 5]
            case 3:
                put(b, 20, 1, value)  # VP8X flags
            case 4:
                put(b, 24, 3, value - 1, "little")  # VP8X canvas width
            case 5:
                put(b, 27, 3, value - 1, "little")  # VP8X canvas height
            case 6:
                put(b, 21, 4, value, "little")  # VP8L size bits
            case 7:
                put(b, 26, 2, value, "little")  # VP8 width
                put(b, 28, 2, value, "little")
            case _:  # wrap in a VP8X header announcing any canvas
                vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x10, 0, 0, 0])
                vp8x += (value - 1 & 0xFFFFFF).to_bytes(3, "little") * 2
                b[12:12] = vp8x
                put(b, 4, 4, len(b) - 8, "little")
    elif b[:6] in (b"GIF87a", b"GIF89a"):
        flags = b[10] if len(b) > 10 else 0
        desc = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        found = b.find(b",", desc)
        desc = found if found >= 0 else desc
        match field % 6:
            case 0:
                put(b, 6, 2, value, "little")
            case 1:
                put(b, 8, 2, value, "little")
            case 2:
                put(b, 10, 1, value)  # global colour table flags
            case 3:
                put(b, desc + 5, 2, value, "little")  # the frame is wider than the screen
                put(b, desc + 7, 2, value, "little")
            case 4:
                put(b, desc + 1, 2, value, "little")  # the frame sits far off the screen
            case _:
                put(b, desc + 10, 1, (0, 1, 2, 8, 12, 255)[value % 6])  # LZW minimum code size
    return b


@st.composite
def mutation(draw: st.DrawFn, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        size = max(len(b), 1)
        pos = draw(st.integers(0, size - 1))
        op = draw(st.sampled_from(("header", "header", "flip", "byte", "truncate", "insert", "delete", "int")))
        if op == "header":
            b = header_edit(
                b,
                draw(st.integers(0, 8)),
                draw(st.sampled_from(INTERESTING)),
                draw(st.integers(0, 63)),
                draw(st.booleans()),
            )
        elif op == "flip" and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and b:
            b[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del b[pos : pos + draw(st.integers(1, 64))]
        else:
            put(b, pos, draw(st.sampled_from((1, 2, 3, 4))), draw(st.sampled_from(INTERESTING)),
                draw(st.sampled_from(("big", "little"))))  # fmt: skip
    return bytes(b)


MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBP", b"RIFF\xff\xff\xff\xffWEBPVP8X", b"GIF89a",
          b"GIF87a", b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", b"\xff\xd8\xff\xc0")  # fmt: skip
random_image_bytes = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=512)),
)
mutated_images = st.deferred(lambda: st.sampled_from(corpus()).flatmap(mutation))


def check_image(body: bytes) -> None:
    """The whole image pipeline as the addon drives it: probe, role, then decode only what probe accepted."""
    try:
        info = images.probe(body)
    except BadImage:
        event("probe refused")
        return
    assert isinstance(info, ImageInfo) and info.format in ("png", "jpeg", "webp", "gif")
    assert info.width > 0 and info.height > 0 and info.width * info.height <= images.MAX_PIXELS
    assert isinstance(info.has_alpha, bool)
    role = images.role_by_geometry(info)
    assert role is None or isinstance(role, Role)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: what matters is that decode refuses
        try:
            img = images.decode(body)
        except BadImage as e:
            event(f"decode refused ({'too large' if 'too large' in str(e) else 'corrupt'})")
            # What decode refuses, the ring test refuses too (it decodes the same way).
            with pytest.raises(BadImage):
                images.has_open_centre(body)
        else:
            event("decoded")
            assert img.width * img.height <= images.MAX_PIXELS
            try:
                rgba = img.convert("RGBA")
            except (OSError, ValueError):
                with pytest.raises(BadImage, match="does not convert to RGBA"):
                    images.has_open_centre(body)
            else:
                # A plain bool, and the pixels' answer whatever the encoding: the same pixels as a clean PNG agree.
                centre = images.has_open_centre(body)
                assert type(centre) is bool
                assert centre is images.has_open_centre(encode(rgba, "PNG"))
    assert time.perf_counter() - start < 10  # a catastrophe guard only; these are small images


@fuzz(1000)
@given(random_image_bytes)
def test_random_bytes_as_images(body: bytes) -> None:
    check_image(body)


@fuzz(1200)
@given(mutated_images)
def test_mutated_images(body: bytes) -> None:
    check_image(body)


@fuzz(300)
@given(st.data())
def test_mutated_real_samples(data: st.DataObject) -> None:
    if not samples():
        samples_missing(SAMPLES)
    check_image(data.draw(st.sampled_from(samples()).flatmap(mutation)))


def test_the_mutation_seeds_are_valid_images() -> None:
    for body in corpus():
        info = images.probe(body)
        assert images.decode(body).size == (info.width, info.height)


def png_header(width: int, height: int, color_type: int = 6) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def webp_vp8x(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x10\0\0\0" + (width - 1).to_bytes(3, "little")
    chunk += (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@functools.cache
def gif_frame_bomb() -> bytes:
    """A valid GIF whose logical screen says 347x347 (an outer ring to probe) but whose frame is 4100x4100."""
    body = bytearray(encode(Image.new("P", (4100, 4100), 0), "GIF"))
    body[6:10] = struct.pack("<HH", 347, 347)
    return bytes(body)


def jpeg_second_sof(width: int, height: int) -> bytes:
    """A valid 347x347 JPEG with a second frame header announcing another size right after the first."""
    body = bytearray(encode(_ring(347).convert("RGB"), "JPEG"))
    first = next(p for p, m in jpeg_segments(body) if m in JPEG_SOF)
    end = first + 2 + int.from_bytes(body[first + 2 : first + 4], "big")
    body[end:end] = sof0(width, height)
    return bytes(body)


@pytest.mark.parametrize(
    "body",
    [
        png_header(100_000, 100_000),
        png_header(0xFFFFFFFF, 0xFFFFFFFF),
        png_header(4001, 4001) + b"\0" * 64,
        b"\xff\xd8\xff" + sof0(65535, 65535)[1:] + b"\0" * 16,
        webp_vp8x(1 << 24, 1 << 24),
        b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\0" * 8,
    ],
    ids=["png-100k", "png-4G", "png-4001", "jpeg-64k", "webp-16M", "gif-64k"],
)
def test_an_enormous_announced_image_is_refused_from_the_header(body: bytes) -> None:
    with cheap(0.5), pytest.raises(BadImage, match="too large"):
        images.probe(body)


@pytest.mark.parametrize("make", [gif_frame_bomb, lambda: jpeg_second_sof(5000, 5000)], ids=["gif-frame", "jpeg-sof2"])
def test_decode_refuses_a_size_the_header_probe_did_not_see(make: Callable[[], bytes]) -> None:
    body = make()
    # Bug fixed: probe reads the GIF screen / the first JPEG SOF, Pillow the frame / the last SOF. Pillow decoded
    # the 4100x4100 GIF (and has_open_centre made it 67 MB of RGBA; at 10000x10000 a 75 KB file cost 500 MB).
    info = images.probe(body)
    assert (info.width, info.height) == (347, 347) and images.role_by_geometry(info) in (Role.OUTER, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cheap(1.0), pytest.raises(BadImage, match="too large"):
            images.decode(body)
        with cheap(1.0), pytest.raises(BadImage, match="too large"):
            images.has_open_centre(body)


def test_a_sixteen_bit_grey_ring_is_sampled_not_refused() -> None:
    # 16-bit grey has no alpha: a transparent hole turns black (no ring), a white one stays open.
    black_hole = _ring(347).convert("LA").convert("I;16")
    assert images.has_open_centre(encode(black_hole, "PNG")) is False
    white = _ring(347)
    c, r = 347 // 2, 105
    ImageDraw.Draw(white).ellipse((c - r, c - r, c + r, c + r), fill=(255, 255, 255, 255))
    assert images.has_open_centre(encode(white.convert("LA").convert("I;16"), "PNG")) is True


# ---------------------------------------------------------------------------------------------------------------
# edata envelopes


def envelope(plain: bytes, version: int = 1, key: bytes = b"k" * 32, nonce: bytes = b"n" * 12) -> str:
    """An envelope made as captcha-traffic.md describes, independently of the addon's decoder."""
    enc = Cipher(ChaCha20(key, b"\0\0\0\0" + nonce), mode=None).encryptor()
    return base64.b64encode(bytes([version]) + key + nonce + enc.update(plain) + enc.finalize()).decode()


DEEP = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
HOSTILE_TEXTS = (
    DEEP, DEEP_OBJECT, "[" * 100_000, "NaN", "Infinity", "-Infinity", '{"a": NaN}', "1e400", "1" * 4300, "1" * 5000,
    '"\\ud800"', "\ufeff{}", "{}\x00", "", " ", "null", "[]", "0", '"x"', "true",
)  # fmt: skip
plaintexts = st.one_of(
    st.sampled_from(HOSTILE_TEXTS).map(str.encode),
    st.binary(max_size=256),
    st.sampled_from((b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"{\xed\xa0\x80}", b'{"a":"\xff"}', b"\xc3")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=10,
    ).map(lambda o: json.dumps(o).encode()),
)


@st.composite
def edata_strings(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 7))
    plain = draw(plaintexts)
    if kind == 0:
        return envelope(
            plain, key=draw(st.binary(min_size=32, max_size=32)), nonce=draw(st.binary(min_size=12, max_size=12))
        )
    if kind == 1:
        return envelope(plain, version=draw(st.integers(0, 255)))
    if kind == 2:  # too short: the blob stops inside the key or nonce
        return base64.b64encode(b"\x01" + draw(st.binary(max_size=44))).decode()
    if kind == 3:  # bad or unusual base64
        text = envelope(plain)
        pos = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(("!", " ", "\n", "=", "==", "-", "_", "é", "\x00", "\ud800", "A")))
        return text[:pos] + junk + text[pos:]
    if kind == 4:  # cut anywhere
        text = envelope(plain)
        return text[: draw(st.integers(0, len(text)))]
    if kind == 5:
        return base64.urlsafe_b64encode(base64.b64decode(envelope(plain))).decode().rstrip("=")
    if kind == 6:
        return draw(any_text(200))
    return draw(st.none() | st.integers() | st.floats() | st.binary(max_size=8) | st.lists(st.integers(), max_size=2))


@fuzz(600)
@given(edata_strings())
def test_edata_decrypt_and_decode(value: Any) -> None:
    try:
        plain = edata.decrypt(value)
    except edata.EdataError:
        pass
    else:
        assert isinstance(plain, bytes)
    with contextlib.suppress(edata.EdataError):
        edata.decode(value)
    for wrapped in ({"edata": value}, {"data": {"edata": value}}, {"data": value}, [value], value):
        with contextlib.suppress(edata.EdataError):
            edata.unwrap(wrapped)


@fuzz(100)
@given(st.binary(max_size=512), st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12))
def test_edata_round_trip(plain: bytes, key: bytes, nonce: bytes) -> None:
    assert edata.decrypt(envelope(plain, key=key, nonce=nonce)) == plain


@pytest.mark.parametrize("text", [DEEP, DEEP_OBJECT, "[" * 1_000_000])
def test_deep_json_inside_edata_is_an_edata_error(text: str) -> None:
    # Bug fixed: json.loads raised RecursionError through edata.decode (and recognise.load_json).
    with cheap(1.0), pytest.raises(edata.EdataError):
        edata.decode(envelope(text.encode()))


def test_a_huge_edata_string_is_refused_cheaply() -> None:
    huge = "A" * (edata.MAX_EDATA_CHARS + 1)
    with cheap(0.5, megabytes=1), pytest.raises(edata.EdataError, match="too long"):
        edata.decrypt(huge)
    just_under = envelope(os.urandom(3 * MB - 64))
    assert len(just_under) <= edata.MAX_EDATA_CHARS
    with cheap(2.0, megabytes=40), pytest.raises(edata.EdataError, match="not JSON"):
        edata.decode(just_under)


# ---------------------------------------------------------------------------------------------------------------
# recognise: get and verify bodies


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


image_url = st.builds(
    lambda h, n, ext, p: f"https://{p}-rc-captcha-va.ibyteimg.com/tos-maliva-i-b4yrtqhy5a-us/{h}~tplv-b4yrtqhy5a-{n}.{ext}",
    hexes(32), st.sampled_from("12"), st.sampled_from(("jpeg", "png")), st.sampled_from(("p16", "p19")),
)  # fmt: skip
verify_id = st.builds("Verify_{}".format, st.uuids())
question = st.fixed_dictionaries(
    {"url1": image_url, "url2": image_url, "tip_y": st.integers(0, 300)},
    optional={
        "backup_url1": st.lists(image_url, max_size=2),
        "backup_url2": st.lists(image_url, max_size=2),
        "object1": st.just(base64.b64encode(png_header(347, 347)).decode()),
    },
)
challenge = st.fixed_dictionaries(
    {
        "id": hexes(40),
        "mode": st.sampled_from(("whirl", "slide", "3d", "icon")),
        "challenge_code": st.sampled_from((99996, 99999, 99997)),
        "question": question,
    }
)
shape_a = st.builds(
    lambda c, v: {"code": 200, "message": "ok", "data": {**c, "version": 2, "verify_id": v}}, challenge, verify_id
)
shape_b = st.builds(
    lambda cs, v: {"code": 200, "message": "ok", "data": {"challenges": cs, "verify_id": v}},
    st.lists(challenge, min_size=1, max_size=3), verify_id,
)  # fmt: skip
verify_request = st.fixed_dictionaries(
    {
        "modified_img_width": st.sampled_from((340, 552)),
        "id": hexes(40),
        "mode": st.sampled_from(("slide", "whirl")),
        "reply": st.lists(
            st.fixed_dictionaries(
                {"x": st.integers(0, 552), "y": st.integers(0, 344), "relative_time": st.integers(0, 9999)}
            ),
            max_size=3,
        ),
        "verify_id": verify_id,
    },
    optional={"drag_width": st.just(271)},
)
verify_response = st.sampled_from(
    (
        {"code": 200, "data": None, "message": "Verification complete", "msg_code": "200", "msg_sub_code": "success"},
        {"code": 500, "data": {"msg": "VerifyErr"}, "message": "Unable to verify. Please try again.",
         "msg_code": "500", "msg_sub_code": "verify_err"},
        {"code": 500, "data": None, "message": "Verification failed. Please try again."},
    )
)  # fmt: skip

DEEP_MARK, DEEP_OBJECT_MARK = "\x00deep\x00", "\x00deep-object\x00"
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from((10**300, -(10**300), 10**4299, -(10**4299), 2**63, 2**64, -1, 0, 200, 99996, 99999)),
    st.floats(),  # NaN, Infinity, -Infinity are written as such
    any_text(12),
    st.sampled_from(("", "²", "٢٠٠", "200", "0200", "1" * 5000, "\ud800", "\udcff", "https://[x/", "data:,",
                     "whirl", "slide", "3d", "WHIRL", "x" * 5000)),
    st.lists(st.integers() | st.text(max_size=4) | st.none(), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers() | st.none(), max_size=3),
    st.just(DEEP_MARK),
    st.just(DEEP_OBJECT_MARK),
)  # fmt: skip


def paths(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, iteratively."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            stack.append(v)
    return out


@st.composite
def mutated_json(draw: st.DrawFn, shapes: st.SearchStrategy[Any]) -> bytes:
    """A valid document, then type/value mutations of its nodes, then byte-level damage to the text."""
    doc = copy.deepcopy(draw(shapes))  # sampled_from hands out shared objects
    for _ in range(draw(st.integers(0, 4))):
        where = paths(doc)
        if not where or draw(st.integers(0, 9)) == 0:
            doc = draw(hostile_values | st.just([doc]) | st.just({"data": doc}))
            continue
        node, key = where[draw(st.integers(0, len(where) - 1))]
        op = draw(st.integers(0, 5))
        value = node[key]
        if op == 0 and isinstance(node, dict):
            del node[key]
        elif op == 1 and isinstance(value, dict):
            node[key] = list(value.values())  # a list where a dict is
        elif op == 2:
            node[key] = [value]
        elif op == 3 and isinstance(value, str | int | float):
            node[key] = str(value) if not isinstance(value, str) else draw(st.integers() | st.floats())
        else:
            node[key] = draw(hostile_values)
    text = json.dumps(doc)
    text = text.replace(json.dumps(DEEP_MARK), DEEP).replace(json.dumps(DEEP_OBJECT_MARK), DEEP_OBJECT)
    wrap = draw(st.integers(0, 9))
    if wrap == 1:
        text = json.dumps({"edata": envelope(text.encode("utf-8", "surrogatepass"))})
    elif wrap == 2:
        text = json.dumps({"data": {"edata": envelope(text.encode("utf-8", "surrogatepass"))}})
    elif wrap == 3:
        value = draw(edata_strings())
        text = json.dumps({"edata": value.hex() if isinstance(value, bytes) else value})
    body = text.encode("utf-8", "surrogatepass")
    damage = draw(st.integers(0, 9))
    if damage == 1:
        body = b"\xef\xbb\xbf" + body
    elif damage == 2:
        body = text.encode(draw(st.sampled_from(("utf-16", "utf-16-le", "utf-32", "utf-32-be"))), "surrogatepass")
    elif damage == 3:
        pos = draw(st.integers(0, len(body)))
        body = (
            body[:pos] + draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xfe\xff"))) + body[pos:]
        )
    elif damage == 4:
        body = body[: draw(st.integers(0, len(body)))]
    return body


def check_announced(out: list[AnnouncedChallenge]) -> None:
    assert isinstance(out, list) and 1 <= len(out) <= recognise.MAX_CHALLENGES
    for c in out:
        assert isinstance(c, AnnouncedChallenge)
        assert isinstance(c.id, str) and c.id and c.id.encode()
        assert isinstance(c.mode, str) and c.mode.encode()
        assert c.kind is None or isinstance(c.kind, Kind)
        assert c.tip_y is None or (isinstance(c.tip_y, float) and math.isfinite(c.tip_y))
        assert c.verify_id is None or (isinstance(c.verify_id, str) and c.verify_id.encode())
        for role, urls in c.urls.items():
            assert isinstance(role, Role) and isinstance(urls, tuple) and 1 <= len(urls) <= recognise.MAX_URLS
            for u in urls:
                assert isinstance(u, str) and u and u.encode()
                assert isinstance(recognise.url_key(u), str)  # Assembler.announce keys by it
        for role, data in c.inline.items():
            assert isinstance(role, Role) and isinstance(data, bytes)


def check_get(body: bytes) -> None:
    try:
        out = recognise.parse_get(body)
    except NotRecognised:
        event("get not recognised")
        return
    event("get parsed")
    check_announced(out)


def check_verify_request(body: bytes) -> None:
    # The addon calls it without a try: it must never raise.
    asked = recognise.parse_verify_request(body)
    event(f"verify request {'names a challenge' if asked.challenge_id else 'names none'}")
    assert isinstance(asked, VerifyRequest)
    assert asked.challenge_id is None or (isinstance(asked.challenge_id, str) and asked.challenge_id.encode())
    assert asked.mode is None or (isinstance(asked.mode, str) and asked.mode.encode())


def check_verify_response(body: bytes) -> None:
    try:
        event(f"verify response {recognise.parse_verify_response(body)}")
    except NotRecognised:
        event("verify response not recognised")


@fuzz(900)
@given(mutated_json(shape_a | shape_b))
def test_mutated_get_bodies(body: bytes) -> None:
    check_get(body)


@fuzz(100)
@given(shape_a | shape_b, st.integers(0, 2))
def test_valid_get_bodies_parse(doc: dict[str, Any], wrap: int) -> None:
    body = json.dumps(doc)
    if wrap:
        sealed = envelope(body.encode())
        body = json.dumps({"edata": sealed} if wrap == 1 else {"data": {"edata": sealed}})
    out = recognise.parse_get(body.encode())
    check_announced(out)
    data = doc["data"]
    assert [c.id for c in out] == [c["id"] for c in data.get("challenges", [data])]


@fuzz(600)
@given(mutated_json(verify_request))
def test_mutated_verify_requests(body: bytes) -> None:
    check_verify_request(body)


@fuzz(150)
@given(verify_request, st.sampled_from(("json", "edata", "form", "form-edata")))
def test_valid_verify_requests_parse(doc: dict[str, Any], how: str) -> None:
    text = json.dumps(doc)
    if how == "edata":
        text = json.dumps({"edata": envelope(text.encode())})
    elif how == "form":
        text = f"id={doc['id']}&mode={doc['mode']}"
    elif how == "form-edata":
        text = "edata=" + envelope(text.encode()).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert recognise.parse_verify_request(text.encode()) == VerifyRequest(doc["id"], doc["mode"])


@fuzz(500)
@given(mutated_json(verify_response))
def test_mutated_verify_responses(body: bytes) -> None:
    check_verify_response(body)


@fuzz(300)
@given(st.one_of(st.binary(max_size=512), st.text(max_size=200).map(str.encode),
                 st.builds(lambda k, v: f"{k}={v}".encode("utf-8", "surrogatepass"), st.text(max_size=8), st.text(max_size=40))))  # fmt: skip
def test_random_bytes_as_json_bodies(body: bytes) -> None:
    check_get(body)
    check_verify_request(body)
    check_verify_response(body)


@fuzz(200)
@given(any_text(300))
def test_url_key_of_kept_urls(url: str) -> None:
    doc = {"data": {"id": "x", "mode": "whirl", "question": {"url1": url, "backup_url1": [url, "https://a/b"]}}}
    check_get(json.dumps(doc).encode("utf-8", "surrogatepass"))


def get_doc(question: dict[str, Any], **challenge: Any) -> bytes:
    return json.dumps({"code": 200, "data": {"id": "c1", "mode": "whirl", "question": question, **challenge}}).encode()


@pytest.mark.parametrize(
    "body",
    [
        DEEP.encode(),
        DEEP_OBJECT.encode(),
        b'{"data":' + DEEP.encode() + b"}",
        b"[" * 1_000_000,
        json.dumps({"edata": envelope(DEEP.encode())}).encode(),
        b"edata=" + envelope(DEEP_OBJECT.encode()).replace("+", "%2B").replace("/", "%2F").encode(),
    ],
    ids=["array", "object", "in-data", "million", "in-edata", "in-form-edata"],
)
def test_deep_json_is_not_recognised(body: bytes) -> None:
    # Bug fixed: RecursionError escaped parse_get, parse_verify_response and parse_verify_request.
    with cheap(1.0):
        with pytest.raises(NotRecognised):
            recognise.parse_get(body)
        with pytest.raises(NotRecognised):
            recognise.parse_verify_response(body)
        assert recognise.parse_verify_request(body) == VerifyRequest(None, None)


@pytest.mark.parametrize("tip_y", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 4300, "-" + "9" * 4299])
def test_tip_y_that_is_no_finite_number_is_dropped(tip_y: str) -> None:
    # Bug fixed: a 4300-digit tip_y raised OverflowError; NaN/Infinity went on into events (invalid JSON lines).
    body = b'{"data":{"id":"c","mode":"slide","question":{"url1":"https://a/b.jpeg","tip_y":' + tip_y.encode() + b"}}}"
    [c] = recognise.parse_get(body)
    assert c.tip_y is None


@pytest.mark.parametrize(("code", "accepted"), [("²", None), ("٢٠٠", None), ("1" * 5000, False), ("0200", True),
                                                ("200", True), ("500", False), (" 200", None)])  # fmt: skip
def test_verify_code_strings(code: str, accepted: bool | None) -> None:
    # Bug fixed: "²".isdigit() is true but int("²") raises ValueError, as does int() of over 4300 digits.
    body = json.dumps({"code": code}).encode()
    if accepted is None:
        with pytest.raises(NotRecognised):
            recognise.parse_verify_response(body)
    else:
        assert recognise.parse_verify_response(body) is accepted


def test_many_backup_urls_cost_linear_time() -> None:
    # Bug fixed: backups were de-duplicated against a list (quadratic): 150,000 of them took two minutes.
    backups = [f"//c/{i}" for i in range(150_000)]
    body = get_doc({"url1": "https://p16-x.com/a.png", "backup_url1": backups, "url2": "https://p16-x.com/b.png"})
    assert len(body) < JSON_LIMIT
    with cheap(1.0):
        [c] = recognise.parse_get(body)
    assert c.urls[Role.OUTER] == ("https://p16-x.com/a.png", *backups[: recognise.MAX_URLS - 1])


def test_many_challenges_are_capped() -> None:
    item = {"id": "", "mode": "whirl", "question": {"url1": "https://a/1.png", "url2": "https://a/2.png"}}
    body = json.dumps({"data": {"challenges": [{**item, "id": str(i)} for i in range(20_000)]}}).encode()
    with cheap(1.0):
        out = recognise.parse_get(body)
    assert [c.id for c in out] == [str(i) for i in range(recognise.MAX_CHALLENGES)]


def test_urls_urlsplit_refuses_are_left_out() -> None:
    # Bug fixed: "https://[x/" reached Assembler.announce, whose url_key() raised ValueError (the get was lost).
    [c] = recognise.parse_get(get_doc({"url1": "https://[x/a.png", "backup_url1": ["https://b/a.png"],
                                       "url2": "https://a\uff0fb/c.png"}))  # fmt: skip
    assert c.urls == {Role.OUTER: ("https://b/a.png",)}


def test_lone_surrogates_are_not_identifiers() -> None:
    # Bug fixed: "\ud800" ids reached events, and the sidecar's UTF-8 encode raised on them.
    [c] = recognise.parse_get(
        get_doc({"url1": "https://a/\ud800", "url2": "https://a/b.png"}, id=1, verify_id="\udcff")
    )
    assert c.id == "1" and c.verify_id is None and c.urls == {Role.INNER: ("https://a/b.png",)}
    with pytest.raises(NotRecognised):
        recognise.parse_get(get_doc({"url1": "https://a/b.png"}, id="\ud800"))
    assert recognise.parse_verify_request(b'{"id": "\\ud800", "mode": "\\udcff"}') == VerifyRequest(None, None)


def test_a_two_megabyte_body_is_parsed_cheaply() -> None:
    body = json.dumps({"data": {"challenges": [{"id": 1, "question": {"url1": "x" * 100}}] * 9_000}}).encode()
    assert len(body) < JSON_LIMIT
    with cheap(2.0, megabytes=60):
        check_get(body)
        check_verify_response(body)
        check_verify_request(body)


# ---------------------------------------------------------------------------------------------------------------
# bodies


def response(raw: bytes | None, content_encoding: str | None) -> http.Response:
    r = tutils.tresp(content=b"")
    r.raw_content = raw
    if content_encoding is not None:
        r.headers["content-encoding"] = content_encoding
    return r


def compress(data: bytes, how: str) -> bytes:
    if how in ("gzip", "x-gzip"):
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if how == "deflate":
        return zlib.compress(data)
    if how == "deflate-raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if how == "br":
        return bytes(brotli.compress(data))
    if how == "zstd":
        return bytes(zstandard.ZstdCompressor().compress(data))
    if how == "bz2":
        return bz2.compress(data)
    return data


ENCODINGS = ("", "identity", "none", "gzip", "x-gzip", "deflate", "br", "zstd", "GZIP", " gzip ", "bz2", "zlib",
             "base64", "hex", "uu", "quopri", "utf8", "utf-16", "rot13", "gzip, br", "compress", "deflateraw", "foo")  # fmt: skip


def check_body(message: http.Message, limit: int) -> bytes | None:
    before = (message.raw_content, message.headers.fields)
    try:
        out = bounded_content(message, limit)
    except ValueError as e:  # BodyTooLarge is one
        assert type(e) in (ValueError, BodyTooLarge)
        event(type(e).__name__)
        out = None
    else:
        event("body read")
        assert isinstance(out, bytes) and len(out) <= limit
    assert (message.raw_content, message.headers.fields) == before
    return out


@fuzz(400)
@given(st.binary(max_size=1024), st.sampled_from(ENCODINGS) | st.text(max_size=12), st.integers(0, 4096))
def test_random_bodies_with_any_encoding(raw: bytes, encoding: str, limit: int) -> None:
    try:
        r = response(raw, encoding)
    except ValueError:  # a header value mitmproxy itself refuses
        return
    check_body(r, limit)


@fuzz(400)
@given(
    st.binary(max_size=2048) | st.builds(bytes, st.integers(0, 100_000)),
    st.sampled_from(("gzip", "x-gzip", "deflate", "deflate-raw", "br", "zstd")),
    st.integers(0, 200_000),
    st.sampled_from(("intact", "truncate", "flip", "append")),
    st.data(),
)
def test_compressed_bodies_intact_or_damaged(
    payload: bytes, how: str, limit: int, damage: str, data: st.DataObject
) -> None:
    raw = bytearray(compress(payload, how))
    if damage == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    elif damage == "flip":
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif damage == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    r = response(bytes(raw), "deflate" if how == "deflate-raw" else how)
    out = check_body(r, limit)
    if damage == "intact" and len(raw) <= limit:
        if len(payload) <= limit:
            assert out == payload
        else:
            with pytest.raises(BodyTooLarge):
                bounded_content(r, limit)


@functools.cache
def bomb(how: str) -> bytes:
    """Zeros that inflate to 64 MB (br, zstd: 256 MB, bz2: 64 MB), from bodies of 79 bytes to 65 KB."""
    chunk, n = bytes(MB), 256 if how in ("br", "zstd") else 64
    if how in ("gzip", "deflate", "deflate-raw"):
        wbits = {"gzip": 31, "deflate": 15, "deflate-raw": -15}[how]
        c: Any = zlib.compressobj(9, zlib.DEFLATED, wbits)
        return b"".join(c.compress(chunk) for _ in range(n)) + c.flush()
    if how == "br":
        c = brotli.Compressor(quality=5)
        return b"".join(c.process(chunk) for _ in range(n)) + c.finish()
    if how == "zstd":
        c = zstandard.ZstdCompressor(level=3).compressobj()
        return b"".join(c.compress(chunk) for _ in range(n)) + c.flush()
    c = bz2.BZ2Compressor(9)
    return b"".join(c.compress(chunk) for _ in range(n)) + c.flush()


@pytest.mark.parametrize(
    ("how", "header", "error"),
    [
        ("gzip", "gzip", BodyTooLarge),
        ("gzip", "x-gzip", BodyTooLarge),
        ("deflate", "deflate", BodyTooLarge),
        ("deflate-raw", "deflate", BodyTooLarge),
        ("br", "br", BodyTooLarge),  # bug fixed: inflated whole through mitmproxy, 500 MB in 16 s
        ("zstd", "zstd", BodyTooLarge),  # bug fixed: likewise
        ("bz2", "bz2", ValueError),  # bug fixed: mitmproxy hands unknown names to codecs.decode, unbounded
        ("deflate", "zlib", ValueError),  # likewise, the zlib codec
    ],
)
@pytest.mark.parametrize("limit", [JSON_LIMIT, MAX_IMAGE_BODY])
def test_compression_bombs_are_refused_cheaply(how: str, header: str, error: type[Exception], limit: int) -> None:
    raw = bomb(how)
    assert len(raw) < limit // 16
    r = response(raw, header)
    with cheap(1.0, megabytes=3 * limit / MB + 4), pytest.raises(error):
        bounded_content(r, limit)
    assert r.raw_content is raw


def test_streamed_and_oversized_bodies() -> None:
    with pytest.raises(BodyTooLarge):
        bounded_content(response(None, None), 10)
    with pytest.raises(BodyTooLarge):
        bounded_content(response(b"x" * 11, None), 10)
    assert bounded_content(response(b"", "gzip"), 10) == b""
    with pytest.raises(ValueError, match="truncated"):
        bounded_content(response(compress(b"hello" * 100, "gzip")[:-12], "gzip"), 1000)
    req = tutils.treq(content=b"")
    req.raw_content = compress(b'{"id":"x"}', "br")
    req.headers["content-encoding"] = "br"
    assert bounded_content(req, 100) == b'{"id":"x"}'


# ---------------------------------------------------------------------------------------------------------------
# the response hook, in process


def make_flow(host: str, path: str, raw: bytes | None, *, headers: dict[str, str] | None = None,
              method: str = "GET", request_body: bytes = b"", client: str = "10.9.9.9") -> Any:  # fmt: skip
    f = tflow.tflow(resp=True)
    f.client_conn.peername = (client, 40000)
    f.request = tutils.treq(host=host, port=443, scheme=b"https", path=path.encode(), method=method.encode(),
                            content=request_body)  # fmt: skip
    f.request.headers["host"] = host
    f.response = tutils.tresp(content=b"")
    f.response.raw_content = raw
    for k, v in (headers or {}).items():
        f.response.headers[k] = v
    return f


Hostile = Callable[[], tuple[bytes | None, dict[str, str]]]


def hostile_images(rng: random.Random) -> list[Hostile]:
    """Makers of bad image bodies, each as a CDN might serve it: a Content-Type, sometimes a Content-Encoding."""
    ring = encode(_ring(347), "PNG")
    png = {"content-type": "image/png"}
    return [
        lambda: (rng.randbytes(rng.randrange(0, 3000)), png),
        lambda: (ring[: rng.randrange(40, len(ring) - 100)], png),  # probe accepts, decode fails
        lambda: (png_header(100_000, 100_000), png),
        lambda: (png_header(4001, 4001) + b"\0" * 32, png),
        lambda: (gif_frame_bomb(), {"content-type": "image/gif"}),  # an outer ring to probe, 4100x4100 to Pillow
        lambda: (jpeg_second_sof(9000, 9000), {"content-type": "image/jpeg"}),
        lambda: (webp_vp8x(1 << 24, 2), {"content-type": "image/webp"}),
        lambda: (bomb("gzip"), {**png, "content-encoding": "gzip"}),
        lambda: (bomb("br"), {**png, "content-encoding": "br"}),
        lambda: (bomb("zstd"), {**png, "content-encoding": "zstd"}),
        lambda: (bomb("bz2"), {**png, "content-encoding": "bz2"}),
        lambda: (rng.randbytes(100), {**png, "content-encoding": "gzip"}),
        lambda: (compress(ring, "gzip")[:-20], {**png, "content-encoding": "gzip"}),
        lambda: (None, png),  # streamed
    ]


def hostile_json(rng: random.Random) -> list[Hostile]:
    """Makers of bad get/verify bodies (and verify requests)."""
    whirl = {
        "id": "c",
        "mode": "whirl",
        "question": {"url1": "https://p16-x.com/o.png", "url2": "https://p16-x.com/i.png"},
    }
    js = {"content-type": "application/json"}
    return [
        lambda: (DEEP.encode(), js),
        lambda: (b"[" * 1_000_000, js),
        lambda: (json.dumps({"edata": envelope(DEEP_OBJECT.encode())}).encode(), js),
        lambda: (json.dumps({"edata": "!!" + envelope(b"{}")}).encode(), js),
        lambda: (json.dumps({"data": {"edata": envelope(b"\xff\xfe")}}).encode(), js),
        lambda: (json.dumps({"edata": base64.b64encode(b"\x02" + bytes(60)).decode()}).encode(), js),
        lambda: (json.dumps({"data": {**whirl, "question": {**whirl["question"], "tip_y": 10**4299}}}).encode(), js),
        lambda: (b'{"data":{"id":"c","mode":"slide","question":{"url1":"https://a/b.jpeg","tip_y":NaN}}}', js),
        lambda: (
            json.dumps({"data": {**whirl, "question": {"url1": "https://[x/", "url2": "https://a\uff0fb/"}}}).encode(),
            js,
        ),
        lambda: (json.dumps({"data": {**whirl, "id": "\ud800"}}).encode("utf-8", "surrogatepass"), js),
        lambda: (json.dumps({"code": "²"}).encode(), js),
        lambda: (json.dumps({"code": "9" * 5000, "data": None}).encode(), js),
        lambda: (b"\xef\xbb\xbf" + json.dumps({"code": 200}).encode("utf-16"), js),
        lambda: (rng.randbytes(rng.randrange(0, 500)), js),
        lambda: (bomb("gzip"), {**js, "content-encoding": "gzip"}),
        lambda: (bomb("br"), {**js, "content-encoding": "br"}),
        lambda: (bomb("zstd"), {**js, "content-encoding": "zstd"}),
        lambda: (bomb("bz2"), {**js, "content-encoding": "bz2"}),
        lambda: (b"x" * (JSON_LIMIT + 1), js),
        lambda: (None, js),
    ]


@pytest.fixture
def capture_env(tmp_path: Path) -> Iterator[tuple[CaptchaCapture, Path]]:
    addons = build_addons()
    capture = next(a for a in addons if isinstance(a, CaptchaCapture))
    sidecar = tmp_path / "events.jsonl"
    outlets = next(a for a in addons if isinstance(a, CaptchaEvents))
    with taddons.context(*addons) as tctx:
        tctx.configure(capture, captcha_sidecar=str(sidecar), captcha_solvers="none")
        DRAINS.append(outlets.drain)
        yield capture, sidecar
        DRAINS.remove(outlets.drain)


DRAINS: list[Any] = []


def sidecar_events(path: Path) -> list[dict[str, Any]]:
    """The sidecar's events, once its thread has written every event emitted so far."""
    for drain in DRAINS:
        drain()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def feed(capture: CaptchaCapture, flows: list[Any]) -> None:
    for f in flows:
        before = (f.response.raw_content, f.response.headers.fields, f.request.raw_content, f.request.headers.fields)
        await capture.response(f)  # no exception escapes
        after = (f.response.raw_content, f.response.headers.fields, f.request.raw_content, f.request.headers.fields)
        assert after == before  # byte for byte


def captcha_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("addon.") and r.levelno == level]


async def test_two_hundred_bad_images_pass_untouched_with_a_handful_of_warnings(
    capture_env: tuple[CaptchaCapture, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="addon")
    capture, sidecar = capture_env
    rng = random.Random(20240601)
    # Half the images were announced by a get (so every bad one is worth a warning), half come by geometry.
    get = make_flow(VERIFY_HOST, "/captcha/get", json.dumps({"data": {"challenges": [
        {"id": f"a{i}", "mode": "whirl", "question": {"url1": f"https://{CDN}/o{i}.png", "url2": f"https://{CDN}/i{i}.png"}}
        for i in range(8)]}}).encode())  # fmt: skip
    await capture.response(get)
    kinds = hostile_images(rng)
    flows = []
    for i in range(200):
        raw, headers = (kinds[i] if i < len(kinds) else rng.choice(kinds))()  # each kind at least once
        path = f"/o{i % 8}.png" if i % 2 else f"/tos-x/{i:032x}~tplv-x-1.png"
        flows.append(make_flow(rng.choice((CDN, "p19-rc-captcha-va.ibyteimg.com")), path, raw, headers=headers))
    start = time.perf_counter()
    await feed(capture, flows)
    assert time.perf_counter() - start < 20
    assert not [e for e in sidecar_events(sidecar) if e["event"] == "captured"]
    assert not capture.captured_ids
    assert not captcha_records(caplog, logging.ERROR), caplog.text  # "internal error" lines mean a parser raised
    warnings_ = captcha_records(caplog, logging.WARNING)
    assert 1 <= len(warnings_) <= 6, [r.getMessage()[:120] for r in warnings_]


async def test_hostile_gets_and_verifies_pass_untouched(
    capture_env: tuple[CaptchaCapture, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="addon")
    capture, sidecar = capture_env
    rng = random.Random(7)
    kinds = hostile_json(rng)
    flows = []
    for i in range(240):
        raw, headers = rng.choice(kinds)()
        request_body, _ = rng.choice(kinds)()
        if i % 2:
            flows.append(make_flow(VERIFY_HOST, "/captcha/get?aid=1", raw, headers=headers, client=f"10.0.0.{i % 5}"))
        else:
            flows.append(make_flow("rc-verification-sg.tiktokv.com", "/captcha/verify", raw, headers=headers,
                                   method="POST", request_body=request_body or b""))  # fmt: skip
    # each hostile body as a get, a verify response and a verify request, at least once
    for make in kinds:
        raw, headers = make()
        flows.append(make_flow(VERIFY_HOST, "/captcha/get", raw, headers=headers))
        flows.append(make_flow(VERIFY_HOST, "/captcha/verify", raw, headers=headers, method="POST",
                               request_body=json.dumps({"id": "\ud800", "mode": "slide"}).encode("utf-8", "surrogatepass")))  # fmt: skip
        flows.append(make_flow(VERIFY_HOST, "/captcha/verify", b'{"code": 200}', method="POST",
                               request_body=raw or b""))  # fmt: skip
    await feed(capture, flows)
    await capture.done()  # expires what the gets announced: those events must be writable too
    assert not [e for e in sidecar_events(sidecar) if e["event"] == "captured"]
    assert not captcha_records(caplog, logging.ERROR), caplog.text
    assert len(captcha_records(caplog, logging.WARNING)) <= 10


async def test_a_client_key_header_that_is_not_utf8(
    capture_env: tuple[CaptchaCapture, Path], caplog: pytest.LogCaptureFixture
) -> None:
    capture, _sidecar = capture_env
    caplog.set_level(logging.DEBUG, logger="addon")
    capture.keyer = ClientKeyer("header:X-Device-Id")
    f = make_flow("rc-verification-sg.tiktokv.com", "/captcha/verify", b'{"code": 200}', method="POST",
                  request_body=b'{"id": "s1", "mode": "slide"}')  # fmt: skip
    f.request.headers.fields = ((b"X-Device-Id", b"\xff\xfe"),)
    await feed(capture, [f])
    assert not captcha_records(caplog, logging.ERROR), caplog.text
