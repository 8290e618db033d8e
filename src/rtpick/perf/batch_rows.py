"""The rows of a batch and the model's: row i of every output answers row i of the batch, and a model without a
batch axis runs one request (or frame) per run.

Why here: `rtpick serve`, `rtpick streams` and the scheduler's benchmark scenarios (server, multistream) split
and form batches the same way, so the capacity measured is the capacity served. `rows_problem` says when a
model's outputs cannot be split that way; `UnbatchedSession` gives the scheduler rows of one for a model
without a batch axis and runs the model on the row itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rtpick.model import has_batch_axis


def rows_problem(outputs: Mapping[str, Any], size: int) -> str | None:
    """Why the outputs of a batch of `size` rows cannot be split into its requests' rows, or None.

    Every row of a batch belongs to one request (or frame), and its answer is row i of every output. An output
    whose first dim is not the batch (a detector's kept boxes, [K, 6], K from the data) would hand each request
    someone else's rows or a cut, so the batch fails with this reason instead.
    """
    for name, value in outputs.items():
        shape = tuple(getattr(value, "shape", ()))
        if not shape or shape[0] != size:
            return (f"output {name!r} has shape {list(shape)} for a batch of {size}: its first dim is not the batch, "
                    "so it cannot be split between requests; export the model with the batch as every output's "
                    "first dim")
    return None


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
