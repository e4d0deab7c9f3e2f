from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from addon.publish import image_store
from addon.publish.image_store import ImageStore


def png(size: tuple[int, int], colour: tuple[int, int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, colour).save(out, "PNG")
    return out.getvalue()


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def rotate_challenge(store: ImageStore, cid: str) -> None:
    store.put(cid, "outer", png((347, 347), (200, 40, 40, 255)), "png")
    store.put(cid, "inner", png((211, 211), (40, 40, 200, 255)), "png")


def decoded(body: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(body))
    img.load()
    return img


def test_images_come_back_with_their_content_type() -> None:
    store = ImageStore(max_challenges=10, max_bytes=10_000_000)
    outer, inner = jpeg((347, 347), (1, 2, 3)), b"RIFF....WEBP"
    store.put("c1", "outer", outer, "jpeg")
    store.put("c1", "inner", inner, "webp")
    store.put("c2", "background", b"GIF89a", "gif")
    store.put("c2", "piece", b"\x89PNG", "png")
    assert store.get("c1", "outer") == (outer, "image/jpeg")
    assert store.get("c1", "inner") == (inner, "image/webp")
    assert store.get("c2", "background") == (b"GIF89a", "image/gif")
    assert store.get("c2", "piece") == (b"\x89PNG", "image/png")
    assert store.get("c1", "piece") is None
    assert store.get("nope", "outer") is None
    assert store.bytes_used == len(outer) + len(inner) + 6 + 4


def test_oldest_challenges_go_first_when_the_count_is_passed() -> None:
    store = ImageStore(max_challenges=2, max_bytes=1_000)
    store.put("a", "outer", b"1", "png")
    store.put("b", "outer", b"2", "png")
    store.put("a", "inner", b"3", "png")  # a later part does not make "a" younger
    store.put("c", "outer", b"4", "png")
    assert "a" not in store and store.get("a", "inner") is None
    assert store.get("b", "outer") == (b"2", "image/png")
    assert store.get("c", "outer") == (b"4", "image/png")
    assert len(store) == 2 and store.bytes_used == 2


def test_oldest_challenges_go_first_when_the_bytes_are_passed() -> None:
    store = ImageStore(max_challenges=100, max_bytes=100)
    store.put("a", "background", b"x" * 40, "jpeg")
    store.put("b", "background", b"y" * 40, "jpeg")
    assert store.bytes_used == 80
    store.put("b", "background", b"y" * 50, "jpeg")  # replaced, counted once
    assert store.bytes_used == 90 and "a" in store
    store.put("c", "piece", b"z" * 30, "png")
    assert "a" not in store and "b" in store and "c" in store
    assert store.bytes_used == 80
    store.put("d", "piece", b"w" * 101, "png")  # bigger than the whole store: not kept, and pushes the rest out
    assert len(store) == 0 and store.bytes_used == 0


def test_answer_picture_is_drawn_once_and_counted() -> None:
    store = ImageStore(max_challenges=10, max_bytes=10_000_000)
    rotate_challenge(store, "r")
    assert store.answer_png("r") is None  # no answer yet
    images_bytes = store.bytes_used
    store.set_answer("r", {"value": 67.75, "fraction": 0.25, "angle": 90.0}, "rotate")
    first = store.answer_png("r")
    assert first is not None
    img = decoded(first)
    assert img.format == "PNG" and img.size == (347, 347)
    # Blue disc in the middle of the red ring.
    assert img.convert("RGB").getpixel((173, 173)) == (40, 40, 200)
    assert img.convert("RGB").getpixel((173, 20)) == (200, 40, 40)
    assert store.answer_png("r") is first
    assert store.bytes_used == images_bytes + len(first)
    store.set_answer("r", {"angle": 45.0}, "rotate")
    assert store.bytes_used == images_bytes
    second = store.answer_png("r")
    assert second is not None and second is not first


def test_slide_picture_uses_the_tip_y_given_at_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any], float | None]] = []

    def fake_draw(kind: str, images: dict[str, bytes], answer: dict[str, Any], tip_y: float | None = None) -> bytes:
        calls.append((kind, answer, tip_y))
        return b"picture"

    monkeypatch.setattr(image_store, "draw_answer", fake_draw)
    store = ImageStore(max_challenges=10, max_bytes=1_000)
    store.put("s", "background", b"bg", "jpeg")
    store.put("s", "piece", b"pc", "png")
    store.set_kind("s", "slide", tip_y=87.0)
    store.set_answer("s", {"x_natural": 312}, "slide")
    assert store.answer_png("s") == b"picture"
    assert calls == [("slide", {"x_natural": 312}, 87.0)]


def test_a_render_raced_by_a_change_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(max_challenges=10, max_bytes=1_000)
    pictures = iter([b"stale", b"fresh"])

    def racing_draw(kind: str, images: dict[str, bytes], answer: dict[str, Any], tip_y: float | None = None) -> bytes:
        picture = next(pictures)
        if picture == b"stale":
            store.set_answer("r", {"angle": 10.0}, "rotate")  # another thread changes the answer meanwhile
        return picture

    monkeypatch.setattr(image_store, "draw_answer", racing_draw)
    store.put("r", "outer", b"o", "png")
    store.put("r", "inner", b"i", "png")
    store.set_answer("r", {"angle": 5.0}, "rotate")
    assert store.answer_png("r") == b"stale"
    assert store.bytes_used == 2
    assert store.answer_png("r") == b"fresh"
    assert store.bytes_used == 2 + len(b"fresh")


def test_a_cached_picture_can_push_old_challenges_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_store, "draw_answer", lambda kind, images, answer, tip_y=None: b"ppp")
    store = ImageStore(max_challenges=10, max_bytes=6)
    for cid in ("old", "new"):
        store.put(cid, "outer", b"o", "png")
        store.put(cid, "inner", b"i", "png")
    store.set_answer("new", {"angle": 0.0}, "rotate")
    assert store.answer_png("new") == b"ppp"
    assert "old" not in store and "new" in store
    assert store.bytes_used == 5


def test_nothing_to_draw_is_none() -> None:
    store = ImageStore(max_challenges=10, max_bytes=10_000_000)
    store.set_answer("ghost", {"angle": 1.0}, "rotate")
    assert "ghost" not in store and store.answer_png("ghost") is None
    store.put("broken", "outer", b"not an image", "png")
    store.put("broken", "inner", b"nor this", "png")
    store.set_answer("broken", {"angle": 1.0}, "rotate")
    assert store.answer_png("broken") is None
    store.put("half", "outer", png((347, 347), (1, 1, 1, 255)), "png")
    store.set_answer("half", {"angle": 1.0}, "rotate")
    assert store.answer_png("half") is None


def test_placeholder_is_a_small_grey_png_made_once() -> None:
    store = ImageStore(max_challenges=1, max_bytes=1)
    body = store.placeholder_png()
    assert body is ImageStore(max_challenges=2, max_bytes=2).placeholder_png()
    img = decoded(body)
    assert img.format == "PNG" and img.size == image_store.PLACEHOLDER_SIZE
    colours = img.convert("RGB").getcolors(maxcolors=4096)
    assert colours is not None
    _, commonest = max(colours)
    assert commonest == (200, 200, 200)
    assert len(colours) > 1  # the word is drawn on it


def test_bounds_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        ImageStore(max_challenges=-1, max_bytes=10)


def test_smaller_bounds_evict_at_once() -> None:
    store = ImageStore(max_challenges=10, max_bytes=1_000)
    for cid in "abcd":
        store.put(cid, "outer", b"x" * 10, "png")
    store.resize(max_challenges=3, max_bytes=1_000)
    assert "a" not in store and len(store) == 3
    store.resize(max_challenges=3, max_bytes=15)
    assert [c for c in "abcd" if c in store] == ["d"]  # the newest stays
    assert store.bytes_used == 10
    with pytest.raises(ValueError):
        store.resize(max_challenges=1, max_bytes=-1)
