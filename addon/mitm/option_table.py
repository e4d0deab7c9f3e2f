"""Every option of the addon, declared once: name, type, default, help, the rule its values must follow, and the
text of docs/options.md. Each addon object's ``load()`` registers its own (``declare``), the start-up and run-time
checks read the rules (``addon/mitm/options.py``), and ``scripts/options_table.py`` writes the table of
docs/options.md from here (a test keeps the two equal)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from mitmproxy import flowfilter

from addon.option_rules import KEY
from addon.option_rules import AddonName as AddonName
from addon.option_rules import Option as Option
from addon.option_rules import Rule as Rule
from addon.option_rules import int_range as _int_range
from addon.publish.dashboard_api import DEFAULT_CHALLENGES, DEFAULT_MB
from addon.solving import chain
from addon.solving.registry import SPECS

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_STREAM_NAME = re.compile(r"^\S{1,200}$")
SOLVER_NAMES = tuple(name for spec in SPECS for name in spec.names())
"""Every name captcha_solvers takes (addon/solving/registry.py); case and spaces do not matter."""
SOLVER_OPTIONS: tuple[Option, ...] = tuple(o for spec in SPECS for o in spec.options)
"""The solvers' own options (their base URLs), from their specs."""
SOLVER_KEYS = tuple(dict.fromkeys(spec.key for spec in SPECS if spec.key is not None))
"""The paid services' keys, each once (v1 and v2 share one)."""


def _client_key(value: str) -> bool:
    if value in ("ip", "proxyauth"):
        return True
    name = value.removeprefix("header:").strip()
    return value.startswith("header:") and _HEADER_NAME.match(name) is not None


def _filter(value: str) -> bool:
    if not value.strip():
        return True
    try:
        flowfilter.parse(value)
    except ValueError:
        return False
    return True


def _usd(value: str) -> bool:
    try:
        amount = float(value)
    except ValueError:
        return False
    return math.isfinite(amount) and amount >= 0


def _token(value: str) -> bool:
    # The token travels in an Authorization header, whose value HTTP parsers strip: spaces around it never match.
    return value == value.strip() and value.isprintable()


def _writable_file(value: str) -> bool:
    if "\0" in value:
        return False
    if not value:
        return True
    path = os.path.expanduser(value)
    folder = os.path.dirname(path) or "."
    if os.path.exists(path):
        return not os.path.isdir(path) and os.access(path, os.W_OK)
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def _key_file(value: str) -> bool:
    from addon.mitm.options import read_key_file  # the reader lives with the key's other rules

    if value:
        read_key_file(value, warn=False)  # raises OptionsError naming the path and what is wrong with it
    return True


OPTIONS: tuple[Option, ...] = (
    Option(
        'captcha_host', str, 'captcha.mitm', 'api',
        help='Host name the proxy answers the captcha HTTP API for (over HTTP and HTTPS).',
        rule=Rule(str, "a host name such as captcha.mitm", lambda v: _HOST_NAME.match(v.strip()) is not None),
        doc='the host name the proxy answers the HTTP API and the dashboard for',
    ),
    Option(
        'captcha_api_token', str, '', 'api', secret=True,
        help="When set, the captcha HTTP API wants 'Authorization: Bearer <token>'.",
        rule=Rule(str, "printable, without spaces around it (or empty)", _token),
        doc=(
            "when set, the HTTP API, the event stream, `/metrics` and the dashboard's data want `Authorization: "
            'Bearer <token>` (the dashboard page asks for it once)'
        ),
    ),
    Option(
        'captcha_client_key', str, 'ip', 'capture',
        help='How clients are told apart: ip, header:NAME (e.g. a device id header) or proxyauth.',
        rule=Rule(str, "ip, proxyauth or header:NAME (NAME an HTTP header name)", _client_key),
        doc='`ip`, `header:NAME` or `proxyauth` (see README.md, "Pointing a device at the proxy")',
    ),
    Option(
        'captcha_pair_window', int, 30, 'capture',
        help='Seconds the parts of one challenge may arrive apart.',
        rule=_int_range(1, 3_600, "seconds"),
        doc=(
            'seconds the parts of one challenge may arrive apart; parts that never make a whole challenge end as '
            '`expired`'
        ),
    ),
    Option(
        'captcha_hold', bool, False, 'capture',
        help=(
            'Hold the response that completes a challenge until its answer is final and add the X-Captcha-Answer '
            'header to it.'
        ),
        rule=Rule(bool, "true or false"),
        doc='hold the response that completes a challenge until its answer is final, then add `X-Captcha-Answer`',
    ),
    Option(
        'captcha_get_filter', str, '', 'capture',
        help='Filter expression for captcha get responses, replacing the built-in host/path rules.',
        rule=Rule(str, 'a mitmproxy filter expression (e.g. "~d example.com & ~u /captcha/get"), '
                       'or "" for the built-in rules', _filter),
    ),
    Option(
        'captcha_image_filter', str, '', 'capture',
        help=(
            'Filter expression for captcha images, replacing the built-in CDN host rules (images a get announced are '
            'always recognised).'
        ),
        rule=Rule(str, 'a mitmproxy filter expression, or "" for the built-in rules', _filter),
    ),
    Option(
        'captcha_verify_filter', str, '', 'capture',
        help='Filter expression for captcha verify responses, replacing the built-in host/path rules.',
        rule=Rule(str, 'a mitmproxy filter expression, or "" for the built-in rules', _filter),
    ),
    Option(
        'omocaptcha_key', str, '', 'solving', secret=True,
        help=(
            'omocaptcha API key; empty: the OMOCAPTCHA_KEY environment variable. Prefer the environment variable or '
            'omocaptcha_key_file: --set puts the key in ps and shell history.'
        ),
        rule=KEY,
        shown_default='`""`, then `omocaptcha_key_file`, then `$OMOCAPTCHA_KEY`',
        doc=(
            "the paid services' key (v1 and v2 share it). Checked with the free balance call at start-up (the balance"
            ' is logged); a refused key gives one error line and its challenges fail as `invalid_key` or go to the '
            'next solver (it is checked again at most every 30 s while challenges arrive, so a key that works again '
            'resumes by itself)'
        ),
    ),
    Option(
        'omocaptcha_key_file', str, '', 'solving',
        help=(
            'File holding the omocaptcha key alone (chmod 600): keeps the key out of the command line, the '
            'environment and config files. Only one of omocaptcha_key and this.'
        ),
        rule=Rule(str, "the path of a readable file holding the key (or empty)", _key_file),
        doc='a file holding the key alone (`chmod 600`); see "Giving the solving key" above',
    ),
    *SOLVER_OPTIONS,
    Option(
        'captcha_solvers', str, 'auto', 'solving',
        help=(
            f'Solvers tried in order, comma separated: {chain.listed()}; {chain.auto_text()}; none = capture only.'
        ),
        rule=Rule(str, f"auto, none, or a comma-separated list of {chain.listed()}", chain.valid_solvers),
        doc=(
            f'solvers tried in order, comma separated: {chain.listed(code=True)}; {chain.auto_text(code=True)}; '
            '`none` = capture only (see [solving.md](solving.md))'
        ),
    ),
    Option(
        'captcha_local_confidence', int, 50, 'solving',
        help=(
            '0-100: a local answer less sure than this goes to the next solver of captcha_solvers (with none left it '
            'is published with its confidence).'
        ),
        rule=_int_range(0, 100, "percent"),
        doc=(
            "0 to 100: a local answer whose confidence (times 100) is below this goes to the next solver of the "
            "chain; with none left it is published with its `confidence`"
        ),
    ),
    Option(
        'captcha_width_view', int, 340, 'solving',
        help='Width at which the slide puzzle is shown (width_view).',
        rule=_int_range(1, 10_000, "pixels"),
        doc='the width at which your page shows the slide puzzle, sent to the service as `width_view`',
    ),
    Option(
        'captcha_poll_ms', int, 2000, 'solving',
        help='Pause before the first and between result polls, in ms.',
        rule=_int_range(1, 60_000, "milliseconds"),
        doc='pause before the first result poll and between polls (the service asks for 2 s)',
    ),
    Option(
        'captcha_timeout', int, 120, 'solving',
        help='Seconds from capture to a final answer before the challenge fails with timeout.',
        rule=_int_range(1, 86_400, "seconds"),
        doc=(
            'seconds from `captured` to a final answer, waiting for a job slot included, before the challenge fails '
            'with `timeout`'
        ),
    ),
    Option(
        'captcha_max_jobs', int, 32, 'solving',
        help='Solving jobs in flight at once; more wait their turn.',
        rule=_int_range(1, 10_000, "jobs"),
        doc='solving jobs in flight at once; more wait their turn, in order',
    ),
    Option(
        'captcha_max_waiting', int, 512, 'solving',
        help='Challenges that may wait for a job slot; beyond it they fail at once as overloaded.',
        rule=_int_range(0, 1_000_000, "challenges"),
        doc=(
            'challenges that may wait for a job slot beyond those; a challenge past this fails at once as '
            '`overloaded`'
        ),
    ),
    Option(
        'captcha_cache_size', int, 10000, 'solving',
        help='Answers kept by image set, so the same images are never paid for twice; 0 turns it off.',
        rule=_int_range(0, 10_000_000, "answers; 0 turns the cache off"),
        doc=(
            'answers kept by image set (6 h at most), so the same images are never paid for twice; `0` turns the '
            'cache off (a repeat that arrives while its images are being solved still waits for that answer)'
        ),
    ),
    Option(
        'captcha_low_balance', str, '0.5', 'solving',
        help="Log a warning when a paid service's balance (USD) falls under this.",
        rule=Rule(str, "an amount of US dollars, 0 or more (e.g. 0.5)", _usd),
        doc="a warning line when a paid service's balance (USD, read at start and every 5 minutes) falls under this",
    ),
    Option(
        'captcha_adaptive', bool, False, 'solving',
        help=(
            'Move a solver whose answers the site accepted for under half of its last 50 verdicts of a kind behind '
            'the next solver for that kind.'
        ),
        rule=Rule(bool, "true or false"),
        doc=(
            'move a solver the site accepted for under half of its last 50 verdicts of a kind behind the next solver,'
            ' for that kind (logged)'
        ),
    ),
    Option(
        'captcha_sidecar', str, 'captcha-events.jsonl', 'events',
        help='JSON Lines file every captcha event is appended to (created 0600); "" turns it off.',
        rule=Rule(str, 'a writable file path, or "" for none', _writable_file),
        doc=(
            'JSON Lines file every event is appended to, created with mode 0600; `""` turns it off. A path that '
            'cannot be written is refused at start-up'
        ),
    ),
    Option(
        'captcha_save_dir', str, '', 'events',
        help=(
            "Folder where each captured challenge's images and events are kept, one folder per challenge (0700, files"
            ' 0600), labelled once the site accepts the answer; "" turns it off.'
        ),
        rule=Rule(str, 'a directory path, or "" for none', lambda v: "\0" not in v),
        doc=(
            "a folder where each captured challenge's images and events are kept (see "
            '[api.md](api.md#collecting-samples-captcha_save_dir)); `""` turns it off'
        ),
    ),
    Option(
        'captcha_save_max_mb', int, 1024, 'events',
        help='Bound of captcha_save_dir in megabytes; the oldest challenges are removed first.',
        rule=_int_range(1, 1_000_000, "megabytes"),
        doc='the size bound of `captcha_save_dir`; the oldest challenges go first',
    ),
    Option(
        'captcha_metrics_by_client', bool, False, 'events',
        help='Label the /metrics counters by client too (one series per device: mind the cardinality).',
        rule=Rule(bool, "true or false"),
        doc='label the `/metrics` counters by client too (one series per device: mind the cardinality)',
    ),
    Option(
        'captcha_dashboard_challenges', int, DEFAULT_CHALLENGES, 'events',
        help='Challenges whose images the dashboard keeps (oldest out first).',
        rule=_int_range(0, 1_000_000, "challenges"),
    ),
    Option(
        'captcha_dashboard_mb', int, DEFAULT_MB, 'events',
        help='Megabytes of images the dashboard keeps at most (oldest out first).',
        rule=_int_range(0, 1_000_000, "megabytes"),
    ),
    Option(
        'captcha_redis', str, '', 'fleet',
        help=(
            'Fleet mode: a Redis URL (redis://, rediss://, unix://); events go to a stream, answers and the cache are'
            ' shared. Env CAPTCHA_REDIS when empty.'
        ),
        shown_default='`""`, then `$CAPTCHA_REDIS`',
        doc=(
            'fleet mode: a Redis URL (`redis://host:6379/0`, `rediss://user:pass@host/0`, `unix:///run/redis.sock`); '
            'see [fleet.md](fleet.md). A bad URL, a refused password or an unknown host gives one error line and the '
            'proxy works alone'
        ),
    ),
    Option(
        'captcha_redis_stream', str, 'captcha:events', 'fleet',
        help='The stream every proxy appends to.',
        rule=Rule(str, "a stream name without spaces", lambda v: _STREAM_NAME.match(v) is not None),
        doc='the stream every proxy of the fleet appends its events to',
    ),
    Option(
        'captcha_redis_maxlen', int, 100000, 'fleet',
        help='Trim the stream to about this many entries (0: never).',
        rule=_int_range(0, 1_000_000_000, "entries; 0 never trims"),
        doc='the stream is trimmed to about this many entries; `0` never trims',
    ),
    Option(
        'captcha_redis_backlog', int, 10000, 'fleet',
        help=(
            'Events held in memory while Redis is unreachable; the oldest beyond it are dropped (counted in /v1/stats'
            ' as redis_overflowed; they stay in the sidecar).'
        ),
        rule=_int_range(1, 10_000_000, "events"),
        doc=(
            'events held in memory, in order, while Redis is unreachable; beyond it the oldest are dropped and '
            'counted (`redis_overflowed` in `/v1/stats`; they stay in the sidecar)'
        ),
    ),
    Option(
        'captcha_fleet_max_jobs', int, 0, 'fleet',
        help='Paid solving jobs in flight across the fleet (0: no cap).',
        rule=_int_range(0, 100_000, "jobs; 0 means no cap"),
        doc='paid jobs in flight across the whole fleet; `0` is no cap',
    ),
)

BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}
RULES: Mapping[str, Rule] = {o.name: o.rule for o in OPTIONS if o.rule is not None}


def declare(loader: Any, addon: AddonName) -> None:
    """For an addon object's ``load()``: register the options it owns."""
    for o in OPTIONS:
        if o.addon == addon:
            loader.add_option(o.name, o.type, o.default, o.help)


def markdown_table() -> str:
    """The options table of docs/options.md."""
    def shown(o: Option) -> str:
        if o.shown_default is not None:
            return o.shown_default
        if o.type is bool:
            return f"`{str(o.default).lower()}`"
        return f"`{o.default}`" if o.default != "" else '`""`'

    rows = [f"| `{o.name}` | {shown(o)} | {o.doc or o.help} |" for o in OPTIONS]
    return "\n".join(["| option | default | meaning |", "|---|---|---|", *rows]) + "\n"
