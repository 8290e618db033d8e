"""Runtimes: one module per engine, each keeping the contract of `rtpick.runtimes.base`."""
