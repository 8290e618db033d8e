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


# ------------------------------------------------------------------------------------------------- phases


class Phases:
    """Progress of a run in phases (check, probe, measure...): one line per event to a log, or a live bar.

    `phase(name, total)` starts a phase of `total` steps; `step(text)` says what starts now (the bar advances
    when the next step or phase begins); `note(text)` is a line on its own. Off a terminal every call is one
    line on `stream` (stderr), stamped with the seconds since the start, so a CI log shows a silent minute as
    the compile it is. `callback` (the API's ``progress=``) hears every line too.
    """

    def __init__(self, stream: Any = None, console: Any = None, callback: Any = None, prefix: str = "") -> None:
        import time

        self._clock = time.perf_counter
        self.start_s = self._clock()
        self.stream = stream
        self.callback = callback
        self.prefix = prefix
        self.name = ""
        self.total = 0
        self.done = 0
        self.bar: Any = None
        self.task: Any = None
        if console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)

    def __enter__(self) -> Phases:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _line(self, text: str) -> None:
        stamp = f"[{self.prefix}{' ' if self.prefix else ''}{self._clock() - self.start_s:6.1f} s] {text}"
        if self.callback is not None:
            self.callback(text)
        if self.bar is None and self.stream is not None:
            print(stamp, file=self.stream, flush=True)

    def phase(self, name: str, total: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=self.total)
        self.name, self.total, self.done = name, total, 0
        if self.bar is not None:
            self.task = self.bar.add_task(name, total=max(total, 1))
        self._line(f"{name}: {total} step{'s' if total != 1 else ''}")

    def step(self, text: str) -> None:
        self.done += 1
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=self.done - 1, description=f"{self.name}: {text}")
        self._line(f"{self.name} {self.done}/{self.total}: {text}")

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(f"[dim]{text}[/]", highlight=False)
        self._line(text)

    def finish(self, text: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=self.total)
        self._line(text)


def phases_for(console: Any, callback: Any = None, prefix: str = "") -> Phases:
    """A live bar on a terminal; plain stamped lines on stderr otherwise (a pipe, a CI log)."""
    import sys

    return Phases(stream=sys.stderr, console=console, callback=callback, prefix=prefix)
