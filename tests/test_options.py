"""The option table, the start-up check of deferred values, and the key file (addon/mitm/options.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mitmproxy import ctx, exceptions
from mitmproxy.optmanager import OptManager
from mitmproxy.test import taddons

from addon.mitm import options
from addon.mitm.options import (
    RULES,
    check_at_load,
    check_deferred,
    convert,
    guard,
    read_key_file,
    resolve_key,
    unknown_names,
    validate,
)
from addon.solving.omocaptcha_v1 import KEY
from addon.solving.plugins import KeySpec

SECRET = "sk-Z9q-very-secret"

# (option, values it accepts, values it refuses) for every option of the table.
CASES: dict[str, tuple[list[Any], list[Any]]] = {
    "omocaptcha_key": (["", "abc-123", " abc "], ["two words", "tab\tinside", "bell\x07", 5]),
    "omocaptcha_url": (["https://omocaptcha.com/api", "http://127.0.0.1:9/api/"],
                       ["", "omocaptcha.com/api", "ftp://x/", "https://", "https://a b/", 1]),
    "omocaptcha_v2_url": (["https://api.omocaptcha.com/v2"], ["api.omocaptcha.com", "http:///v2"]),
    "captcha_sidecar": (["", "events.jsonl", "/tmp/y.jsonl"], ["a\0b", 3, "/no-such-folder/y.jsonl", "/tmp"]),
    "captcha_save_dir": (["", "/var/lib/captcha"], ["x\0y", False]),
    "captcha_save_max_mb": ([1, 1024], [0, -5, 10**7, True, "100"]),
    "captcha_client_key": (["ip", "proxyauth", "header:X-Device-Id", "header: X-Device-Id"],
                           ["", "IP", "header:", "header:X Device", "header:a:b", "cookie:x", "foo"]),
    "captcha_width_view": ([1, 340, 10_000], [0, -1, 10_001, True, 340.0]),
    "captcha_poll_ms": ([1, 2000, 60_000], [0, 60_001, False]),
    "captcha_timeout": ([1, 120, 86_400], [0, -3, 86_401, True, "120"]),
    "captcha_max_jobs": ([1, 32], [0, 10_001]),
    "captcha_max_waiting": ([0, 512, 1_000_000], [-1, 1_000_001]),
    "captcha_pair_window": ([1, 30, 3600], [0, 3601]),
    "captcha_host": (["captcha.mitm", "localhost", "10.0.0.1", "a-b.example"],
                     ["", "a/b", "a b", "-x.mitm", "x.mitm:80", "https://captcha.mitm"]),
    "captcha_api_token": (["", "t0ken", "a b"], [" t0ken", "t0ken ", "new\nline", 7]),
    "captcha_hold": ([True, False], [1, 0, "true", "yes", None]),
    "captcha_get_filter": (["", "~d example.com & ~u /captcha/get", "  "], ["~d", "~nonsense x", "(~u a"]),
    "captcha_image_filter": (["", "~t image"], ["~t"]),
    "captcha_verify_filter": (["", "~m POST & ~u verify"], ["~m"]),
    "captcha_solvers": (["auto", "none", "", "Local", "local,omocaptcha", "omocaptcha-v2, local", "omocaptcha-v1"],
                        ["auto,local", "local,local", "omocaptcha,omocaptcha-v1", "magic", "local;omocaptcha", ","]),
    "captcha_cache_size": ([0, 10_000], [-1, 10**8]),
    "captcha_low_balance": (["0", "0.5", "12"], ["", "half", "-1", "nan", "inf", 0.5]),
    "captcha_adaptive": ([True, False], ["false", 0]),
    "captcha_metrics_by_client": ([False], ["no"]),
    "captcha_dashboard_challenges": ([0, 500], [-1, 10**7]),
    "captcha_dashboard_mb": ([0, 64], [-1]),
    "captcha_local_confidence": ([0, 50, 100], [-1, 101]),
    "captcha_redis_maxlen": ([0, 100_000], [-1, "x"]),
    "captcha_redis_backlog": ([1, 10_000], [0, -1]),
    "captcha_fleet_max_jobs": ([0, 8], [-1]),
    "captcha_redis_stream": (["captcha:events"], ["", "two words"]),
}


def test_every_rule_has_cases() -> None:
    assert set(CASES) | {"omocaptcha_key_file"} == set(RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_accepted_values_pass(name: str) -> None:
    for value in CASES[name][0]:
        validate(name, value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_values_name_the_option_the_value_and_what_is_accepted(name: str) -> None:
    for value in CASES[name][1]:
        with pytest.raises(exceptions.OptionsError) as e:
            validate(name, value)
        message = str(e.value)
        assert message.startswith(f"{name}="), message
        assert f": must be {RULES[name].accepted}" in message
        if name in options.SECRETS:
            assert message == f"{name}=<hidden>: must be {RULES[name].accepted}"
        else:
            assert repr(value) in message


def test_a_secret_value_never_appears() -> None:
    with pytest.raises(exceptions.OptionsError) as e:
        validate("omocaptcha_key", f"{SECRET} {SECRET}")
    assert SECRET not in str(e.value)
    assert "<hidden>" in str(e.value)


def test_names_outside_the_table_pass() -> None:
    validate("listen_port", "anything")
    validate("captcha_something_new", object())


def test_validate_updated_checks_only_what_changed() -> None:
    opts = _opts()
    opts.update(captcha_timeout=0)
    options.validate_updated(opts, {"captcha_poll_ms"})
    with pytest.raises(exceptions.OptionsError, match="captcha_timeout=0"):
        options.validate_updated(opts, {"captcha_timeout", "listen_port"})


def _set(*values: str) -> Any:
    """What mitmproxy stores for a deferred ``--set``."""
    opts = OptManager()
    opts.set(*values, defer=True)
    return next(iter(opts.deferred.values()))


def test_convert_parses_set_strings_as_mitmproxy_does() -> None:
    assert convert("captcha_timeout", _set("captcha_timeout=45"), int) == 45
    assert convert("captcha_hold", _set("captcha_hold=true"), bool) is True
    assert convert("captcha_hold", _set("captcha_hold=false"), bool) is False
    assert convert("captcha_hold", _set("captcha_hold"), bool) is True
    assert convert("captcha_hold", _set("captcha_hold=toggle"), bool, current=True) is False
    assert convert("captcha_host", _set("captcha_host=x.mitm"), str) == "x.mitm"
    assert convert("captcha_timeout", 45, int) == 45  # config.yaml gives typed values


@pytest.mark.parametrize(("spec", "expected", "message"), [
    ("captcha_timeout=abc", int, "captcha_timeout='abc': must be an integer from 1 to 86400 (seconds)"),
    ("captcha_timeout=", int, "captcha_timeout='': must be an integer from 1 to 86400 (seconds)"),
    ("captcha_hold=yes", bool, "captcha_hold='yes': must be true or false"),
    ("captcha_hold=1", bool, "captcha_hold='1': must be true or false"),
    ("captcha_hold=True", bool, "captcha_hold='True': must be true or false"),
    ("captcha_host", str, "captcha_host needs a value: --set captcha_host=VALUE, VALUE a host name such as "
                          "captcha.mitm"),
    ("captcha_new_int=x", int, "captcha_new_int='x': must be an integer"),
])
def test_convert_refuses_what_mitmproxy_could_not_parse(spec: str, expected: type, message: str) -> None:
    with pytest.raises(exceptions.OptionsError) as e:
        convert(spec.partition("=")[0], _set(spec), expected)
    assert str(e.value) == message


def test_convert_refuses_a_value_given_twice() -> None:
    opts = OptManager()
    opts.set("captcha_timeout=5", "captcha_timeout=6", defer=True)
    with pytest.raises(exceptions.OptionsError, match="captcha_timeout was given 2 times"):
        convert("captcha_timeout", opts.deferred["captcha_timeout"], int)


@pytest.mark.parametrize(("name", "raw", "expected", "message"), [
    ("captcha_hold", "yes", bool, "captcha_hold='yes': must be true or false"),
    ("captcha_timeout", "60", int, "captcha_timeout='60': must be an integer from 1 to 86400 (seconds)"),
    ("captcha_timeout", True, int, "captcha_timeout=True: must be an integer from 1 to 86400 (seconds)"),
    ("captcha_sidecar", 5, str, "captcha_sidecar=5: must be a writable file path, or \"\" for none (in quotes, in config.yaml)"),
])
def test_convert_refuses_wrongly_typed_yaml_values(name: str, raw: object, expected: type, message: str) -> None:
    with pytest.raises(exceptions.OptionsError) as e:
        convert(name, raw, expected)
    assert str(e.value) == message


def _opts() -> OptManager:
    opts = OptManager()
    opts.add_option("captcha_timeout", int, 120, "")
    opts.add_option("captcha_poll_ms", int, 2000, "")
    opts.add_option("captcha_hold", bool, False, "")
    opts.add_option("captcha_host", str, "captcha.mitm", "")
    opts.add_option("omocaptcha_key", str, "", "")
    opts.add_option("listen_port", int, 8080, "")
    return opts


def _deferred_then_registered(*specs: str, yaml: dict[str, Any] | None = None) -> OptManager:
    """As mitmdump does it: the values arrive before the script registers its options."""
    registered = _opts()
    opts = OptManager()
    opts.set(*specs, defer=True)
    opts.update_defer(**(yaml or {}))
    for name, option in registered.items():
        opts.add_option(name, option.typespec, option.default, "")
    return opts


def test_check_deferred_drops_bad_values_logs_them_and_keeps_the_good(caplog: pytest.LogCaptureFixture) -> None:
    opts = _deferred_then_registered("captcha_timeout=abc", "captcha_hold=yes", "captcha_poll_ms=50",
                                     "omocaptcha_key=two words", "captcha_host=api.test", "listen_port=x",
                                     "captcha_timeuot=5")
    with caplog.at_level(logging.ERROR):
        errors = check_deferred(opts)
    assert errors == [
        "captcha_timeout='abc': must be an integer from 1 to 86400 (seconds)",
        "captcha_hold='yes': must be true or false",
        f"omocaptcha_key=<hidden>: must be {RULES['omocaptcha_key'].accepted}",
    ]
    assert [r.getMessage() for r in caplog.records] == [f"captcha: invalid option {e}" for e in errors]
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert "two words" not in caplog.text
    # Not ours (left to mitmproxy) and unknown names stay deferred; the bad ones are gone.
    assert set(opts.deferred) == {"captcha_poll_ms", "captcha_host", "listen_port", "captcha_timeuot"}
    opts.deferred.pop("listen_port")
    opts.process_deferred()  # what mitmproxy does next: it must not raise any more
    assert (opts.captcha_poll_ms, opts.captcha_host, opts.captcha_timeout, opts.captcha_hold) == (
        50, "api.test", 120, False)


def test_check_deferred_reads_config_yaml_values() -> None:
    opts = _deferred_then_registered(yaml={"captcha_timeout": "60", "captcha_poll_ms": 300, "captcha_hold": True})
    assert check_deferred(opts) == ["captcha_timeout='60': must be an integer from 1 to 86400 (seconds)"]
    opts.process_deferred()
    assert (opts.captcha_poll_ms, opts.captcha_hold, opts.captcha_timeout) == (300, True, 120)


def test_check_deferred_applies_range_checks() -> None:
    opts = _deferred_then_registered("captcha_timeout=0", "captcha_poll_ms=60001")
    assert check_deferred(opts) == [
        "captcha_timeout=0: must be an integer from 1 to 86400 (seconds)",
        "captcha_poll_ms=60001: must be an integer from 1 to 60000 (milliseconds)",
    ]


def test_check_deferred_refuses_a_key_and_a_key_file_together(tmp_path: Path) -> None:
    opts = _deferred_then_registered("omocaptcha_key=k1", f"omocaptcha_key_file={_key_file(tmp_path, SECRET)}")
    opts.add_option("omocaptcha_key_file", str, "", "")
    assert check_deferred(opts) == ["omocaptcha_key and omocaptcha_key_file are both set: set only one"]
    assert "omocaptcha_key_file" not in opts.deferred
    alone = _deferred_then_registered("omocaptcha_key=k1", "omocaptcha_key_file=")
    alone.add_option("omocaptcha_key_file", str, "", "")
    assert check_deferred(alone) == []


def test_unknown_names_warn_with_a_suggestion(caplog: pytest.LogCaptureFixture) -> None:
    opts = _deferred_then_registered("captcha_timeuot=5", "omocaptcha_zzz=1", "somebody_else=1", "captcha_hold")
    with caplog.at_level(logging.WARNING):
        warnings = unknown_names(opts)
    assert warnings == [
        "captcha: captcha_timeuot is not an option of the captcha addon, so it is ignored; "
        "did you mean captcha_timeout?",
        "captcha: omocaptcha_zzz is not an option of the captcha addon, so it is ignored",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2


def test_the_check_at_load_does_both(caplog: pytest.LogCaptureFixture) -> None:
    opts = _deferred_then_registered("captcha_timeout=abc", "captcha_hodl=true")
    with caplog.at_level(logging.WARNING):
        check_at_load(SimpleNamespace(master=SimpleNamespace(options=opts)))
    assert "captcha_timeout='abc'" in caplog.text
    assert "captcha_hodl is not an option" in caplog.text and "did you mean captcha_hold?" in caplog.text
    assert "captcha_timeout" not in opts.deferred


def test_the_guard_refuses_a_bad_value_before_the_others_see_it() -> None:
    seen: list[int] = []

    class Guard:
        def configure(self, updated: set[str]) -> None:
            guard(updated)

    class Solving:
        def load(self, loader: Any) -> None:
            loader.add_option("captcha_timeout", int, 120, "")

        def configure(self, updated: set[str]) -> None:
            seen.append(ctx.options.captcha_timeout)

    with taddons.context() as tctx:
        tctx.master.addons.add(Guard(), Solving())
        tctx.options.update(captcha_timeout=60)
        with pytest.raises(exceptions.OptionsError, match=r"^captcha_timeout=0: must be an integer from 1 to 86400"):
            tctx.options.update(captcha_timeout=0)
        assert tctx.options.captcha_timeout == 60
    assert 0 not in seen and seen[-1] == 60


# -- the key file -------------------------------------------------------------------------------------------------


def _key_file(tmp_path: Path, content: bytes | str, mode: int = 0o600, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def test_key_file_content_stripped_is_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _key_file(tmp_path, f"  {SECRET}\r\n\n")
    with caplog.at_level(logging.WARNING):
        assert read_key_file(str(path)) == SECRET
    assert caplog.records == []


def test_key_file_path_with_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _key_file(tmp_path, SECRET)
    assert read_key_file("~/key") == SECRET


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o604, True),
                                              (0o620, True)])
def test_key_file_open_to_others_warns_without_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       mode: int, warned: bool) -> None:
    path = _key_file(tmp_path, SECRET, mode)
    with caplog.at_level(logging.WARNING):
        assert read_key_file(str(path)) == SECRET
    if warned:
        assert caplog.records[0].levelno == logging.WARNING
        assert caplog.text.count(str(path)) >= 1 and f"mode {mode:04o}" in caplog.text and "chmod 600" in caplog.text
        assert SECRET not in caplog.text
    else:
        assert caplog.records == []
    caplog.clear()
    read_key_file(str(path), warn=False)
    assert caplog.records == []


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "the file is empty"),
    (b" \n\t\n", "the file is empty"),
    (f"{SECRET}\n{SECRET}\n".encode(), "must hold the key alone, on one line"),
    (f"OMOCAPTCHA_KEY={SECRET} x".encode(), "must hold the key alone, on one line"),
    (SECRET.encode() + b"\x00", "must hold the key alone, on one line"),
    (b"\xff\xfe" + SECRET.encode(), "not UTF-8 text"),
    (SECRET.encode() * 300, "more than a key"),
])
def test_bad_key_file_names_the_path_never_the_content(tmp_path: Path, content: bytes, problem: str) -> None:
    path = _key_file(tmp_path, content)
    with pytest.raises(exceptions.OptionsError) as e:
        read_key_file(str(path))
    message = str(e.value)
    assert message.startswith(f"omocaptcha_key_file={str(path)!r}: ") and problem in message
    assert SECRET not in message and "Z9q" not in message


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(exceptions.OptionsError, match=r"omocaptcha_key_file='.*/nope': no such file$"):
        read_key_file(str(tmp_path / "nope"))


def test_key_file_that_is_a_directory_or_a_fifo(tmp_path: Path) -> None:
    with pytest.raises(exceptions.OptionsError, match="not a regular file"):
        read_key_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(exceptions.OptionsError, match="not a regular file"):  # and it did not block on the open
        read_key_file(str(fifo))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path, SECRET, 0o000)
    with pytest.raises(exceptions.OptionsError, match="cannot be read: Permission denied"):
        read_key_file(str(path))


def test_validate_checks_the_key_file(tmp_path: Path) -> None:
    validate("omocaptcha_key_file", "")
    validate("omocaptcha_key_file", str(_key_file(tmp_path, SECRET)))
    with pytest.raises(exceptions.OptionsError, match="no such file"):
        validate("omocaptcha_key_file", str(tmp_path / "missing"))


def test_resolve_key_order(tmp_path: Path) -> None:
    path = str(_key_file(tmp_path, "from-file"))
    env = {"OMOCAPTCHA_KEY": " from-env "}
    assert resolve_key(KEY, " from-option ", "", env) == options.Key("from-option", "omocaptcha_key")
    assert resolve_key(KEY, "", path, env) == options.Key("from-file", f"omocaptcha_key_file {path}")
    assert resolve_key(KEY, "", "", env) == options.Key("from-env", "OMOCAPTCHA_KEY")
    assert resolve_key(KEY, "", " ", {}) == options.Key("", "")
    with pytest.raises(exceptions.OptionsError, match="omocaptcha_key and omocaptcha_key_file are both set"):
        resolve_key(KEY, "k", path, env)
    with pytest.raises(exceptions.OptionsError, match="no such file"):
        resolve_key(KEY, "", str(tmp_path / "gone"), env)


def test_a_service_with_a_key_of_its_own_reads_its_own_option_and_variable() -> None:
    own = KeySpec("third_key", "THIRD_KEY")
    env = {"THIRD_KEY": "third-env", "OMOCAPTCHA_KEY": "omo-env"}
    assert resolve_key(own, "", "", env) == options.Key("third-env", "THIRD_KEY")
    assert resolve_key(own, "t-opt", "", env) == options.Key("t-opt", "third_key")
    assert resolve_key(KEY, "", "", env) == options.Key("omo-env", "OMOCAPTCHA_KEY")
    assert options.EXCLUSIVE == (("omocaptcha_key", "omocaptcha_key_file"),)


def test_docs_options_table_is_written_from_the_declarations() -> None:
    from scripts import options_table

    assert options_table.main(["--check"]) == 0, "run: uv run python -m scripts.options_table"


def test_every_declared_option_is_registered_once_by_its_addon() -> None:
    import re

    from addon.mitm.option_table import OPTIONS
    from addon.wiring import build_addons

    with taddons.context(*build_addons()) as tctx:
        registered = {name for name in tctx.options.keys()  # noqa: SIM118 (no __iter__)
                      if name.startswith(options.PREFIXES)}
        defaults = {name: tctx.options.default(name) for name in registered}
    assert registered == {o.name for o in OPTIONS}
    assert len(OPTIONS) == len(registered)
    assert all(defaults[o.name] == o.default for o in OPTIONS)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:captcha|omocaptcha)_[a-z0-9_]+)`", readme))
    assert named <= registered, named - registered
