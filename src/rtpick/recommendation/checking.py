"""The correctness gate of `recommend`: every candidate against the fp32 reference before it is measured.

The data is the caller's (an .npz with the model's inputs and a ``label`` array, or feeds and labels in
memory), the bundled model's own labelled set, or synthetic rows; each candidate is run on the session its
search will measure (`rtpick.recommendation.measure.SessionCache`), so a compiled build is paid once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rtpick.errors import RtpickError
from rtpick.recommendation.constraints import CHECK_BATCH
from rtpick.recommendation.ranking import correctness_records


def eval_data(loaded: Any, labels: Any, feeds: Any, label_array: Any) -> tuple[Any, Any, str | None]:
    """(feeds, labels, description) for the correctness check: given, from a labelled .npz, or the bundled set."""
    import numpy as np

    from rtpick.data import validate_feeds

    if feeds is not None:
        return dict(feeds), label_array, None
    path = labels
    if path is None and loaded.spec.source == "bundled":
        from rtpick.sources import assets_dir

        bundled = assets_dir() / f"{loaded.spec.name.split(':', 1)[-1]}_eval.npz"
        path = bundled if bundled.is_file() else None
    if path is None:
        return None, None, None
    if not os.path.isfile(path):
        raise RtpickError(f"--labels {str(path)!r} does not exist; give an .npz with the model's inputs and 'label'")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise RtpickError(f"--labels {path} is not a readable .npz ({type(exc).__name__}: {exc})") from exc
    key = next((k for k in ("label", "labels") if k in arrays), None)
    if key is None:
        raise RtpickError(f"--labels {path} has no 'label' array (it has {sorted(arrays)}); add one of class ids")
    found = arrays.pop(key)
    return validate_feeds(loaded.spec.inputs, arrays, source=str(path)), found, f"labelled data from {path}"


def check_choices(loaded: Any, choices: Sequence[Any], runnable: Sequence[str], eval_feeds: Any,
                  eval_labels: Any, how: str | None, shape_map: Mapping[str, tuple[int, ...]],
                  max_accuracy_drop: float | None, notes: list[str], phases: Any, survey: Any = None,
                  ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, dict[str, Any]]:
    """Each candidate against the fp32 reference, one `compare_configs` per variant position (each runtime's
    n-th option set together), so options that change the numbers (fused conv, frozen weights) are checked.

    With a `survey`, each candidate is checked on the session its search will measure (built once, at the
    search's first batch, the check's rows run through it that many at a time): a compiled build costs
    tens of seconds, and checking at another batch would pay it twice."""
    from rtpick.comparison.run import compare_configs

    chunk = survey.first_batch() if survey is not None else None
    rows = CHECK_BATCH if not chunk else chunk * -(-CHECK_BATCH // chunk)

    reference = next((n for n in runnable if n.endswith(":fp32")), "ort-cpu:fp32")
    groups: dict[int, list[Any]] = {}  # variant position -> its `search.Choice`s
    for choice in choices:
        groups.setdefault(choice.index, []).append(choice)
    phases.phase("correctness check", len(groups))
    out: dict[str, dict[str, Any]] = {}
    for group in groups.values():
        names = [choice.config for choice in group]
        phases.step(f"{', '.join(choice.key for choice in group)} against the fp32 reference {reference}")
        comparison = compare_configs(
            loaded, names, feeds=eval_feeds, labels=eval_labels, reference=reference, shapes=shape_map or None,
            batch=None if eval_feeds is not None else rows,
            options={choice.runtime: choice.options for choice in group if choice.options},
            feeds_description=how, chunk=chunk, input_ranges=ranges,
            sessions=survey.cache.timed(survey.check_calls) if survey is not None else None,
        )
        for note in comparison.notes:
            if note not in notes:
                notes.append(note)
        verdicts = correctness_records(comparison, names, max_accuracy_drop)
        for choice in group:
            if choice.config in verdicts:
                out[choice.key] = verdicts[choice.config]
        text = (f"correctness: each configuration against {comparison.reference} on "
                f"{comparison.feeds_description}")
        if text not in notes:
            notes.append(text)
    return out


def check_all(loaded: Any, choices: Mapping[str, Any], to_check: Sequence[Any], known: Mapping[str, Any],
              runnable: Sequence[str], data: tuple[Any, Any, str | None], shape_map: Mapping[str, tuple[int, ...]],
              max_accuracy_drop: float | None, notes: list[str], phases: Any, survey: Any, *, exhaustive: bool,
              ranges: Mapping[str, tuple[float, float]] | None = None
              ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(verdicts, key -> reason for candidates left out): `to_check` checked, except that a search where a
    fallback cannot win (`Survey.fallbacks_cannot_win`) leaves out each one whose sibling passed
    (`recommendation.fallbacks`; `exhaustive` checks all).
    `data` is `eval_data`'s (feeds, labels, description)."""
    from rtpick.recommendation.fallbacks import check_in_rounds, siblings

    def check(some: list[Any]) -> dict[str, dict[str, Any]]:
        return check_choices(loaded, some, runnable, *data, shape_map, max_accuracy_drop, notes, phases, survey,
                             ranges=ranges)

    if exhaustive or survey is None or not survey.fallbacks_cannot_win():
        return check(list(to_check)), {}
    found, left_out = check_in_rounds(to_check, siblings(choices), known, check)
    if left_out:
        notes.append(f"search: {len(left_out)} candidates not tried because a sibling that covers them passed its "
                     "check (each row says why; --exhaustive tries them)")
    return found, left_out
