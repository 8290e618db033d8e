"""CLI commands, one module per command group; importing this package registers them on `rtpick.cli.app`."""

from rtpick.commands import bench, compare, core, demo, recommend, streams  # noqa: F401
