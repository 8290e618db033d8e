"""Streams: sources (synthetic, files and URLs through PyAV), declared preprocessing, and `StreamProcessor`,
all running on the per-batch scheduler (`rtpick.perf.scheduler`). Nothing heavy is imported here."""
