"""The layers point one way: config -> messages -> infra -> workers (README "Architecture").

Every module's imports are read with ``ast`` (imports inside functions included) and each
one that points from a lower layer to a higher one fails the test, named by file and line.
``tests`` and ``bench`` sit above everything; ``bench`` must not import ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("config", "messages", "infra", "workers")


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parts[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            top = package if node.level else (node.module or "").split(".")[0]
            found.append((node.lineno, top))
    return found


def violations(package: str, forbidden: set[str], root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {top}"
        for path in sorted((root / package).rglob("*.py"))
        for line, top in imports(path, root)
        if top in forbidden
    ]


def above(package: str) -> set[str]:
    return set(LAYERS[LAYERS.index(package) + 1 :])


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down_the_layers(package: str) -> None:
    assert violations(package, above(package)) == []


def test_bench_imports_no_tests() -> None:
    assert violations("bench", {"tests"}) == []


def test_the_check_finds_a_wrong_import(tmp_path: Path) -> None:
    """A wrong import at module level, inside a function, or relative, is found."""
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "probe.py").write_text(
        "import json\nfrom workers import registry\n\n\ndef f():\n    import workers.dsr\n"
    )
    assert violations("infra", above("infra"), tmp_path) == [
        "infra/probe.py:2 imports workers",
        "infra/probe.py:6 imports workers",
    ]
