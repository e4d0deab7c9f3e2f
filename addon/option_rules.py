"""What an option of the addon is (`Option`) and what its values must be (`Rule`), apart from the table of them
(`addon/mitm/option_table.py`), so a solver module can declare its own options (`addon/solving/plugins.py`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

AddonName = Literal["api", "capture", "solving", "events", "fleet"]
"""The addon object (addon/mitm/) whose ``load()`` registers an option."""


@dataclass(frozen=True, slots=True)
class Rule:
    """What one option accepts: its type and a check of the value (False: refused), described for people."""

    type: type
    accepted: str
    check: Callable[[Any], bool] = lambda _value: True


@dataclass(frozen=True, slots=True)
class Option:
    """One option of the addon, as mitmproxy registers it and as docs/options.md shows it."""

    name: str
    type: type
    default: Any
    addon: AddonName
    help: str
    """mitmproxy's help text (``mitmdump --options``, mitmweb's options page)."""
    rule: Rule | None = None
    """What a value must be; None: mitmproxy's own type check is the rule (captcha_redis: a bad URL is logged and
    the proxy runs alone, addon/mitm/fleet.py, as the fleet's Redis may be wrong without the proxy being useless)."""
    shown_default: str | None = None
    """The default as docs/options.md shows it, where it is more than the literal (a fallback to the environment)."""
    doc: str | None = None
    """docs/options.md's meaning column, where it says more than ``help``."""
    secret: bool = False
    """Its value never appears in a message (a key, a token)."""


def int_range(low: int, high: int, unit: str) -> Rule:
    return Rule(int, f"an integer from {low} to {high} ({unit})", lambda v: low <= v <= high)


def _http_url(value: str) -> bool:
    parts = urllib.parse.urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value.strip())


HTTP_URL = Rule(str, "an http:// or https:// URL with a host", _http_url)
"""A paid service's base URL."""


def _key(value: str) -> bool:
    # The addon strips the key; whitespace or control characters inside it are a pasting accident.
    key = value.strip()
    return key.isprintable() and not any(c.isspace() for c in key)


KEY = Rule(str, "the key alone: printable, no spaces inside (or empty)", _key)
"""A paid service's key."""
