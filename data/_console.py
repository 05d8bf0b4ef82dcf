"""Console output shared by every CLI: logging set-up, progress bars, summary tables.

Logging is configured only by the CLI (:func:`configure_logging`); library code just
asks ``structlog.get_logger(__name__)`` and binds context.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = [
    "Progress",
    "ProgressReporter",
    "configure_logging",
    "console",
    "print_table",
    "progress",
]

console = Console(stderr=True)


def configure_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """Configure structlog + stdlib logging for a CLI run (never call from library code).

    Parameters
    ----------
    verbosity : int
        0 = info, 1+ = debug.
    quiet : bool
        Only warnings and errors.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # faiss announces which SIMD build it loaded at INFO on every import: not news.
    logging.getLogger("faiss.loader").setLevel(max(level, logging.WARNING))
    # dp_accounting's RDP accountant warns for every order it drops as non-convergent
    # (tiny noise multipliers); the PLD figure is the headline, so only show them with -v.
    if verbosity == 0:
        logging.getLogger("absl").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class ProgressReporter:
    """A progress handle that does nothing when quiet: ``advance``, ``update``."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: float = 1) -> None:
        """Mark ``n`` more units done."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, **fields: Any) -> None:
        """Change the description or total (``description=``, ``total=``)."""
        if self._progress is not None:
            self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress(
    description: str, total: float | None = None, *, show: bool = True
) -> Iterator[ProgressReporter]:
    """A rich progress bar on stderr as a context manager; silent when ``show`` is false."""
    if not show:
        yield ProgressReporter(None, None)
        return
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if total and float(total).is_integer() else TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield ProgressReporter(bar, task)


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], out: Console | None = None
) -> None:
    """Print a summary table (to stdout by default)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(f"{v:,.4g}" if isinstance(v, float) else str(v) for v in row))
    # Piped output (make run, CI logs) is not wrapped at rich's 80-column default.
    (out or Console(width=None if sys.stdout.isatty() else 160)).print(table)
