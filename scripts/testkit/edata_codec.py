"""The `edata` envelope for the test kit, written from captcha-traffic.md §3 C independently of the addon's decoder."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20


def _stream(key: bytes, nonce: bytes, data: bytes) -> bytes:
    cipher = Cipher(ChaCha20(key, b"\x00\x00\x00\x00" + nonce), mode=None).encryptor()
    return cipher.update(data) + cipher.finalize()


def encode_edata(obj: Any) -> str:
    key, nonce = os.urandom(32), os.urandom(12)
    plain = json.dumps(obj, separators=(",", ":")).encode()
    return base64.b64encode(b"\x01" + key + nonce + _stream(key, nonce, plain)).decode()


def decode_edata(s: str) -> Any:
    blob = base64.b64decode(s)
    if len(blob) < 45 or blob[0] != 1:
        raise ValueError("not an edata envelope")
    return json.loads(_stream(blob[1:33], blob[33:45], blob[45:]))
