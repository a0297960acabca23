"""Progress bars for long commands (seed, dead-letter replay/export/import, migrations).

Drawn with rich on standard error, and only when standard error is a terminal: a
script, a pipe or CI gets nothing (no control characters in captured output), and
standard output stays the command's own. ``bar`` yields a callable that takes how many
steps were done; the total may be unknown (None).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[int], None]


def ignore(_steps: int) -> None:
    """The no-op ``Advance``."""
    return None


@contextmanager
def bar(description: str, total: int | None, stream: TextIO | None = None) -> Iterator[Advance]:
    """A bar on ``stream`` (standard error) if it is a terminal, else a no-op."""
    out = stream or sys.stderr
    if not out.isatty():
        yield ignore
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=out),
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda steps: progress.advance(task, steps)
