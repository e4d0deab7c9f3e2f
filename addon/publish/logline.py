"""One log line per challenge milestone, on mitmproxy's console."""

from __future__ import annotations

import logging

from addon.publish import events as ev

logger = logging.getLogger(__name__)


def log_event(event: ev.Event) -> None:
    if isinstance(event, ev.Captured):
        roles = ", ".join(f"{role} {i.width}x{i.height} {i.format}" for role, i in event.images.items())
        logger.info(f"captcha: captured {event.kind} {event.challenge} for {event.client} "
                    f"({roles}; from {event.source})")
    elif isinstance(event, ev.Solved):
        how = f" ({event.cached_from or 'cached'}{f' of {event.same_as}' if event.same_as else ''})" \
            if event.cached else ""
        sure = f", confidence {event.confidence:.2f}" if event.confidence is not None else ""
        logger.info(f"captcha: solved {event.challenge} for {event.client} by {event.service}{how}: {event.result} "
                    f"in {event.elapsed_ms} ms{sure}")
    elif isinstance(event, ev.Failed):
        logger.warning(f"captcha: {event.challenge} for {event.client} failed: {event.reason} ({event.message})")
    elif isinstance(event, ev.Expired):
        logger.info(f"captcha: parts of {event.challenge} for {event.client} expired "
                    f"({', '.join(event.images) or 'no images'}; {event.reason})")
    elif isinstance(event, ev.Verified):
        verdict = "accepted" if event.accepted else "rejected"
        by = f" ({event.service}{', cached' if event.cached else ''})" if event.service else ""
        logger.info(f"captcha: the site {verdict} the answer to {event.challenge} for {event.client}{by}")
