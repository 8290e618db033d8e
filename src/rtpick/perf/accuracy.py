"""Top-1 accuracy of a built session on a labelled set, so a bench record shows speed *and* correctness.

Where the labelled set comes from is decided once, in the parent, by `plan`: the user's ``--input FILE`` with
``--labels FILE``, or the held-out set a bundled model ships with (`rtpick.sources.eval_set`). The worker then
runs the set through the very session it timed (same runtime, precision and batch), so a precision that hurts
the answer shows up beside the speed it buys.

The set runs in chunks of the configuration's batch; the last chunk is padded to the full batch by repeating
its final sample (a session built for a fixed batch accepts nothing else) and the padded rows are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import RtpickError

LABEL_KEY = "label"


def plan(source: Any, spec: Any, inputs: str | None, labels: str | None, enabled: bool = True
         ) -> dict[str, Any] | None:
    """The labelled set each worker should score, checked now (before anything is built); None for none.

    `inputs`/`labels` are the user's files; without them a bundled model's own held-out set is used. The files
    are read here once so that a wrong name, shape, dtype or label count is one clear error up front.
    """
    from rtpick.sources import eval_set

    if not enabled:
        return None
    if (inputs is None) != (labels is None):
        raise RtpickError("--input and --labels go together: --input FILE holds the inputs, --labels FILE the "
                          "true class of each row (bench times synthetic data; these score top-1 accuracy)")
    if inputs is not None and labels is not None:
        entry = {"inputs": os.path.abspath(inputs), "labels": os.path.abspath(labels),
                 "name": f"{inputs} with labels {labels}"}
    else:
        bundled = eval_set(source)
        if bundled is None:
            return None
        entry = {"inputs": str(bundled), "labels": None, "name": f"{source}'s bundled held-out set ({bundled.name})"}
    feeds, truth = load_labelled(entry, spec)
    entry["n"] = int(truth.size)
    output = spec.outputs[0]
    if len(output.shape) != 2:
        raise RtpickError(f"top-1 accuracy needs a [batch, classes] output, but the first output is "
                          f"{output.describe()}; drop --labels for this model")
    del feeds
    return entry


def load_labelled(entry: Mapping[str, Any], spec: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(inputs checked against the model's spec, integer labels) of a planned labelled set."""
    from rtpick.data import load_npz, validate_feeds

    inputs_path = Path(entry["inputs"])
    if inputs_path.suffix not in (".npz", ".npy"):
        raise RtpickError(f"--input {str(inputs_path)!r} must be an .npz (one array per input) or an .npy")
    arrays = load_npz(inputs_path)
    if entry.get("labels") is None:
        if LABEL_KEY not in arrays:
            raise RtpickError(f"{inputs_path} has no {LABEL_KEY!r} array of true classes")
        truth = arrays.pop(LABEL_KEY)
    else:
        if not Path(entry["labels"]).is_file():
            raise RtpickError(f"--labels file {entry['labels']!r} does not exist")
        found = load_npz(entry["labels"])
        if "" in found:
            truth = found[""]
        elif LABEL_KEY in found or len(found) == 1:
            truth = found.get(LABEL_KEY, next(iter(found.values())))
        else:
            raise RtpickError(f"--labels {entry['labels']!r} holds {sorted(found)}; give one array, or one named "
                              f"{LABEL_KEY!r}")
    if "" in arrays:
        if len(spec.inputs) != 1:
            raise RtpickError(f"{inputs_path} (an .npy) holds one array but the model has inputs "
                              f"{spec.input_names()}; give an .npz with one array per input name")
        arrays = {spec.inputs[0].name: arrays.pop("")}
    feeds = validate_feeds(spec.inputs, arrays, source=str(inputs_path))
    truth = np.asarray(truth)
    if truth.ndim != 1 or truth.dtype.kind not in "iu":
        raise RtpickError(f"labels must be one whole-number class per row, not {truth.dtype} of shape {truth.shape}")
    rows = {int(v.shape[0]) for v in feeds.values()}
    if rows != {truth.size}:
        have = ", ".join(map(str, sorted(rows)))
        raise RtpickError(f"the labelled set has {have} input rows but {truth.size} labels; they must match")
    if truth.size == 0:
        raise RtpickError(f"{inputs_path} holds no rows to score")
    return feeds, truth


def top1(session: Any, feeds: Mapping[str, np.ndarray], labels: np.ndarray, batch: int, output: str
         ) -> dict[str, Any]:
    """Top-1 accuracy of `session` on (`feeds`, `labels`), run in chunks of `batch`; with how it was measured."""
    n = int(labels.size)
    predictions = np.empty(n, dtype=np.int64)
    for begin in range(0, n, batch):
        rows = min(batch, n - begin)
        chunk = {}
        for name, value in feeds.items():
            part = value[begin:begin + rows]
            if rows < batch:
                part = np.concatenate([part, np.repeat(part[-1:], batch - rows, axis=0)])
            chunk[name] = np.ascontiguousarray(part)
        scores = session.run(chunk)[output]
        session.synchronize()
        scores = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] != batch:
            raise ValueError(f"output {output!r} has shape {tuple(scores.shape)}, not [batch {batch}, classes]")
        predictions[begin:begin + rows] = np.argmax(scores[:rows], axis=1)
    correct = int(np.sum(predictions == labels))
    return {
        "metric": "top-1",
        "value": correct / n,
        "correct": correct,
        "n": n,
        "output": output,
        "method": (f"argmax of output {output!r} against the true class, {n} rows run through this configuration's "
                   f"session in chunks of batch {batch} (last chunk padded by repeating a row, padding ignored)"),
    }


def score(session: Any, job: Mapping[str, Any], spec: Any) -> tuple[float | None, dict[str, Any]]:
    """(accuracy, detail) for a worker's job; a failure here is recorded in the detail, not raised."""
    entry = job["accuracy"]
    try:
        feeds, labels = load_labelled(entry, spec)
        detail = top1(session, feeds, labels, int(job["batch"]), spec.outputs[0].name)
    except Exception as exc:  # noqa: BLE001 - accuracy is extra information; the timing stands without it
        return None, {"metric": "top-1", "eval_set": entry["name"],
                      "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
    detail["eval_set"] = entry["name"]
    return float(detail.pop("value")), detail
