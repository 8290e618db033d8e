"""A model without a batch axis run by the per-batch scheduler: one request (or frame) per run.

Why here: `rtpick serve` and the scheduler's benchmark scenarios (server, multistream) must run such a model the
same way, so the capacity measured is the capacity served. The scheduler stacks rows; this wrapper gives it rows
of one and runs the model on the row itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rtpick.model import has_batch_axis


class UnbatchedSession:
    """A session of a model without a batch axis (Triton's max_batch_size 0) seen by the scheduler as one of
    batch 1: the request's tensor is row 0 of a one-row batch, and the outputs get that axis back.

    A scalar (Silero VAD's ``sr``) is served as Triton declares it, dims [1]: the request's [1] tensor is fed as
    the rank-0 value the model takes, and a rank-0 output goes back as [1]."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._scalars = {spec.name for spec in session.inputs if not spec.shape}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        # [0, ...], not [0]: numpy gives a 0-d array for it, where [0] of one value per row is a numpy scalar
        outputs = self._session.run({name: value[0, ...].reshape(()) if name in self._scalars else value[0, ...]
                                     for name, value in feeds.items()})
        return {name: value.reshape(1, 1) if value.ndim == 0 else value[None] for name, value in outputs.items()}


def for_scheduler(session: Any, feeds: Mapping[str, Any], spec: Any, params: Any) -> tuple[Any, dict[str, Any], Any]:
    """(session, feeds, params) as the scheduler takes them: unchanged for a model with a batch axis; for one
    without, the session wrapped, each feed made a batch of one row, and the scheduler's max batch 1."""
    if has_batch_axis(spec):
        return session, dict(feeds), params
    if getattr(params, "max_batch", None) is not None:
        params = replace(params, max_batch=1)
    return UnbatchedSession(session), {name: value[None] for name, value in feeds.items()}, params
