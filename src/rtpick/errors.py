"""Errors rtpick raises on purpose.

`RtpickError` is the user's mistake or a fact about the machine: the CLI prints its one-line message and exits
with status 2, never a traceback (``--debug`` shows it). Anything else escaping is a bug in rtpick.
"""

from __future__ import annotations


class RtpickError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""

    exit_code = 2


class MissingRuntime(RtpickError):
    """A runtime was asked for that this machine cannot run; the message says why and how to get it."""


class BuildError(RtpickError):
    """A configuration could not be built (unsupported operator, compile failure, out of memory...)."""

    exit_code = 1
