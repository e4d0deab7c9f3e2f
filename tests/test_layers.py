"""The house's layers (ARCHITECTURE.md): each stage imports only the stages before it, the core (capture, solving,
publish) nothing of the fleet or of mitmproxy's side, and the vocabularies at the bottom nothing of the addon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADDON = Path(__file__).resolve().parent.parent / "addon"

MAY_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "addon.kinds": ("addon.",),
    "addon.option_rules": ("addon.",),
    "addon.ratelimit": ("addon.",),
    "addon.capture": ("addon.solving", "addon.publish", "addon.fleet", "addon.mitm", "addon.wiring"),
    "addon.solving": ("addon.fleet", "addon.mitm", "addon.wiring"),
    "addon.publish": ("addon.solving", "addon.fleet", "addon.mitm", "addon.wiring"),
    "addon.fleet": ("addon.mitm", "addon.wiring"),
}
"""A module (or package) and the imports it must not make: the pipeline runs capture -> solving -> publish, and
the fleet plugs into the core's seams (`solving/sharing.py`, `publish/remote.py`) from `addon/mitm/fleet.py`."""


def imports(path: Path) -> list[tuple[int, str]]:
    """Every `addon...` module a file imports (any import statement, also under TYPE_CHECKING or in a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "addon.<relative import>"))
    return [(line, name) for line, name in found if name.startswith("addon.")]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ADDON.parent).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("layer", sorted(MAY_NOT_IMPORT))
def test_no_import_runs_against_the_pipeline(layer: str) -> None:
    files = [p for p in ADDON.rglob("*.py") if module_of(p) == layer or module_of(p).startswith(layer + ".")]
    assert files, layer
    wrong = [f"{p.relative_to(ADDON.parent)}:{line} imports {name}" for p in files for line, name in imports(p)
             if name.startswith(MAY_NOT_IMPORT[layer])]
    assert wrong == []


def test_only_the_mitm_side_imports_the_fleet() -> None:
    users = {module_of(p) for p in ADDON.rglob("*.py") if not module_of(p).startswith("addon.fleet")
             and any(name.startswith("addon.fleet") for _, name in imports(p))}
    assert users == {"addon.mitm.fleet"}
