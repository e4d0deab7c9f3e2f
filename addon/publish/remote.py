"""The seam between the HTTP API and answers kept by other proxies (fleet mode plugs in here).

``addon/fleet/reader.py`` implements it on the fleet's Redis stream; the API asks it only about clients its own
board has never seen. Events come back as the JSON objects the other proxy published.
"""

from __future__ import annotations

from typing import Any, Protocol

Cursor = int | str
"""Where a walk through a client's answers resumes: a seq of that client's proxy run, or a stream entry id."""


class AnswersUnreachable(Exception):
    """The store of the other proxies' answers did not answer (the API says 503, and the client retries)."""


class RemoteAnswers(Protocol):
    """Every method raises ``AnswersUnreachable`` when the store does not answer."""

    async def latest_final(self, client: str) -> dict[str, Any] | None: ...

    async def wait_final(self, client: str, timeout: float, after: Cursor | None = None) -> dict[str, Any] | None: ...

    async def newest_events(self, limit: int = 50, client: str | None = None) -> list[dict[str, Any]]: ...

    async def fleet_stats(self, window_s: float = 60.0) -> dict[str, Any]: ...
