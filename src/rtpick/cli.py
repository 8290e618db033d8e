"""The `rtpick` command: registers each command module on the app (`rtpick.commands.app`) and runs it.

A command lives in its own module under `rtpick.commands` and decorates its functions with ``@app.command()``;
adding one means adding its module to the import in `register_commands` (the order there is the order of
``rtpick --help``). Command modules import their heavy dependencies inside the command, so registering all of
them stays fast.
"""

from __future__ import annotations

import sys

from rtpick.commands.app import app


def register_commands() -> None:
    """Import every command module; importing one registers its commands on `app`."""
    from rtpick.commands import bench, compare, core, demo, export, recommend, serve, streams  # noqa: F401


def main() -> None:
    """Entry point of the `rtpick` script (and of ``python -m rtpick`` / ``python -m rtpick.cli``)."""
    register_commands()
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
