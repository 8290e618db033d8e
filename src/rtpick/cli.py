"""The `rtpick` command: registers each command module on the app (`rtpick.commands.app`) and runs it.

A command lives in its own module under `rtpick.commands` and decorates its functions with ``@app.command()``;
adding one means adding its module to the import in `register_commands` (the order there is the order of
``rtpick --help``). Command modules import their heavy dependencies inside the command, so registering all of
them stays fast.
"""

from __future__ import annotations

import signal
import sys

import typer

from rtpick.commands.app import Terminated, app, on_sigterm


def register_commands() -> None:
    """Import every command module; importing one registers its commands on `app`."""
    from rtpick.commands import bench, compare, core, demo, export, recommend, serve, streams  # noqa: F401


def main() -> None:
    """Entry point of the `rtpick` script (and of ``python -m rtpick`` / ``python -m rtpick.cli``).

    SIGTERM is handled like Ctrl-C (a clean stop that keeps what was written), with exit status 143.
    """
    register_commands()
    signal.signal(signal.SIGTERM, on_sigterm)
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


if __name__ == "__main__":
    main()
