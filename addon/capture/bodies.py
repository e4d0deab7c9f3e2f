"""Reading a message body with a ceiling, so a huge or compression-bombed body costs nothing but a log line."""

from __future__ import annotations

import io
import zlib

import brotli
import zstandard
from mitmproxy import http

ZSTD_MAX_WINDOW = 8 * 1024 * 1024
"""The largest zstd window accepted (RFC 9659's limit for the zstd content coding); bigger frames are refused."""


class BodyTooLarge(ValueError):
    pass


def bounded_content(message: http.Message, limit: int) -> bytes:
    """The decoded body, or BodyTooLarge when it (or what it inflates to) is over `limit` bytes.

    Raises ValueError when the body is not valid for its Content-Encoding or the encoding is not one of identity,
    gzip, deflate, br and zstd. Every decoder stops once it has produced more than `limit` bytes (br within a
    factor of two of it), so a bomb costs about that much and no more.
    """
    raw = message.raw_content
    if raw is None:
        raise BodyTooLarge("body was streamed, not buffered")
    if len(raw) > limit:
        raise BodyTooLarge(f"body of {len(raw)} bytes is over the {limit}-byte limit")
    encoding = message.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity", "none"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate", "br", "zstd"):
        # mitmproxy would hand any other name to codecs.decode (bz2, zlib, base64, ...), which has no ceiling.
        raise ValueError(f"unsupported content-encoding {encoding[:40]!r}")
    if not raw:
        return b""
    if encoding == "br":
        out = _brotli(raw, limit)
    elif encoding == "zstd":
        out = _zstd(raw, limit)
    elif encoding == "deflate":
        try:
            out = _inflate(raw, zlib.MAX_WBITS, limit, encoding)
        except BodyTooLarge:
            raise
        except (zlib.error, ValueError):
            # Some servers send raw deflate without the zlib wrapper.
            try:
                out = _inflate(raw, -zlib.MAX_WBITS, limit, encoding)
            except zlib.error:
                raise ValueError("body is not valid deflate") from None
    else:
        try:
            out = _inflate(raw, 32 + zlib.MAX_WBITS, limit, encoding)
        except zlib.error:
            raise ValueError(f"body is not valid {encoding}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"{encoding} body inflates past the {limit}-byte limit")
    return out


def _inflate(raw: bytes, wbits: int, limit: int, encoding: str) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(raw, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"{encoding} body inflates past the {limit}-byte limit")
    if not inflater.eof:
        raise ValueError(f"body is truncated {encoding}")
    return out


def _brotli(raw: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        out: bytes = decompressor.process(raw, output_buffer_limit=limit + 1)
    except brotli.error:
        raise ValueError("body is not valid br") from None
    if len(out) > limit:
        raise BodyTooLarge(f"br body inflates past the {limit}-byte limit")
    if not decompressor.is_finished():
        raise ValueError("body is truncated br")
    return out


def _zstd(raw: bytes, limit: int) -> bytes:
    decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    chunks: list[bytes] = []
    total = 0
    try:
        with decompressor.stream_reader(io.BytesIO(raw), read_across_frames=True) as reader:
            while total <= limit:
                chunk = reader.read(limit + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except zstandard.ZstdError:
        raise ValueError("body is not valid zstd") from None
    if total > limit:
        raise BodyTooLarge(f"zstd body inflates past the {limit}-byte limit")
    return b"".join(chunks)
