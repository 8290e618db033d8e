"""CLI commands, one module per command group; `rtpick.cli` imports each to register it on `commands.app.app`."""
