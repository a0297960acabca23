"""The rules are written into the repository (docs/rules.md) and cited from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "rules.md"
CITED = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
SOURCES = ("config", "messages", "infra", "workers", "tests", "bench", "scripts", "docs")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_rules_cite_exists() -> None:
    cited = CITED.findall(RULES.read_text())
    assert len(cited) > 50
    missing = [f"{f}::{t}" for f, t in cited if t not in _tests_in(ROOT / f)]
    assert not missing, missing


def test_the_rules_have_a_section_per_area_each_rule_with_a_source_and_a_test() -> None:
    text = RULES.read_text()
    sections = re.findall(r"^## (.+)$", text, re.MULTILINE)
    for area in (
        "Data-subject requests",
        "Deadlines",
        "Erasure and retention holds",
        "Security compromises",
        "Direct-marketing consent",
        "What is never allowed",
    ):
        assert area in sections
    rows = _rule_rows(text)
    assert len(rows) > 50
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 3, row
        assert cells[1], row  # the legal source
        assert CITED.search(cells[2]), row  # the test that proves it


def _rule_rows(text: str) -> list[str]:
    """Every row of every "| rule | source | test |" table (not the duty tables)."""
    rows: list[str] = []
    in_rules = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_rules = False
        elif line.replace(" ", "") == "|rule|source|test|":
            in_rules = True
        elif in_rules and not set(line) <= set("|- "):
            rows.append(line)
    return rows


def test_code_and_readme_cite_the_rules_in_the_repository() -> None:
    """Nothing cites a document outside the repository (a clone could not read it): not the
    code, its tests, benches and scripts, nor the README and docs."""
    files = [ROOT / "README.md"] + [
        p
        for d in SOURCES
        for p in (ROOT / d).rglob("*")
        if p.is_file() and (p.suffix in (".py", ".toml", ".md") or d == "scripts")
    ]
    this = Path(__file__).resolve()
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        if p.resolve() != this and "DOMAIN" in p.read_text(errors="replace")
    ]
    assert not offenders, offenders
    assert "docs/rules.md" in (ROOT / "README.md").read_text()
