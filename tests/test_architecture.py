"""The package's structure is a contract: layers (import-linter), no import circle, small files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "topaz_lightning"
#: files allowed over MAX_LINES, each with the reason (docs/architecture.md repeats it)
MAX_LINES = 450
LONG_FILES: dict[str, str] = {}


def test_import_layers_and_independence_contracts_are_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / ".importlinter")) == 0


def test_no_import_circle_between_modules():
    import grimp

    graph = grimp.build_graph("topaz_lightning")
    circles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.startswith(importer + ".") or importer.startswith(imported + "."):
                continue  # a package and its own submodules (re-exports in __init__)
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain:
                circles.append(" -> ".join([importer, *chain]))
    assert circles == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_files_stay_small(path):
    name = str(path.relative_to(ROOT))
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if name in LONG_FILES:
        return
    assert lines <= MAX_LINES, f"{name} has {lines} lines (split it, or argue it in LONG_FILES)"
