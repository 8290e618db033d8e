"""The Typer app every command registers on, and the error handling they share.

It lives apart from `rtpick.cli` so that a command module imports only this (never the module that imports all
the commands): every command turns an `RtpickError` into one line on stderr and exit status 2 (1 for a failed
check); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from rtpick.errors import RtpickError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run one model on every inference runtime this machine has, prove they agree, measure, pick one.",
)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it stops like after Ctrl-C: workers killed, temporary folders
    removed, the results of finished configurations kept; exit status 143 (128 + SIGTERM)."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")) -> None:
    _state["debug"] = debug


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with `code`."""
    typer.echo(f"rtpick: error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(func: F) -> F:
    """Turn rtpick's errors (and a Ctrl-C) into one line and an exit status; a bug keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RtpickError as exc:
            if _state["debug"]:
                raise
            fail(str(exc), exc.exit_code)
        except Terminated:
            fail("terminated (SIGTERM); what was already written is kept", 128 + signal.SIGTERM)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        return None

    return wrapper  # type: ignore[return-value]


def make_console(log_width: int = 200) -> Any:
    """A rich Console for a command's tables: the terminal's width on a terminal; in a log or a pipe (where rich
    would assume 80 columns and squeeze every number into ellipses) `log_width` columns, unless COLUMNS says."""
    import os

    from rich.console import Console

    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS"):  # a terminal, or a width the user set: theirs
        return console
    return Console(width=log_width)
