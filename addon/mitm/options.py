"""Checking the addon's option values, and reading the solving key from a file.

Why the start-up check exists: mitmproxy keeps a ``--set name=value`` (or a ``config.yaml`` entry) for an option no
addon has registered yet as "deferred", and applies it in ``AddonManager.register`` right after the script's
``load()`` hooks ran. A value it cannot parse there raises ``OptionsError`` out of the script loader's reload task,
which nobody awaits: no message at any verbosity, the script's addons never join the chain, and the proxy runs on
without them. So the last addon's ``load()`` (``check_at_load`` below) converts and validates the deferred values of
this addon's options itself first. A bad one is removed from the deferred set (the option keeps its default) and
logged as an ERROR; mitmproxy's ``ErrorCheck`` addon then stops mitmdump/mitmweb/mitmproxy at start-up with exit
code 1, as a bad built-in option does. Were the script loaded after start-up (when ``ErrorCheck`` no longer
watches), the addon would run with that option on its default after the ERROR line.
"""

from __future__ import annotations

import difflib
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.optmanager import OptManager, _UnconvertedStrings

from addon.mitm.option_table import OPTIONS, RULES, SOLVER_KEYS
from addon.solving.plugins import KeySpec

logger = logging.getLogger(__name__)

PREFIXES = tuple(dict.fromkeys(["captcha_", *(o.name.split("_", 1)[0] + "_" for o in OPTIONS)]))
"""Option names the addon owns (`captcha_`, and each solver's own, `omocaptcha_`); a deferred name with one of these
prefixes that nobody registered is a typo."""
SECRETS = frozenset(o.name for o in OPTIONS if o.secret)
"""Options whose value never appears in a message."""
KEY_FILE_MAX = 4096
_UNSAFE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO


EXCLUSIVE = tuple((k.option, k.file_option) for k in SOLVER_KEYS if k.file_option is not None)
"""Options that must not both be set (checked on the values given at start-up; configure checks later changes)."""

_TYPE_WORDS = {bool: "true or false", int: "an integer", str: "text"}


def shown(name: str, value: object) -> str:
    """``name=value`` for a message; a secret's value is never shown."""
    return f"{name}=<hidden>" if name in SECRETS else f"{name}={value!r}"


def _refuse(name: str, value: object, accepted: str) -> exceptions.OptionsError:
    return exceptions.OptionsError(f"{shown(name, value)}: must be {accepted}")


def validate(name: str, value: object) -> None:
    """Raise ``OptionsError("name=value: must be <what is accepted>")`` unless ``value`` suits option ``name``.

    Names the table does not know pass (mitmproxy has checked their type).
    """
    rule = RULES.get(name)
    if rule is None:
        return
    if type(value) is not rule.type:  # not isinstance: True is an int, and must not pass for a number of seconds
        raise _refuse(name, value, rule.accepted)
    if not rule.check(value):
        raise _refuse(name, value, rule.accepted)


def validate_updated(options: OptManager, updated: Iterable[str]) -> None:
    """For ``configure(updated)``: validate every updated option the table knows, with its current value."""
    for name in sorted(set(updated) & RULES.keys()):
        validate(name, getattr(options, name))


def convert(name: str, raw: object, expected: type, current: object = None) -> object:
    """A deferred value as mitmproxy would apply it: ``--set`` strings parsed, ``config.yaml`` values type-checked.

    Raises ``OptionsError`` naming the option, the value and what is accepted.
    """
    accepted = RULES[name].accepted if name in RULES else _TYPE_WORDS.get(expected, expected.__name__)
    if not isinstance(raw, _UnconvertedStrings):
        if type(raw) is not expected:
            hint = " (in quotes, in config.yaml)" if expected is str else ""
            raise _refuse(name, raw, accepted + hint)
        return raw
    if len(raw.val) > 1:
        raise exceptions.OptionsError(f"{name} was given {len(raw.val)} times: give it once")
    text = raw.val[0] if raw.val else None
    if expected is bool:
        if text in (None, "", "true"):
            return True
        if text == "false":
            return False
        if text == "toggle":
            return not current
        raise _refuse(name, text, accepted)
    if text is None:
        raise exceptions.OptionsError(f"{name} needs a value: --set {name}=VALUE, VALUE {accepted}")
    if expected is int:
        try:
            return int(text)
        except ValueError:
            raise _refuse(name, text, accepted) from None
    return text


def check_deferred(options: OptManager) -> list[str]:
    """Check the pending ``--set``/``config.yaml`` values of the addon's registered options before mitmproxy applies
    them. Each bad one is dropped (its option keeps the default) and logged as an ERROR; the messages are returned.

    Call it once every addon option has been registered: from the ``load()`` of the last addon of the script.
    """
    errors: list[str] = []
    for name, raw in list(options.deferred.items()):
        if not name.startswith(PREFIXES) or name not in options:
            continue
        current = getattr(options, name)
        try:
            value = convert(name, raw, type(options.default(name)), current)
            validate(name, value)
        except exceptions.OptionsError as e:
            del options.deferred[name]
            errors.append(str(e))
            logger.error(f"captcha: invalid option {e}")
        else:
            options.deferred[name] = value
    for first, second in EXCLUSIVE:
        if all(isinstance(options.deferred.get(n), str) and options.deferred[n].strip() for n in (first, second)):
            del options.deferred[second]
            errors.append(f"{first} and {second} are both set: set only one")
            logger.error(f"captcha: invalid options: {errors[-1]}")
    return errors


def unknown_names(options: OptManager) -> list[str]:
    """Warn about pending ``captcha_*``/``omocaptcha_*`` names no addon registered (typos); returns the warnings."""
    registered: set[str] = options.keys()  # OptManager has no __iter__
    ours = sorted(name for name in registered if name.startswith(PREFIXES))
    warnings: list[str] = []
    for name in sorted(options.deferred):
        if name.startswith(PREFIXES) and name not in options:
            close = difflib.get_close_matches(name, ours, n=1, cutoff=0.85)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"captcha: {name} is not an option of the captcha addon, so it is ignored{hint}")
            logger.warning(warnings[-1])
    return warnings


def check_at_load(loader: Any) -> None:
    """Called at the end of the LAST addon's ``load()``: every option is registered by then, and mitmproxy has not
    yet applied the ``--set`` / config.yaml values it deferred. Bad ones are refused here (mitmdump then exits 1)."""
    options: OptManager = loader.master.options
    check_deferred(options)
    unknown_names(options)


def guard(updated: set[str]) -> None:
    """Called first in the FIRST addon's ``configure()``: a bad value set later (mitmweb's options page,
    mitmproxy's ``:set``) is refused with the table's message before any other addon sees it, and mitmproxy rolls
    it back. (Two functions, not two more addon objects: mitmproxy walks every addon object for every event.)"""
    validate_updated(ctx.options, updated)


def read_key_file(path: str, *, warn: bool = True, option: str = "omocaptcha_key_file") -> str:
    """The key held in the file at ``path`` (``~`` expanded), the value of ``option``: its content, stripped.

    Raises ``OptionsError`` naming the path (never the content) when the file is missing, not a regular file,
    unreadable, too large, not UTF-8, empty, or holds more than one word. Logs a warning (unless ``warn`` is false)
    when group or others have any access to it.
    """
    full = os.path.expanduser(path)
    what = f"{option}={path!r}"
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except FileNotFoundError:
        raise exceptions.OptionsError(f"{what}: no such file") from None
    except OSError as e:
        raise exceptions.OptionsError(f"{what}: cannot be read: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise exceptions.OptionsError(f"{what}: not a regular file")
        if info.st_size > KEY_FILE_MAX:
            raise exceptions.OptionsError(f"{what}: {info.st_size} bytes, more than a key ({KEY_FILE_MAX} at most)")
        try:
            data = os.read(fd, KEY_FILE_MAX + 1)
        except OSError as e:
            raise exceptions.OptionsError(f"{what}: cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise exceptions.OptionsError(f"{what}: not UTF-8 text") from None
    if not key:
        raise exceptions.OptionsError(f"{what}: the file is empty")
    if any(c.isspace() for c in key) or not key.isprintable():
        raise exceptions.OptionsError(f"{what}: must hold the key alone, on one line")
    if warn and info.st_mode & _UNSAFE_MODE_BITS:
        logger.warning(f"captcha: {option} {path!r} is open to group or others "
                       f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {full}")
    return key


@dataclass(frozen=True, slots=True)
class Key:
    value: str = field(repr=False)
    source: str = ""
    """Where it came from, for log lines: "omocaptcha_key", "omocaptcha_key_file /path", "OMOCAPTCHA_KEY" or ""."""


def resolve_key(spec: KeySpec, key: str, key_file: str, environ: Mapping[str, str]) -> Key:
    """A paid service's key: its option (``omocaptcha_key``), else the file its file option
    (``omocaptcha_key_file``) names, else its environment variable (``OMOCAPTCHA_KEY``), else none (the services
    that need it cannot be used). Both options set is an error."""
    key, key_file = key.strip(), key_file.strip()
    if key and key_file:
        raise exceptions.OptionsError(f"{spec.option} and {spec.file_option} are both set: set only one")
    if key:
        return Key(key, spec.option)
    if key_file and spec.file_option is not None:
        return Key(read_key_file(key_file, option=spec.file_option), f"{spec.file_option} {key_file}")
    from_env = environ.get(spec.env, "").strip()
    return Key(from_env, spec.env) if from_env else Key("", "")
