"""What the browser examples share: the proxy's answer API as a device uses it, and trusting mitmproxy's CA.

Used by `scripts/example_playwright.py` and `scripts/example_selenium.py`; copy it beside them into a project.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

DEFAULT_CA = Path.home() / ".mitmproxy" / "mitmproxy-ca-cert.pem"
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
"""Flags for a headless Chromium in a container; --disable-quic keeps every request on TCP, through the proxy."""


def spki_hash(ca_file: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate, for Chromium's --ignore-certificate-errors-spki-list.

    mitmproxy signs every certificate it makes with its CA and hands the CA in the chain, so trusting this one
    key trusts the proxy and nothing else (unlike ignoring every certificate error).
    """
    cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class AnswerApi:
    """The proxy's HTTP API (`http://captcha.mitm/v1/...`), reached through the proxy like any other site."""

    def __init__(self, proxy: str, host: str = "captcha.mitm", token: str = "", timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = f"http://{host}/v1"
        self.timeout = timeout
        self.http = httpx.Client(proxy=proxy, headers=headers, timeout=timeout + 10, trust_env=False)

    def newest_seq(self) -> int:
        """The newest event's seq (of any client), taken before the page loads: the wait then returns the answer
        to a challenge that comes after it, never an older one."""
        r = self.http.get(f"{self.base}/events", params={"limit": 1})
        r.raise_for_status()
        events = r.json()["events"]
        return int(events[0]["seq"]) if events else 0

    def wait(self, challenge: str, after: int, query: dict[str, str]) -> dict[str, Any]:
        """The final event (solved or failed) of `challenge`, with the drag converted and its plan (`plan=1`)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            params = {**query, "after": str(after), "timeout": str(max(1, round(deadline - time.monotonic())))}
            r = self.http.get(f"{self.base}/answer/wait", params={**params, "plan": "1"})
            if r.status_code == 204:
                continue
            r.raise_for_status()
            event: dict[str, Any] = r.json()
            if event.get("challenge") == challenge:
                return event
            after = int(event["seq"])  # an answer of another challenge of ours: skip it
        raise TimeoutError(f"no answer for challenge {challenge} within {self.timeout:g} s")

    def close(self) -> None:
        self.http.close()


def straight_path(path: list[list[float]]) -> list[list[float]]:
    """What not to do: the same distance in the same time as `path`, in a straight line at constant speed."""
    total, distance = path[-1][0], path[-1][1]
    steps = [[float(t), distance * t / total, 0.0] for t in range(0, int(total), 16)]
    return [*steps, [total, distance, 0.0]]


def burst_clicks(clicks: list[list[float]]) -> list[list[float]]:
    """What not to do with an object captcha's plan: the same points, clicked all at once with no pause."""
    return [[0.0, x, y] for _, x, y in clicks]


def widget_query(mode: str, track_width: float, handle_width: float, picture_width: float) -> dict[str, str]:
    """The API's geometry for a widget as measured on screen: a rotate's slider (`track`, `handle`: the disc turns
    once over the handle's travel), a slide's picture (`width`: the piece moves with the handle, so the drag is
    in the picture's on-screen pixels), an object captcha's picture (`width`: the points to click, in its
    on-screen pixels)."""
    if mode == "whirl":
        return {"track": f"{track_width:g}", "handle": f"{handle_width:g}"}
    return {"width": f"{picture_width:g}"}
