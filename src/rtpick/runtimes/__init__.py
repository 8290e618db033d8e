"""Runtimes: one module per engine, each keeping the contract of `rtpick.runtimes.base`."""

# What `rtpick.load` builds on when no runtime is named (it runs wherever rtpick installs). Here, not in the
# registry, so that `import rtpick` stays free of numpy.
DEFAULT_RUNTIME = "ort-cpu"
