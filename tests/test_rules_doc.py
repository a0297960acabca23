"""The rules are written into the repository (docs/rules.md) and cited from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "rules.md"
CITED = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
SOURCES = ("config", "messages", "infra", "workers")


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
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| **") or (line.startswith("| ") and "`tests/" in line)
    ]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2], row  # the legal source
        assert "tests/" in cells[-1], row


def test_code_and_readme_cite_the_rules_in_the_repository() -> None:
    """Nothing cites a document outside the repository (a clone could not read it)."""
    files = [ROOT / "README.md"] + [
        p for d in SOURCES for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".toml")
    ]
    offenders = [str(p.relative_to(ROOT)) for p in files if "DOMAIN" in p.read_text()]
    assert not offenders, offenders
    assert "docs/rules.md" in (ROOT / "README.md").read_text()
