from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"


def sample(name: str) -> bytes:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not present (the shared samples sit beside the project)")
    return path.read_bytes()


def seal(obj: Any, version: int = 1) -> str:
    """An edata envelope made the way captcha-traffic.md describes, independently of the addon's decoder."""
    key, nonce = os.urandom(32), os.urandom(12)
    enc = Cipher(ChaCha20(key, b"\0\0\0\0" + nonce), mode=None).encryptor()
    cipher = enc.update(json.dumps(obj).encode()) + enc.finalize()
    return base64.b64encode(bytes([version]) + key + nonce + cipher).decode()
