"""Reading a message body with a ceiling, so a huge or compression-bombed body costs nothing but a log line."""

from __future__ import annotations

import zlib

from mitmproxy import http


class BodyTooLarge(ValueError):
    pass


def bounded_content(message: http.Message, limit: int) -> bytes:
    """The decoded body, or BodyTooLarge when it (or what it inflates to) is over `limit` bytes."""
    raw = message.raw_content
    if raw is None:
        raise BodyTooLarge("body was streamed, not buffered")
    if len(raw) > limit:
        raise BodyTooLarge(f"body of {len(raw)} bytes is over the {limit}-byte limit")
    encoding = message.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if encoding != "deflate" else zlib.MAX_WBITS
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            if encoding != "deflate":
                raise ValueError(f"body is not valid {encoding}") from None
            try:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                out = inflater.decompress(raw, limit + 1)
            except zlib.error:
                raise ValueError("body is not valid deflate") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"{encoding} body inflates past the {limit}-byte limit")
        return out
    if len(raw) * 64 > limit:
        raise BodyTooLarge(f"{encoding} body of {len(raw)} bytes could inflate past the {limit}-byte limit")
    content = message.get_content(strict=True)
    if content is None or len(content) > limit:
        raise BodyTooLarge(f"{encoding} body inflates past the {limit}-byte limit")
    return content
