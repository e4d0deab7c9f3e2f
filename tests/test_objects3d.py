"""The local 3D-objects solver: model file, real held-out challenges, the shared sample, bad inputs, determinism."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from addon.solving.vision import VisionError
from addon.solving.vision import objects3d as o3
from tests.conftest import SAMPLES, sample, samples_missing

TRAIN = SAMPLES / "3d-train"


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _inside(box: list[float], p: tuple[float, float]) -> bool:
    cx, cy, w, h = box
    return abs(p[0] - cx) <= w / 2 and abs(p[1] - cy) <= h / 2


def test_model_loads_with_its_split() -> None:
    m = o3.load_model()
    assert m.projection.shape[0] == m.mean.shape[0]
    split = m.meta["split"]
    assert set(split.values()) == {"train", "calib", "test"}
    assert o3.MODEL_PATH.stat().st_size <= 10 * 1024 * 1024


def test_shared_sample_gives_the_two_ks() -> None:
    r = o3.solve_3d(sample("3d-552x344.png"))
    got = sorted(r.points, key=lambda p: p[1])
    assert abs(got[0][0] - 293) < 20 and abs(got[0][1] - 122) < 20
    assert abs(got[1][0] - 246) < 25 and abs(got[1][1] - 268) < 25
    assert 0.0 <= r.confidence <= 1.0
    assert len(r.boxes) == 7


def test_held_out_sources_answered_in_the_pairs_boxes() -> None:
    """A handful of confident answers on test-split sources: each point inside a different box of the pair."""
    if not (TRAIN / "labels.json").exists():
        samples_missing(TRAIN / "labels.json")
    labels = json.loads((TRAIN / "labels.json").read_text())["labels"]
    split = o3.load_model().meta["split"]
    names = [n for n in sorted(labels) if split.get(labels[n]["source"]) == "test" and labels[n]["pair"]][::6][:24]
    right = 0
    for name in names:
        lab = labels[name]
        r = o3.solve_3d((TRAIN / name).read_bytes())
        boxes = [b["box"] for b in lab["boxes"] if b["cls"] == lab["pair"]["cls"]]
        a = {k for k, b in enumerate(boxes) if _inside(b, r.points[0])}
        b = {k for k, bb in enumerate(boxes) if _inside(bb, r.points[1])}
        right += any(i != j for i in a for j in b)
    assert right >= len(names) // 3


@pytest.mark.parametrize("data", [b"", b"not an image", _png(Image.new("RGB", (552, 344), (243, 244, 246))),
                                  _png(Image.new("RGB", (347, 347), (200, 10, 10)))])
def test_bad_inputs_are_refused(data: bytes) -> None:
    with pytest.raises(VisionError):
        o3.solve_3d(data)


def test_noise_is_refused_or_unsure() -> None:
    noise = _png(Image.effect_noise((552, 344), 60).convert("RGB"))
    try:
        r = o3.solve_3d(noise)
    except VisionError:
        return
    assert r.confidence < 0.3


def test_whirl_ring_is_refused_or_unsure() -> None:
    ring = Image.open(io.BytesIO(sample("whirl-png-outer-347.png"))).convert("RGB").resize((552, 344))
    try:
        r = o3.solve_3d(_png(ring))
    except VisionError:
        return
    assert r.confidence < 0.3


def test_deterministic() -> None:
    data = sample("3d-552x344.png")
    a, b = o3.solve_3d(data), o3.solve_3d(data)
    assert a == b
    assert np.isfinite(a.confidence)
