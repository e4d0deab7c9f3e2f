"""The benchmark reports every figure, each a number (how fast is not asserted here).

The default run checks the report on the two in-process sections (seconds); the quick run of every section
(about two minutes on two cores: real mitmdump processes under load) is marked ``slow``: CI runs it after the
suite, and so should anyone about to record figures (``uv run pytest -m slow``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench import QUICK, SECTIONS, expected_keys
from tests.conftest import samples_missing
from tests.kit.synth import SAMPLES_3D

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)


# The fleet section (three mitmdumps and a redis-server, about 35 s even when quick) runs in full benchmark runs
# only; tests/test_e2e_fleet.py holds the fleet's behaviour.
QUICK_SECTIONS = tuple(name for name in SECTIONS if name != "fleet")


def run_quick(tmp_path: Path, sections: tuple[str, ...]) -> None:
    if "local" in sections and not (SAMPLES_3D / "labels.json").exists():
        samples_missing(SAMPLES_3D)  # the local section's 3d challenges are real labelled pictures
    out = tmp_path / "bench.json"
    only = [arg for name in sections for arg in ("--only", name)]
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--markdown", "--out", str(out), *only],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    figures = {f["key"]: f for f in result["figures"]}
    assert sorted(figures) == sorted(expected_keys(QUICK, sections))
    for key, figure in figures.items():
        value = figure["value"]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
        assert figure["status"] in (("ok", "MISSED") if figure["goal"] else ("info",)), (key, figure["status"])
    goals = {key for key, f in figures.items() if f["goal"]}
    assert {"flowcost.plain.mean", "memory.growth", "looplag.max", "local.n20.looplag_max",
            "local.3d.n20.looplag_max", "local.3d.n20.to_answer_p99"} & set(figures) <= goals
    assert result["settings"]["quick"] is True
    # The Markdown table carries one row per figure.
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| section")]
    assert len(rows) == len(figures)


def test_in_process_sections_report_every_figure_as_a_number(tmp_path: Path) -> None:
    run_quick(tmp_path, ("flowcost", "outlets"))


@pytest.mark.slow
def test_quick_run_reports_every_figure_as_a_number(tmp_path: Path) -> None:
    run_quick(tmp_path, QUICK_SECTIONS)
