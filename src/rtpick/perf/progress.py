"""Progress of a multi-configuration run: a rich progress bar on a terminal, nothing extra elsewhere.

`run_bench` reports four events to a `Progress`: the plan (how many jobs), a job's start, its end, and jobs an
offline sweep skips when it stops early (so the bar still ends full). Off a terminal (CI logs, pipes) the
bench command keeps printing plain lines instead, because a redrawn bar turns a log into noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol


class Progress(Protocol):
    """What `run_bench` tells about its progress."""

    def plan(self, total: int) -> None: ...

    def start(self, what: str) -> None: ...

    def done(self, record: Any) -> None: ...

    def skip(self, count: int, reason: str) -> None: ...


class BarProgress:
    """One rich bar over all jobs (configuration x batch): done / planned, elapsed, estimated time left.

    Lines printed through the same console while the bar is live appear above it, so per-configuration results
    still scroll by as they finish.
    """

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task: Any = None
        self.total = 0

    def plan(self, total: int) -> None:
        self.total = total
        self.task = self.bar.add_task("planned", total=total)

    def start(self, what: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, description=f"measuring {what}")

    def done(self, record: Any) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, description=f"finished {record.label}: {record.status}")

    def skip(self, count: int, reason: str) -> None:
        if self.task is not None and count > 0:
            self.total -= count
            self.bar.update(self.task, total=self.total, description=f"sweep stopped: {reason}")


class Silent:
    """No display: the caller's own plain lines say what is happening."""

    def plan(self, total: int) -> None:
        pass

    def start(self, what: str) -> None:
        pass

    def done(self, record: Any) -> None:
        pass

    def skip(self, count: int, reason: str) -> None:
        pass


@contextlib.contextmanager
def for_console(console: Any) -> Iterator[Progress]:
    """A live bar when `console` is a terminal, `Silent` otherwise; the bar stops when the block ends."""
    if not console.is_terminal:
        yield Silent()
        return
    progress = BarProgress(console)
    with progress.bar:
        yield progress
