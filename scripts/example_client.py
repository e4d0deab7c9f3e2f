"""An automation-side example: wait for this device's next captcha answer through the proxy and print the drag.

    uv run python scripts/example_client.py --proxy http://PROXY_HOST:8080 [--width 340] [--track 340 --handle 69]

Run it on the device (or with --client to watch another one). It walks the answers in order with
/v1/answer/wait?after=SEQ, so none is missed or read twice.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx


def drag_text(event: dict[str, Any]) -> str:
    if event["event"] == "failed":
        return f"no answer: {event['reason']} ({event.get('message', '')})"
    drag = event.get("drag")
    if event["kind"] in ("3d", "icon"):
        # Object captchas: click each point in order (with --width W, in pixels of the image shown W wide).
        points = drag["points"] if drag else event["answer"]["points"]
        width = drag["width"] if drag else event["answer"]["width_view"]
        where = ", then ".join(f"({p['x']:.0f}, {p['y']:.0f})" for p in points)
        return f"click {where} on the image shown {width:g} px wide (from its top left), then Confirm"
    if event["kind"] == "slide":
        x = drag["x"] if drag else event["answer"]["x"]
        unit = f"px on a {drag['width']:g}-px puzzle" if drag else f"px at width_view {event['answer']['width_view']}"
        return f"drag the slider {x:.1f} {unit}"
    if drag:
        travel, angle = drag["travel"], drag["angle"]
        return f"drag the slider {drag['x']:.1f} px (of {travel:g} px travel; about {angle:.0f} degrees)"
    return f"rotate answer {event['answer']['value']:g} (slider px on the 340-px widget, assumed)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxy", required=True, help="the mitmproxy address, e.g. http://192.168.1.5:8080")
    p.add_argument("--host", default="captcha.mitm", help="the addon's captcha_host")
    p.add_argument("--token", default="", help="captcha_api_token, if the proxy has one")
    p.add_argument("--client", default="", help="another device's client key (default: this device)")
    p.add_argument("--width", type=float, help="slide, 3d, icon: the width at which the image is shown")
    p.add_argument("--track", type=float, help="rotate: the slider's width")
    p.add_argument("--handle", type=float, help="rotate: the slider handle's width")
    p.add_argument("--once", action="store_true", help="stop after the first answer")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait per long poll (at most 60)")
    args = p.parse_args(argv)

    params: dict[str, Any] = {}
    if args.client:
        params["client"] = args.client
    for name in ("width", "track", "handle"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    base = f"http://{args.host}/v1"

    with httpx.Client(proxy=args.proxy, headers=headers, timeout=args.timeout + 10, trust_env=False) as http:
        newest = http.get(f"{base}/events", params={**params, "limit": 1})
        newest.raise_for_status()
        events = newest.json()["events"]
        after = events[0]["seq"] if events else 0
        print(f"waiting for answers after event {after} ...", file=sys.stderr)
        while True:
            r = http.get(f"{base}/answer/wait", params={**params, "after": after, "timeout": args.timeout})
            r.raise_for_status()
            if r.status_code == 204:
                continue
            event = r.json()
            after = event["seq"]
            print(f"{event['client']} {event['kind']} {event['challenge']}: {drag_text(event)}", flush=True)
            if args.once:
                return 0


if __name__ == "__main__":
    sys.exit(main())
