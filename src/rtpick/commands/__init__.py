"""CLI commands, one module per command group; importing this package registers them on `rtpick.cli.app`."""

import importlib

for _name in ("core", "compare", "bench", "recommend", "demo"):
    try:
        importlib.import_module(f"rtpick.commands.{_name}")
    except ModuleNotFoundError as _exc:  # a command group not written yet
        if _exc.name != f"rtpick.commands.{_name}":
            raise
