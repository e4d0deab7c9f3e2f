"""The dashboard's static files (one page, its script, stylesheet and icon), read once and served as they are."""

from __future__ import annotations

import functools
from pathlib import Path

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
"""For the page's response: the page loads nothing but its own files, API answers and blob URLs made of them."""


def asset(name: str) -> tuple[bytes, str] | None:
    """The file's bytes and content type; None for any other name ("" is the page)."""
    return _assets().get(name or "index.html")


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    folder = Path(__file__).parent
    return {name: ((folder / name).read_bytes(), content_type) for name, content_type in CONTENT_TYPES.items()}
