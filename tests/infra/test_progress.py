"""Progress bars: drawn on a terminal, nothing at all otherwise (pipes, CI, captured output)."""

from __future__ import annotations

import io

from infra import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_terminal_no_bar() -> None:
    out = io.StringIO()
    with progress.bar("seeding", 10, out) as advance:
        advance(10)
    assert advance is progress.ignore
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar() -> None:
    out = Terminal()
    with progress.bar("seeding", 10, out) as advance:
        advance(10)
    assert "seeding" in out.getvalue()
