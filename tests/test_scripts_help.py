"""Every runnable script prints its usage with --help and exits 0; scripts.try_it runs the test kit end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import try_it

ROOT = Path(__file__).resolve().parent.parent
MAIN_BLOCK = 'if __name__ == "__main__":'
NOT_RUNNABLE = {
    "scripts/__init__.py": "package marker",
    "tests/kit/__init__.py": "package marker",
    "scripts/bench_looplag.py": "a mitmproxy script (-s), loaded by the benchmark's mitmdump",
    "tests/kit/redirect.py": "a mitmproxy script (-s), loaded by the test kit's mitmdump",
    "tests/kit/proxy.py": "a library: MitmdumpProcess",
    "tests/kit/edata_codec.py": "a library: the edata envelope",
    "tests/kit/e2e.py": "a library: the end-to-end tests' shared pieces",
    "tests/kit/redis_server.py": "a library: a real redis-server for the fleet tests",
    "tests/kit/upstream.py": "a library: the recording upstream proxy of the proxy-mode tests",
    "tests/kit/fake_calls.py": "a library: how v1 and v2 of the fake write the same call, for its tests",
    "scripts/answer_api.py": "a library: what the browser examples share",
}


def _modules() -> tuple[list[str], list[str]]:
    runnable, unaccounted = [], []
    for path in sorted([*ROOT.glob("scripts/**/*.py"), *ROOT.glob("tests/kit/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if MAIN_BLOCK in path.read_text(encoding="utf-8"):
            runnable.append(rel.removesuffix(".py").replace("/", "."))
        elif rel not in NOT_RUNNABLE:
            unaccounted.append(rel)
    return runnable, unaccounted


def test_every_script_is_runnable_or_known_not_to_be() -> None:
    runnable, unaccounted = _modules()
    assert unaccounted == [], "give these a main() with argparse, or list them in NOT_RUNNABLE with the reason"
    assert {"scripts.try_it", "tests.kit.device", "tests.kit.origin", "tests.kit.synth"} <= set(
        runnable)


def test_every_runnable_script_prints_usage_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Each script's main(["--help"]) in this process (the imports are shared, so this costs one import of each);
    one of them also as a process, as a user starts it."""
    import importlib

    runnable, _ = _modules()
    for module in runnable:
        main = importlib.import_module(module).main
        with pytest.raises(SystemExit) as stopped:
            main(["--help"])
        out = capsys.readouterr().out
        assert stopped.value.code in (0, None), module
        assert out.startswith("usage: "), (module, out[:300])
        assert "--help" in out, module
    done = subprocess.run([sys.executable, "-m", "scripts.options_table", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: "), done.stderr[-2000:]


def test_try_it_drives_challenges_through_the_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    assert try_it.main(["--with-key", "--count", "2"]) == 0
    out = capsys.readouterr().out
    answers = [line for line in out.splitlines() if line.startswith(("whirl", "slide"))]
    assert len(answers) == 2, out
    assert answers[0].startswith("whirl") and answers[1].startswith("slide"), out
    assert all("solved by omocaptcha" in line and "the site said pass" in line for line in answers), out
    assert "stopped everything" in out
