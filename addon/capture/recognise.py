"""Parsing of `/captcha/get` and `/captcha/verify` bodies in their plain, list and `edata` shapes."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from addon.capture import edata
from addon.kinds import MODE_KINDS as MODE_KINDS
from addon.kinds import SPECS, Role, kind_of_mode
from addon.kinds import Kind as Kind  # re-exported for the callers that named it here

MAX_JSON_BODY = 2 * 1024 * 1024
MAX_INLINE_IMAGE = 4 * 1024 * 1024
MAX_CHALLENGES = 16
"""Challenges taken from one get response; real ones list one to three."""
MAX_URLS = 8
"""URLs kept per image (the primary and its backups); real responses give one or two."""
MAX_URL_CHARS = 4096
"""Longer URLs are left out: real image URLs are under 200 characters."""


MAX_QUESTION_CHARS = 500
"""A longer prompt is not taken for one (real prompts are one short sentence)."""
CHALLENGE_CODE_MODES = {99996: "whirl", 99999: "slide", 99997: "3d"}
QUESTION_FIELDS = ("question", "text", "tip", "tips", "prompt", "title", "desc", "description", "content")
"""Fields of `question` read first for an object captcha's prompt; after them any other string field that is not
an image (see `_prompt`)."""
NOT_PROMPT_FIELDS = frozenset({"tip_y", "url1", "url2", "backup_url1", "backup_url2", "object1", "object2",
                               "objects"})

VERIFICATION_HOST = re.compile(
    r"(?:^|\.)(?:tiktok\.com|tiktokv\.com|tiktokv\.eu|tiktokv\.us|tiktokw\.eu|tiktokw\.us|byteoversea\.com"
    r"|zijieapi\.com|snssdk\.com|douyin\.com|doubao\.com|juejin\.cn|tokopedia\.com|bytedance\.com)$"
)
CAPTCHA_CDN_HOST = re.compile(
    r"^p\d+-(?:rc-)?(?:captcha|catpcha|security)[a-z0-9-]*"
    r"\.(?:ibyteimg\.com|byteimg\.com|tiktokcdn\.com|tiktokcdn-eu\.com|tiktokcdn-us\.com)$"
)


class NotRecognised(ValueError):
    """The body is not one this module understands; the message says why without echoing it."""


@dataclass(frozen=True, slots=True)
class AnnouncedChallenge:
    """One challenge as a get response describes it."""

    id: str
    mode: str
    kind: Kind | None
    urls: dict[Role, tuple[str, ...]] = field(default_factory=dict)
    """Role → the primary URL then its backups. Unknown modes list theirs under BACKGROUND (never captured)."""
    inline: dict[Role, bytes] = field(default_factory=dict)
    tip_y: float | None = None
    verify_id: str | None = None
    question: str | None = None
    """An object captcha's prompt, when the get carries one."""
    malformed: str | None = None
    """Why the get's challenge cannot be solved as it stands (an object captcha naming two images), else None."""


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    challenge_id: str | None
    mode: str | None


def url_key(url: str) -> str:
    """An image's identity: the same image is served from several hosts, so only the path counts.

    Raises ValueError for what urlsplit refuses; `parse_get` leaves such URLs out.
    """
    path = urllib.parse.urlsplit(url).path
    return path or "/"


def load_json(body: bytes) -> Any:
    if len(body) > MAX_JSON_BODY:
        raise NotRecognised(f"body too large ({len(body)} bytes)")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's limit, e.g. `[[[[...`.
        raise NotRecognised("body is not JSON") from None


def _unwrap(obj: Any) -> Any:
    try:
        return edata.unwrap(obj)
    except edata.EdataError as e:
        raise NotRecognised(str(e)) from None


def parse_get(body: bytes) -> list[AnnouncedChallenge]:
    """The challenges of a `/captcha/get` response (shape A, B or C), at most MAX_CHALLENGES; raises NotRecognised."""
    doc = _unwrap(load_json(body))
    if not isinstance(doc, dict):
        raise NotRecognised("get body is not a JSON object")
    data = doc.get("data", doc)
    data = _unwrap(data)
    if not isinstance(data, dict):
        raise NotRecognised("get body has no data object")
    if isinstance(data.get("data"), dict) and "challenges" not in data and "question" not in data:
        data = data["data"]
    verify_id = _str(data.get("verify_id"))
    if isinstance(data.get("challenges"), list):
        items = [c for c in data["challenges"] if isinstance(c, dict)]
    elif isinstance(data.get("question"), dict):
        items = [data]
    else:
        raise NotRecognised("get body has neither data.question nor data.challenges")
    usable = (c for c in (_challenge(item, verify_id) for item in items) if c is not None)
    out = list(itertools.islice(usable, MAX_CHALLENGES))
    if not out:
        raise NotRecognised("get body lists no usable challenge")
    return out


def _is_text(value: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(value: Any) -> str | None:
    """A non-empty identifier: a string (that later steps can write as UTF-8) or an integer."""
    if isinstance(value, str) and value:
        return value if _is_text(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _urls(question: dict[str, Any], n: int) -> tuple[str, ...]:
    candidates: list[Any] = [question.get(f"url{n}")]
    backups = question.get(f"backup_url{n}")
    if isinstance(backups, str):
        candidates.append(backups)
    elif isinstance(backups, list):
        candidates.extend(backups[: 8 * MAX_URLS])
    urls: dict[str, None] = {}
    for u in candidates:
        if isinstance(u, str) and 0 < len(u) <= MAX_URL_CHARS and u not in urls and _is_text(u):
            try:
                url_key(u)
            except ValueError:
                continue  # urlsplit refuses it ("https://[x/"): no request can match it, and the assembler keys by it
            urls[u] = None
            if len(urls) >= MAX_URLS:
                break
    return tuple(urls)


def _inline(question: dict[str, Any], n: int) -> bytes | None:
    value = question.get(f"object{n}")
    if value is None and n == 1:
        objects = question.get("objects")
        value = objects[0] if isinstance(objects, list) and objects else None
    elif value is None and n == 2:
        objects = question.get("objects")
        value = objects[1] if isinstance(objects, list) and len(objects) > 1 else None
    if not isinstance(value, str) or not value or len(value) > MAX_INLINE_IMAGE * 4 // 3 + 64:
        return None
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None


def _challenge(item: dict[str, Any], verify_id: str | None) -> AnnouncedChallenge | None:
    challenge_id = _str(item.get("id"))
    question = item.get("question")
    if challenge_id is None or not isinstance(question, dict):
        return None
    mode = item.get("mode")
    if not isinstance(mode, str) or not mode or not _is_text(mode):
        code = item.get("challenge_code")
        mode = CHALLENGE_CODE_MODES.get(code, "unknown") if isinstance(code, int) else "unknown"
    mode = mode.lower()
    kind = kind_of_mode(mode)
    urls: dict[Role, tuple[str, ...]] = {}
    inline: dict[Role, bytes] = {}
    roles: tuple[Role | None, ...] = SPECS[kind].url_roles if kind else (Role.BACKGROUND, None)
    for n, role in enumerate(roles, start=1):
        if role is None:
            continue
        found = _urls(question, n)
        if found:
            urls[role] = found
        if kind is not None and (data := _inline(question, n)) is not None:
            inline[role] = data
    malformed = None
    if kind is not None and len(roles) < 2 and (_urls(question, 2) or _inline(question, 2) is not None):
        malformed = f"the get's {mode} challenge names two images; a {mode} challenge has one"
    return AnnouncedChallenge(
        id=challenge_id,
        mode=mode,
        kind=kind,
        urls=urls,
        inline=inline,
        tip_y=_number(question.get("tip_y")),
        verify_id=_str(item.get("verify_id")) or verify_id,
        question=_prompt(question) if kind is not None and SPECS[kind].has_question else None,
        malformed=malformed,
    )


def _prompt(question: dict[str, Any]) -> str | None:
    """An object captcha's prompt: the first of QUESTION_FIELDS that is a usable string, else any other string
    field of `question` that is not an image (not a URL, `data:`/`blob:` URI, or long base64). No public sample
    shows where an icon get keeps its prompt, so this reads defensively; a string over MAX_QUESTION_CHARS is
    never a prompt."""
    ordered = [question.get(name) for name in QUESTION_FIELDS]
    ordered += [v for k, v in question.items() if k not in QUESTION_FIELDS and k not in NOT_PROMPT_FIELDS]
    for value in ordered:
        if not isinstance(value, str) or not _is_text(value):
            continue
        text = " ".join(value.split())
        if not text or len(text) > MAX_QUESTION_CHARS or "://" in text or text.startswith(("data:", "blob:")):
            continue
        if len(text) > 64 and " " not in text:
            continue  # base64 or a token, not a sentence
        return text
    return None


def parse_verify_request(body: bytes) -> VerifyRequest:
    """The challenge a `/captcha/verify` request answers, from its JSON or form body (plain or `edata`)."""
    if not body:
        return VerifyRequest(None, None)
    doc: Any
    try:
        doc = _unwrap(load_json(body))
    except NotRecognised:
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8", "strict"), max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            return VerifyRequest(None, None)
        doc = {k: v[0] for k, v in form.items() if v}
        try:
            doc = _unwrap(doc)
        except NotRecognised:
            return VerifyRequest(None, None)
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "id" not in doc:
        doc = doc["data"]
    if not isinstance(doc, dict):
        return VerifyRequest(None, None)
    mode = doc.get("mode")
    return VerifyRequest(_str(doc.get("id")), _str(mode) if isinstance(mode, str) else None)


def parse_verify_response(body: bytes) -> bool:
    """Whether the site accepted the answer; raises NotRecognised when the body says neither."""
    doc = _unwrap(load_json(body))
    if not isinstance(doc, dict):
        raise NotRecognised("verify body is not a JSON object")
    if isinstance(doc.get("data"), dict) and "code" not in doc and "code" in doc["data"]:
        doc = doc["data"]
    code = doc.get("code")
    if isinstance(code, str) and code.isascii() and code.isdigit():
        # Compared as text: int() refuses some isdigit() strings ("²") and any over 4300 digits.
        return code.lstrip("0") == "200"
    if isinstance(code, int) and not isinstance(code, bool):
        return code == 200
    sub = doc.get("msg_sub_code")
    if isinstance(sub, str):
        return sub == "success"
    raise NotRecognised("verify body has no code")
