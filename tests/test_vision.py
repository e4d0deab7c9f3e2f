"""The local vision solvers (addon/solving/vision): real samples, re-cut real pairs, test-kit challenges, bad input."""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from addon.solving.vision import VisionError, VisionResult, solve_rotate, solve_slide
from scripts import eval_local, evalset
from tests.conftest import sample
from tests.kit import synth

LOW = 0.2


def encode(img: Image.Image, fmt: str = "PNG", **kw: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def circular(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> synth.Manifest:
    return synth.generate(tmp_path_factory.mktemp("kit"), seed=4242, count=6)


def read(kit: synth.Manifest, img: synth.ImageRef) -> bytes:
    return kit.file(img).read_bytes()


@pytest.fixture(scope="module")
def real_pairs() -> list[evalset.RealPair]:
    if not evalset.SAMPLES.exists():
        pytest.skip(f"{evalset.SAMPLES} is not present (the shared samples sit beside the project)")
    return evalset.load_real_pairs()


# -- rotate --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("outer", "inner", "angle"), [
    ("whirl-png-outer-347.png", "whirl-png-inner-211.png", 76.0),
    ("whirl-jpeg-outer-347.jpg", "whirl-jpeg-inner-211.jpg", 160.0),
])
def test_real_pairs_give_their_labels(outer: str, inner: str, angle: float) -> None:
    result = solve_rotate(sample(inner), sample(outer))
    assert circular(result.value, angle) <= 2.0
    assert 0.0 <= result.value < 360.0
    assert result.confidence >= 0.5


@pytest.mark.parametrize("era", ["png", "jpeg"])
@pytest.mark.parametrize("angle", [0.0, 37.5, 181.2, 359.0])
def test_recut_real_pairs_at_known_angles(real_pairs: list[evalset.RealPair], era: str, angle: float) -> None:
    rng = random.Random(1)
    for pair in real_pairs:
        turned = pair.aligned_inner().rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
        deg = evalset.Degrade(quality=70 if era == "jpeg" else None, blur=0.0, noise=2.0, scale=1.0)
        outer, inner = evalset.cut_pair(pair.outer, turned, era, deg, rng)
        fmt = "PNG" if era == "png" else "JPEG"
        result = solve_rotate(encode(inner, fmt), encode(outer, fmt))
        assert circular(result.value, angle) <= 4.0, (pair.name, result)
        assert result.confidence >= 0.5


def test_recut_pair_at_another_scale(real_pairs: list[evalset.RealPair]) -> None:
    pair = real_pairs[0]
    turned = pair.aligned_inner().rotate(123.0, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    deg = evalset.Degrade(quality=None, blur=0.0, noise=0.0, scale=1.5)
    outer, inner = evalset.cut_pair(pair.outer, turned, "png", deg, random.Random(2))
    assert (outer.width, inner.width) == (520, 316)
    assert circular(solve_rotate(encode(inner), encode(outer)).value, 123.0) <= 4.0


def test_kit_whirls_both_eras(kit: synth.Manifest) -> None:
    whirls = kit.whirls()
    assert {w.variant for w in whirls} == {"png", "jpeg"}
    for w in whirls:
        result = solve_rotate(read(kit, w.images["inner"]), read(kit, w.images["outer"]))
        assert circular(result.value, w.angle) <= 4.0, (w.id, w.angle, result)
        assert result.confidence >= 0.5


def test_mismatched_whirl_parts_get_a_low_confidence(kit: synth.Manifest) -> None:
    a, b = kit.whirls()[0], kit.whirls()[2]
    result = solve_rotate(read(kit, b.images["inner"]), read(kit, a.images["outer"]))
    assert result.confidence < LOW


# -- slide ---------------------------------------------------------------------------------------------------------


def test_kit_slides_with_piece(kit: synth.Manifest) -> None:
    for s in kit.slides():
        result = solve_slide(read(kit, s.images["background"]), read(kit, s.images["piece"]), s.tip_y)
        assert abs(result.value - s.gap_x) <= 3, (s.id, s.gap_x, result)
        assert result.confidence >= 0.5


def test_kit_slides_with_piece_without_tip_y(kit: synth.Manifest) -> None:
    s = kit.slides()[0]
    result = solve_slide(read(kit, s.images["background"]), read(kit, s.images["piece"]), None)
    assert abs(result.value - s.gap_x) <= 3


def test_kit_slides_from_the_background_alone(kit: synth.Manifest) -> None:
    for s in kit.slides():
        result = solve_slide(read(kit, s.images["background"]), None, s.tip_y)
        assert abs(result.value - s.gap_x) <= 3, (s.id, s.gap_x, result)
        assert result.confidence >= 0.5


def test_piece_box_wider_than_the_shape_answers_the_box_left_edge(kit: synth.Manifest) -> None:
    """x is where the piece's image goes, not where its visible shape starts."""
    rng = random.Random(9)
    scene = synth.picture(rng, synth.BG_SIZE, (0.3, 0.6))
    mask = evalset.shifted(synth.piece_mask(rng), 7)
    background, piece = synth.slide_images(scene, 250, 120, mask)
    result = solve_slide(encode(background, "JPEG", quality=85), encode(piece), 120)
    assert abs(result.value - 250) <= 1


def test_slide_on_a_real_photo(real_pairs: list[evalset.RealPair]) -> None:
    rng = random.Random(5)
    scene = evalset.photo_crop(rng, "photo-whirl", real_pairs[1].picture())
    background, piece = synth.slide_images(scene, 333, 150, synth.piece_mask(rng))
    bg = encode(background, "JPEG", quality=75)
    with_piece = solve_slide(bg, encode(piece), 150)
    alone = solve_slide(bg, None, 150)
    assert abs(with_piece.value - 333) <= 3 and with_piece.confidence >= 0.5
    assert abs(alone.value - 333) <= 3


@pytest.mark.parametrize("seed", [0, 5])
def test_background_only_confidence_weighs_the_gaps_white_stroke(seed: int) -> None:
    """The same darkened gap with and without the white stroke real slides draw round it: found either way, but
    without the stroke the answer is much less sure (a dark shape of the picture steps as uniformly)."""
    from addon.solving.vision.slide import analyse

    rng = random.Random(seed)
    scene = synth.picture(rng, synth.BG_SIZE, (0.3, 0.6))
    mask = synth.piece_mask(rng)
    with_stroke, _ = synth.slide_images(scene, 250, 120, mask)
    tile = scene.crop((250, 120, 360, 230))
    without = scene.copy()
    without.paste(Image.blend(tile, Image.new("RGB", tile.size, (10, 10, 10)), 0.55), (250, 120), mask)
    stroked = analyse(encode(with_stroke, "JPEG", quality=85), None, 120)
    plain = analyse(encode(without, "JPEG", quality=85), None, 120)
    assert abs(stroked.x - 250) <= 3 and abs(plain.x - 250) <= 3
    assert stroked.stroke > 0.2 > 0.1 > plain.stroke
    assert stroked.confidence >= 0.9 and plain.confidence < stroked.confidence - 0.2


def test_piece_without_alpha_falls_back_to_the_background(kit: synth.Manifest) -> None:
    s = kit.slides()[1]
    opaque = encode(Image.open(kit.file(s.images["piece"])).convert("RGB"))
    result = solve_slide(read(kit, s.images["background"]), opaque, s.tip_y)
    alone = solve_slide(read(kit, s.images["background"]), None, s.tip_y)
    assert result == alone


# -- bad input -----------------------------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def blank(size: tuple[int, int], colour: tuple[int, ...], fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB" if len(colour) == 3 else "RGBA", size, colour), fmt)


def test_result_types() -> None:
    assert issubclass(VisionError, ValueError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        VisionResult(1.0, 0.5).value = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "blank-white", "blank-grey-jpeg", "blank-alpha",
                                  "huge-header", "too-wide", "swapped", "same-size", "slide-parts"])
def test_bad_whirl_input_is_refused(kit: synth.Manifest, case: str) -> None:
    w = kit.whirls()[1]
    outer, inner = read(kit, w.images["outer"]), read(kit, w.images["inner"])
    s = kit.slides()[0]
    pairs = {
        "empty": (b"", outer),
        "garbage": (random.Random(3).randbytes(4000), outer),
        "truncated": (inner, outer[: len(outer) // 2]),
        "blank-white": (blank((211, 211), (255, 255, 255)), blank((347, 347), (255, 255, 255))),
        "blank-grey-jpeg": (blank((211, 211), (128, 128, 128), "JPEG"), blank((347, 347), (128, 128, 128), "JPEG")),
        "blank-alpha": (blank((211, 211), (0, 0, 0, 0)), blank((347, 347), (0, 0, 0, 0))),
        "huge-header": (inner, png_header_only(20000, 20000)),
        "too-wide": (inner, encode(Image.new("RGB", (4100, 20), (1, 2, 3)))),
        "swapped": (outer, inner),
        "same-size": (outer, outer),
        "slide-parts": (read(kit, s.images["piece"]), read(kit, s.images["background"])),
    }
    with pytest.raises(VisionError):
        solve_rotate(*pairs[case])


def test_ring_without_a_hole_is_refused(kit: synth.Manifest) -> None:
    w = kit.whirls()[0]
    rng = random.Random(4)
    filled = encode(synth.picture(rng, (347, 347), (0.4, 0.5)))
    with pytest.raises(VisionError, match="centre"):
        solve_rotate(read(kit, w.images["inner"]), filled)


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "blank", "blank-jpeg", "huge-header", "too-wide",
                                  "whirl-outer", "piece-too-big", "piece-garbage"])
def test_bad_slide_input_is_refused(kit: synth.Manifest, case: str) -> None:
    s = kit.slides()[2]
    bg, piece = read(kit, s.images["background"]), read(kit, s.images["piece"])
    cases: dict[str, tuple[bytes, bytes | None]] = {
        "empty": (b"", piece),
        "garbage": (random.Random(5).randbytes(6000), None),
        "truncated": (bg[: len(bg) - 200], piece),
        "blank": (blank((552, 344), (255, 255, 255)), piece),
        "blank-jpeg": (blank((552, 344), (90, 90, 90), "JPEG"), None),
        "huge-header": (png_header_only(4096, 4096), piece),
        "too-wide": (encode(Image.new("RGB", (4200, 2600), (5, 6, 7)), "JPEG"), None),
        "whirl-outer": (read(kit, kit.whirls()[0].images["outer"]), None),
        "piece-too-big": (bg, encode(Image.new("RGBA", (400, 300), (1, 2, 3, 255)))),
        "piece-garbage": (bg, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
    }
    with pytest.raises(VisionError):
        solve_slide(*cases[case], s.tip_y)


@pytest.mark.parametrize("with_piece", [True, False])
def test_3d_sample_is_not_taken_for_a_slide(kit: synth.Manifest, with_piece: bool) -> None:
    piece = read(kit, kit.slides()[0].images["piece"]) if with_piece else None
    result = solve_slide(sample("3d-552x344.png"), piece, 120)
    assert result.confidence < LOW


def test_noise_background_gets_a_low_confidence() -> None:
    noise = encode(Image.effect_noise((552, 344), 60).convert("RGB"), "JPEG", quality=85)
    assert solve_slide(noise, None, 100).confidence < LOW


@pytest.mark.parametrize("tip_y", [float("nan"), float("inf"), -1e9, 1e9])
def test_absurd_tip_y_is_ignored(kit: synth.Manifest, tip_y: float) -> None:
    s = kit.slides()[3]
    result = solve_slide(read(kit, s.images["background"]), read(kit, s.images["piece"]), tip_y)
    assert abs(result.value - s.gap_x) <= 3


# -- evaluation tooling --------------------------------------------------------------------------------------------


def test_fit_logistic_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4000, 2))
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))
    y = (rng.random(4000) < p).astype(float)
    w = eval_local.fit_logistic(x, y, l2=1e-6)
    assert np.allclose(w, [0.5, 2.0, -1.0], atol=0.2)


def test_the_background_only_bias_shift_makes_half_mean_the_target_share_right() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3000, 1))
    y = (rng.random(3000) < 1 / (1 + np.exp(-3 * x[:, 0]))).astype(float)
    w = eval_local.shift_to_right_share(eval_local.fit_logistic(x, y), x, y, 0.99)
    z = w[0] + x @ w[1:]
    sure = z >= 0
    assert y[sure].mean() >= 0.99 and 0.05 < sure.mean() < 0.5
    # the largest such set: taking in any of the less sure answers brings the share under the target
    share = np.cumsum(y[np.argsort(-z)]) / np.arange(1, len(y) + 1)
    assert (share[int(sure.sum()):] < 0.99).all()


def test_evalset_kit_batch_keeps_the_3d_pictures_as_slide_negatives(tmp_path: Path) -> None:
    w = evalset.Writer(tmp_path)
    evalset.kit_batch(w, 3, 2, "tune")
    negatives = [i for i in w.items if i["source"] == "kit-3d"]
    assert negatives and all(i["gap_x"] is None for i in negatives)
    assert all((tmp_path / f).is_file() for i in negatives for f in i["files"].values())


def test_eval_local_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        eval_local.main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_evalset_reads_the_labels(real_pairs: list[evalset.RealPair]) -> None:
    assert [(p.name, p.label) for p in real_pairs] == [("real-png", 76.0), ("real-jpeg", 160.0)]

