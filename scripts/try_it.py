"""Try the addon in one command, with no phone and no network: the test kit end to end.

    uv run python -m scripts.try_it [--with-key] [--count N]

Makes synthetic challenges, serves them from a local test origin, optionally starts the fake solving service,
starts ``mitmdump -s addon/main.py`` (with the test kit's redirect script, so real host names reach the local
origin and nothing leaves loopback), drives the challenges through the proxy like a phone (the get, the images,
the answer from ``http://captcha.mitm/v1/answer/wait``, the verify), prints each answer, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from tests.kit import synth
from tests.kit.device import Device, describe, drive
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpError, MitmdumpProcess

KEY = "try-it-key"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.try_it",
        description="Start the test origin, (with --with-key) the fake omocaptcha service and mitmdump with the "
                    "addon, drive a few whirl and slide challenges through the proxy like a phone, print each "
                    "answer, and stop everything. Loopback only.",
        epilog="Exit status: 0 when every challenge got a final answer, 2 otherwise, 1 when something did not "
               "start.")
    p.add_argument("--with-key", action="store_true",
                   help="also start the fake omocaptcha service and give mitmdump its key (in OMOCAPTCHA_KEY)")
    p.add_argument("--count", type=int, default=4, help="challenges to drive, whirl and slide in turn (default 4)")
    p.add_argument("--scheme", choices=("https", "http"), default="https", help="default: %(default)s")
    p.add_argument("--wait", type=float,
                   help="seconds to wait per answer, at most 60 (default: 30 with --with-key, else 5)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="post each answer to the test site and show its verdict (default: yes)")
    p.add_argument("--keep", type=Path, help="keep the work files (challenges, mitmdump log, events) in this folder")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra mitmdump option (repeatable)")
    args = p.parse_args(argv)
    if args.wait is None:
        args.wait = 30.0 if args.with_key else 5.0
    if args.count < 1 or not 0 < args.wait <= 60:
        p.error("--count must be at least 1 and --wait from 0 to 60")
    extra = dict(o.partition("=")[::2] for o in args.options)
    work = args.keep or Path(tempfile.mkdtemp(prefix="captcha-try-it-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work, extra)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, extra: dict[str, str]) -> int:
    per_mode = (args.count + 1) // 2
    synth.generate(work / "kit", seed=1, count=per_mode)
    print(f"made {per_mode} whirl and {per_mode} slide challenges in {work / 'kit'}", flush=True)
    with OriginServer(work / "kit") as origin:
        print(f"test origin on 127.0.0.1:{origin.http_port} (http) and :{origin.https_port} (https)", flush=True)
        options: dict[str, str | int] = {"captcha_sidecar": str(work / "events.jsonl")}
        env: dict[str, str] = {}
        fake = FakeOmocaptcha(keys=(KEY,), manifests=[work / "kit"], solve_seconds=0.3) if args.with_key else None
        try:
            if fake is not None:
                fake.start()
                options.update(omocaptcha_url=fake.base_url, captcha_poll_ms=200)
                env["OMOCAPTCHA_KEY"] = KEY  # the environment, not --set: keys stay out of `ps`
                print(f"fake omocaptcha at {fake.base_url}", flush=True)
            options.update(extra)
            proxy = MitmdumpProcess(["addon/main.py"], origin=(origin.http_port, origin.https_port),
                                    options=options, workdir=work / "mitm", env=env)
            try:
                proxy.start()
            except MitmdumpError as e:
                print(f"mitmdump did not start: {e}", file=sys.stderr)
                return 1
            try:
                print(f"mitmdump -s addon/main.py listening at {proxy.proxy_url}; its log: {proxy.log_path}",
                      flush=True)
                results = asyncio.run(_drive(proxy, args))
            finally:
                proxy.stop()
        finally:
            if fake is not None:
                fake.stop()
    for result in results:
        print(describe(result, args.wait), flush=True)
    where = f"kept in {work}" if args.keep else "removed (--keep DIR keeps them)"
    print(f"stopped everything; events, log and challenges {where}", flush=True)
    return 0 if all(r["event"] is not None for r in results) else 2


async def _drive(proxy: MitmdumpProcess, args: argparse.Namespace) -> list[dict[str, object]]:
    modes = [("whirl", "slide")[i % 2] for i in range(args.count)]
    async with Device("127.0.0.1", proxy.proxy_url, proxy.ca_path, timeout=args.wait + 15) as device:
        return await drive(device, modes, scheme=args.scheme, wait=args.wait, verify=args.verify)


if __name__ == "__main__":
    raise SystemExit(main())
