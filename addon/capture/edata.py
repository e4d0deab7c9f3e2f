"""The `edata` envelope of ByteDance captcha bodies: base64 of version byte, key, nonce, ChaCha20 ciphertext."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

VERSION = 0x01
KEY_LEN = 32
NONCE_LEN = 12
MAX_EDATA_CHARS = 4 * 1024 * 1024


class EdataError(ValueError):
    """The envelope could not be opened; the message says why without echoing the data."""


def decrypt(edata: str) -> bytes:
    if not isinstance(edata, str):
        raise EdataError(f"edata is {type(edata).__name__}, not a string")
    if len(edata) > MAX_EDATA_CHARS:
        raise EdataError(f"edata too long ({len(edata)} chars)")
    try:
        blob = base64.b64decode(edata + "=" * (-len(edata) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise EdataError("edata is not valid base64") from e
    if len(blob) < 1 + KEY_LEN + NONCE_LEN:
        raise EdataError(f"edata too short ({len(blob)} bytes)")
    if blob[0] != VERSION:
        raise EdataError(f"edata has unknown version byte 0x{blob[0]:02x}")
    key = blob[1 : 1 + KEY_LEN]
    nonce = blob[1 + KEY_LEN : 1 + KEY_LEN + NONCE_LEN]
    decryptor = Cipher(ChaCha20(key, b"\x00\x00\x00\x00" + nonce), mode=None).decryptor()
    return decryptor.update(blob[1 + KEY_LEN + NONCE_LEN :]) + decryptor.finalize()


def decode(edata: str) -> Any:
    """Decrypts an envelope and parses the JSON inside it."""
    plain = decrypt(edata)
    try:
        return json.loads(plain)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's limit, e.g. `[[[[...`.
        raise EdataError("edata plaintext is not JSON") from None


def unwrap(body: Any) -> Any:
    """Returns the JSON inside `{"edata": ...}` or `{"data": {"edata": ...}}`, or the body itself if it has none."""
    if isinstance(body, dict):
        if isinstance(body.get("edata"), str):
            return decode(body["edata"])
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("edata"), str):
            return decode(data["edata"])
    return body
