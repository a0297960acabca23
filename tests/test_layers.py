"""The layers point one way: config -> messages -> infra -> workers (README "Architecture").

Every module's imports are read with ``ast`` (imports inside functions and under
``TYPE_CHECKING`` included, relative ones resolved to their package) and each one that
points from a lower layer to a higher one fails the test, named by file and line.
``tests`` and ``bench`` sit above everything; ``bench`` must not import ``tests``, and a
test imports shared helpers from a support module, never from another test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("config", "messages", "infra", "workers")
#: Above every layer: nothing in the four packages may import them.
TOP = ("tests", "bench")


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


def modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def violations(package: str, forbidden: set[str], root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {top}"
        for path in modules(package, root)
        for line, top in imports(path, root)
        if top in forbidden
    ]


def above(package: str) -> set[str]:
    return {*LAYERS[LAYERS.index(package) + 1 :], *TOP}


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down_the_layers(package: str) -> None:
    assert len(modules(package)) > 1  # the walk sees the package's modules
    assert violations(package, above(package)) == []


def test_bench_imports_no_tests() -> None:
    assert modules("bench")
    assert violations("bench", {"tests"}) == []


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every module or name an import brings in."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, f"{node.module or ''}.{a.name}") for a in node.names]
    return found


def test_tests_import_no_test_module() -> None:
    """Shared helpers live in support modules (tests/support, or a folder's support.py)."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules("tests")
        for line, name in imported_names(path)
        if any(part.startswith("test_") for part in name.split("."))
    ]
    assert found == []


def test_the_check_finds_a_wrong_import(tmp_path: Path) -> None:
    """A wrong import at module level, inside a function, under TYPE_CHECKING, or of the
    tests is found; a relative import resolves to its own package."""
    (tmp_path / "infra" / "runtime").mkdir(parents=True)
    probe = tmp_path / "infra" / "runtime" / "probe.py"
    probe.write_text(
        "import json\n"
        "from workers import registry\n"
        "from typing import TYPE_CHECKING\n"
        "from .. import rabbit\n"
        "from .outbox import OutboxRelay\n"
        "if TYPE_CHECKING:\n"
        "    from workers.dsr import DsrWorker\n"
        "\n"
        "def f():\n"
        "    import workers.dsr\n"
        "    from tests.support import helpers\n"
    )
    assert imports(probe, tmp_path)[3:5] == [(4, "infra"), (5, "infra")]
    assert violations("infra", above("infra"), tmp_path) == [
        "infra/runtime/probe.py:2 imports workers",
        "infra/runtime/probe.py:7 imports workers",
        "infra/runtime/probe.py:10 imports workers",
        "infra/runtime/probe.py:11 imports tests",
    ]
