"""The deployment examples (scripts/deploy/): config.yaml loaded by a real mitmdump with its options in effect, and
the systemd unit well-formed, hardened, and starting the command README gives."""

from __future__ import annotations

import configparser
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from ruamel.yaml import YAML

from tests.conftest import tiny_manifest
from tests.kit.device import parse_challenges
from tests.kit.fake_omocaptcha import FakeOmocaptcha
from tests.kit.origin import OriginServer
from tests.kit.proxy import MitmdumpProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy"
CONFIG = DEPLOY / "config.yaml"
UNIT = DEPLOY / "captcha-proxy.service"
ETC, STATE = "/etc/captcha-proxy", "/var/lib/captcha-proxy"
KEY = "sk-deploy-4f1c9e2b7a"
USER, PASSWORD = "phone1", "correct horse"


def _until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _config() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(CONFIG.read_text())
    return data


def test_config_keeps_secrets_out() -> None:
    config = _config()
    assert "omocaptcha_key" not in config and "captcha_api_token" not in config
    assert config["omocaptcha_key_file"].startswith(ETC + "/")
    assert config["listen_host"] not in ("0.0.0.0", "::", "")
    assert str(config["proxyauth"]).startswith("@")  # a htpasswd file, not "any" or a shared user:pass


def test_config_yaml_is_loaded_by_mitmdump_and_takes_effect(tmp_path: Path) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir(mode=0o700)
    (etc / "omocaptcha.key").write_text(KEY + "\n")
    (etc / "omocaptcha.key").chmod(0o600)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (etc / "htpasswd").write_text(f"{USER}:{hashed}\n")
    text = CONFIG.read_text()
    assert ETC in text and STATE in text
    kit = tmp_path / "kit"
    tiny_manifest(kit, whirls=1, slides=0)
    with OriginServer(kit) as origin, FakeOmocaptcha(keys=(KEY,), manifests=[kit]) as fake:
        proxy = MitmdumpProcess(["addon/main.py"], origin=(origin.http_port, origin.https_port),
                                workdir=tmp_path / "mitm", options={"omocaptcha_url": fake.base_url,
                                                                    "captcha_poll_ms": 100})
        proxy.confdir.mkdir(parents=True)
        (proxy.confdir / "config.yaml").write_text(text.replace(ETC, str(etc)).replace(STATE, str(state)))
        with proxy:
            log = proxy.log_text()
            assert "invalid option" not in log and "is not an option" not in log, log
            authed = f"http://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{proxy.port}"
            with httpx.Client(proxy=proxy.proxy_url, trust_env=False, timeout=10) as anonymous:
                assert anonymous.get("http://captcha.mitm/v1/stats").status_code == 407  # proxyauth
            with httpx.Client(proxy=authed, trust_env=False, timeout=40) as device:
                r = device.get("http://captcha.mitm/v1/answer")
                assert r.status_code == 404 and r.json()["client"] == USER  # captcha_client_key: proxyauth
                get = device.get("http://verification-va.tiktok.com/captcha/get",
                                 params={"mode": "whirl", "scheme": "http"})
                (challenge,) = parse_challenges(get.json(), scheme="http")
                for url in challenge.urls().values():
                    assert device.get(url).status_code == 200
                r = device.get("http://captcha.mitm/v1/answer/wait", params={"timeout": 30})
            # Solved with the key from omocaptcha_key_file: it was in no argument and no environment variable.
            assert r.status_code == 200 and r.json()["event"] == "solved", r.text
            assert r.json()["challenge"] == challenge.id
            sidecar = state / "captcha-events.jsonl"
            _until(lambda: sidecar.exists() and '"solved"' in sidecar.read_text(), "the sidecar")
            saved = _until(lambda: list(state.glob(f"samples/*/{challenge.id}/outer.png")), "the saved sample")
            assert stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    assert KEY not in proxy.log_text() and KEY not in " ".join(proxy.command())


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_structure_and_hardening() -> None:
    unit = _unit()
    assert unit.sections() == ["Unit", "Service", "Install"]
    service = unit["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "User": "captcha-proxy", "UMask": "0077",
                       "StateDirectory": "captcha-proxy"}.items():
        assert service.get(key) == value, key
    writable = service["ReadWritePaths"].split()
    config = _config()
    for option in ("captcha_sidecar", "captcha_save_dir"):  # what the proxy writes must be writable
        assert any(config[option].startswith(path + "/") for path in writable), option
    assert not any(config["omocaptcha_key_file"].startswith(path + "/") for path in writable)
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_starts_the_command_readme_gives() -> None:
    argv = shlex.split(_unit()["Service"]["ExecStart"])
    assert Path(argv[0]).name == "uv" and Path(argv[0]).is_absolute()
    assert argv[1:] == ["run", "--no-sync", "mitmdump", "-s", "addon/main.py", "--set", f"confdir={STATE}"]
    assert _unit()["Service"]["WorkingDirectory"] == "/opt/captcha-proxy"
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert shlex.join(["uv", *argv[1:]]) in deploy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: point it at this machine's uv (or any program).
    argv0 = shlex.split(_unit()["Service"]["ExecStart"])[0]
    program = shutil.which("uv") or "/bin/true"
    unit = tmp_path / "captcha-proxy.service"
    unit.write_text(UNIT.read_text().replace(f"ExecStart={argv0} ", f"ExecStart={program} "))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output at all is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                              text=True, timeout=60)
    if security.returncode == 0 and "Overall exposure level" in security.stdout:
        level = float(security.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert level < 4.0, security.stdout[-2000:]


def test_docs_name_where_each_way_of_giving_the_key_shows_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "omocaptcha_key_file" in readme and "OMOCAPTCHA_KEY" in readme
    readme = (ROOT / "docs" / "options.md").read_text()
    assert "omocaptcha_key_file" in readme and "OMOCAPTCHA_KEY" in readme
    assert "/proc/<pid>/environ" in readme
