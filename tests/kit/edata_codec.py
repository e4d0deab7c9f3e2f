"""The `edata` envelope of captcha-traffic.md §3 C, written from the spec independently of the addon's decoder.

Blob = version byte 0x01 | 32-byte key | 12-byte nonce | ChaCha20 (RFC 8439, block counter 0) of the JSON text,
then standard base64. The key travels inside the blob, so anyone on the path can read it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

VERSION = 0x01
KEY_SIZE, NONCE_SIZE = 32, 12
HEADER_SIZE = 1 + KEY_SIZE + NONCE_SIZE


class EdataError(ValueError):
    """The text is not an edata envelope this codec can open."""


def chacha20(key: bytes, nonce: bytes, data: bytes) -> bytes:
    """RFC 8439 ChaCha20 from block counter 0 (`cryptography` takes counter || nonce as a 16-byte nonce)."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("ChaCha20 needs a 32-byte key and a 12-byte nonce")
    cipher = Cipher(ChaCha20(key, b"\x00\x00\x00\x00" + nonce), mode=None).encryptor()
    return cipher.update(data) + cipher.finalize()


def seal(plain: bytes, key: bytes | None = None, nonce: bytes | None = None) -> bytes:
    key = os.urandom(KEY_SIZE) if key is None else key
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    return bytes([VERSION]) + key + nonce + chacha20(key, nonce, plain)


def open_blob(blob: bytes) -> bytes:
    if len(blob) < HEADER_SIZE:
        raise EdataError(f"edata blob of {len(blob)} bytes is shorter than its {HEADER_SIZE}-byte header")
    if blob[0] != VERSION:
        raise EdataError(f"edata version byte is {blob[0]:#04x}, expected {VERSION:#04x}")
    return chacha20(blob[1 : 1 + KEY_SIZE], blob[1 + KEY_SIZE : HEADER_SIZE], blob[HEADER_SIZE:])


def encode_edata(obj: Any, *, key: bytes | None = None, nonce: bytes | None = None) -> str:
    """JSON of `obj`, sealed and base64-encoded; random key and nonce unless given."""
    plain = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(seal(plain, key, nonce)).decode("ascii")


def decode_edata(s: str | bytes) -> Any:
    """The JSON inside an envelope; raises EdataError when it is not base64, not version 1 or not JSON."""
    text = s.encode("ascii", "replace") if isinstance(s, str) else s
    text = text.strip().replace(b"-", b"+").replace(b"_", b"/")
    try:
        blob = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise EdataError(f"edata is not base64: {e}") from None
    try:
        return json.loads(open_blob(blob))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdataError(f"edata plaintext is not JSON: {e}") from None


def find_edata(body: Any) -> str | None:
    """The envelope of a body shaped `{"edata": s}` or `{"data": {"edata": s}}`, else None."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("edata"), str):
        return str(body["edata"])
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("edata"), str):
        return str(data["edata"])
    return None
