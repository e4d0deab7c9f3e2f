from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from mitmproxy.utils import asyncio_utils

# The processes the tests start (mitmdump, the origin, scripts) may keep the project's compiled modules: where the
# environment sets PYTHONDONTWRITEBYTECODE, each of dozens of mitmdumps would compile the addon again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"


@pytest.fixture
async def eager_tasks() -> AsyncIterator[None]:
    """The test's event loop with the task factory mitmproxy's master runs the proxy under (its own
    `set_eager_task_factory`: `asyncio.eager_task_factory`): a task created there starts running inside
    `create_task`, up to its first real wait, so state set after the call is not there yet when the task looks.
    A module of tests whose code creates tasks in the proxy uses it: `pytestmark = usefixtures("eager_tasks")`."""
    with asyncio_utils.set_eager_task_factory():
        yield


def samples_missing(path: Path) -> NoReturn:
    """A test that needs the real samples: skipped in a lone clone, failed under CI (env CI set), whose checkout
    has ../shared beside the project, so a test that quietly stopped running cannot pass there."""
    message = f"{path} is not present (the shared samples sit beside the project, in ../shared/samples)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run with them", pytrace=False)
    pytest.skip(message)


def sample(name: str) -> bytes:
    path = SAMPLES / name
    if not path.exists():
        samples_missing(path)
    return path.read_bytes()


def seal(obj: Any, version: int = 1) -> str:
    """An edata envelope made the way captcha-traffic.md describes, independently of the addon's decoder.
    Key and nonce follow from the plaintext, so parametrized ids are the same in every pytest-xdist worker."""
    plain = json.dumps(obj).encode()
    key, nonce = hashlib.sha256(b"key" + plain).digest(), hashlib.sha256(b"nonce" + plain).digest()[:12]
    enc = Cipher(ChaCha20(key, b"\0\0\0\0" + nonce), mode=None).encryptor()
    cipher = enc.update(plain) + enc.finalize()
    return base64.b64encode(bytes([version]) + key + nonce + cipher).decode()


def tiny_manifest(directory: Path, whirls: int = 2, slides: int = 2) -> dict[str, Any]:
    """A small manifest in the test kit's format (tests/kit/CONTRACT.md), quick to make."""
    import io
    import random

    from PIL import Image

    rng = random.Random(7)
    directory.mkdir(parents=True, exist_ok=True)
    challenges: list[dict[str, Any]] = []

    def save(name: str, img: Image.Image, fmt: str) -> dict[str, Any]:
        out = io.BytesIO()
        img.save(out, fmt)
        data = out.getvalue()
        (directory / name).write_bytes(data)
        h = hashlib.sha256(data).hexdigest()
        return {
            "file": name,
            "path": f"/tos-maliva-i-b4yrtqhy5a-us/{h[:32]}~tplv-b4yrtqhy5a-1.png",
            "sha256": h,
            "width": img.width,
            "height": img.height,
            "format": "png" if fmt == "PNG" else "jpeg",
        }

    for i in range(whirls):
        angle = rng.uniform(10, 350)
        base = Image.effect_noise((347, 347), 50 + i).convert("RGBA")
        challenges.append(
            {
                "id": f"{i:040x}",
                "mode": "whirl",
                "variant": "png",
                "angle": angle,
                "drag_px": angle / 360 * 271,
                "images": {
                    "outer": save(f"w{i}-outer.png", base, "PNG"),
                    "inner": save(f"w{i}-inner.png", base.crop((68, 68, 279, 279)), "PNG"),
                },
            }
        )
    for i in range(slides):
        gap_x = rng.randint(120, 430)
        bg = Image.effect_noise((552, 344), 30 + i).convert("RGB")
        challenges.append(
            {
                "id": f"{1000 + i:040x}",
                "mode": "slide",
                "variant": "jpeg",
                "gap_x": gap_x,
                "tip_y": 80,
                "images": {
                    "background": save(f"s{i}-bg.jpg", bg, "JPEG"),
                    "piece": save(f"s{i}-piece.png", Image.new("RGBA", (110, 110), (9, 9, 9, 200)), "PNG"),
                },
            }
        )
    manifest = {"seed": 7, "widget": {"width": 340, "handle": 69, "travel": 271}, "challenges": challenges}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


LONGEST_MODULES = ("test_e2e_robust.py", "test_e2e.py", "test_e2e_delivery.py", "test_e2e_dashboard.py",
                   "test_e2e_browser.py", "test_e2e_chain.py", "test_e2e_fleet.py", "test_e2e_local.py")
"""The modules that take longest (a minute or more of one worker each), longest first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end modules first: pytest-xdist hands modules out in this order, so the long ones start early and
    the quick ones fill the gaps, instead of a long module starting last and running alone at the end."""
    def slow_first(item: pytest.Item) -> int:
        name = item.path.name if hasattr(item, "path") else ""
        if name in LONGEST_MODULES:
            return LONGEST_MODULES.index(name)
        return len(LONGEST_MODULES) if name.startswith(("test_e2e", "test_kit_proxy", "test_fuzz")) else 99

    items.sort(key=slow_first)
