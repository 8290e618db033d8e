"""The `rtpick` command: thin wrappers over the Python API.

Every command turns an `RtpickError` into one line on stderr and exit status 2 (1 for a failed check);
``--debug`` shows the traceback instead. Commands from other modules register themselves on `app`.
"""

from __future__ import annotations

import functools
import signal
import sys
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it stops like after Ctrl-C: workers killed, temporary folders
    removed, the results of finished configurations kept; exit status 143 (128 + SIGTERM)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()
_state = {"debug": False}


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


def main() -> None:
    """Entry point of the `rtpick` script."""
    from rtpick import commands  # noqa: F401 - registers the commands on `app`

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
    except Terminated:  # outside a command (while parsing, say): the same one line
        typer.echo("rtpick: error: terminated (SIGTERM)", err=True)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        typer.echo("rtpick: error: interrupted", err=True)
        sys.exit(130)
