"""Triton's classification extension: an output returned as its top classes instead of its raw values.

Why: Triton's own clients ask for it (``InferRequestedOutput(name, class_count=k)``, image_client's ``-c k``),
and a server that refuses it breaks them. For such an output the answer is BYTES of shape [batch, k] ([k] for a
model without a batch axis), each element ``"<value>:<index>"``: the k highest values of the row's elements in
descending order (ties by the lower index), the value written as Triton writes it (C's ``%f``). rtpick has no
label files, so no ``:<label>`` part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtpick.serve.errors import ProtocolError


def class_count(params: dict[str, Any], name: str) -> int | None:
    """The ``classification`` parameter of a requested output: a count of at least 1, or None when absent."""
    value = params.get("classification")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProtocolError(400, f"output {name!r}: 'classification' must be a whole number of classes >= 1, "
                                 f"not {value!r}")
    return value


def top_classes(value: Any, count: int, batched: bool) -> np.ndarray:
    """`value` (one request's rows of an output, or its one tensor) as the extension's BYTES answer."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ProtocolError(400, f"classification needs a numeric output, not {array.dtype}")
    rows = array.reshape(array.shape[0] if batched else 1, -1)
    count = min(count, rows.shape[1])  # a row holds fewer classes than asked: all of them
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :count]
    answer = np.empty(order.shape, dtype=object)
    for r, indices in enumerate(order):
        answer[r] = [b"%f:%d" % (float(rows[r, i]), int(i)) for i in indices]
    return answer if batched else answer[0]
