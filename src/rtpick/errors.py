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


def one_line(exc: BaseException) -> str:
    """An exception as one line for a table row or a record: rtpick's own errors as their message (written for
    the user), anything else prefixed with its type (a bug or a library's error needs its name)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, RtpickError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BuildError(RtpickError):
    """A configuration could not be built (unsupported operator, compile failure, out of memory...)."""

    exit_code = 1
