"""`rtpick diff`: per configuration present in two results files, the p50/p99 changes judged by their intervals.

Two files of different models are refused (a comparison between them means nothing); a change is flagged when
the two stored 95% intervals do not touch, the verdict a reader of the two tables would reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.perf.stats import intervals_overlap
from rtpick.results import Results


@dataclass
class Change:
    key: str
    metric: str
    old: float
    new: float
    significant: bool
    note: str
    old_ci: list[float] | None = None
    new_ci: list[float] | None = None

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("inf")


def _key(record: Record, options: bool = False) -> str:
    if options and record.options:
        from rtpick.recommendation.candidate import variant_label

        return f"{record.config} [{variant_label(record.options)}] b{record.batch} {record.scenario}"
    return f"{record.label} {record.scenario}"


def _keyed(results: Results) -> dict[str, Record]:
    """The measured records by configuration, batch and scenario; where one file holds several option sets of
    the same configuration (a recommend search's variants), each is keyed with its options too, so that they
    are never paired with each other's figures."""
    ok = list(results.ok())
    counts: dict[str, int] = {}
    for record in ok:
        counts[_key(record)] = counts.get(_key(record), 0) + 1
    return {_key(r, options=counts[_key(r)] > 1): r for r in ok}


def check_same_model(old: Results, new: Results) -> None:
    """Refuse (one line) two files measured on different models."""
    if old.model_sha256 != new.model_sha256:
        raise RtpickError(
            f"the two files measured different models ({old.model_name}, sha256 {old.model_sha256[:12]}... vs "
            f"{new.model_name}, sha256 {new.model_sha256[:12]}...); diff compares runs of one model"
        )


def diff(old: Results, new: Results) -> list[Change]:
    """Per configuration present in both: p50 and p99 changes, flagged when their 95% CIs do not overlap
    (a search's result, max q/s or max cameras, is listed but not judged: it has no interval).

    The intervals are the ones stored in each file (sectioning over blocks, see `rtpick.perf.stats`), the same
    a reader sees in each file's table: "changed" means the two brackets a user would compare do not touch.
    """
    olds = _keyed(old)
    changes: list[Change] = []
    for key, record in _keyed(new).items():
        before = olds.get(key)
        if before is None:
            continue
        h_old, h_new = before.headline(), record.headline()
        for metric in ("p50", "p99", "max_qps", "max_streams"):
            a, b = getattr(h_old, metric), getattr(h_new, metric)
            if a is None or b is None:
                continue
            ci_old, ci_new = getattr(h_old, f"ci_{metric}", None), getattr(h_new, f"ci_{metric}", None)
            if ci_old and ci_new:
                significant = not intervals_overlap(list(ci_old), list(ci_new))
                note = "95% CIs do not overlap" if significant else "within the measured noise (CIs overlap)"
                if _ci_kind(before) != _ci_kind(record):
                    note += f" (intervals of different kinds: {_ci_kind(before)} vs {_ci_kind(record)})"
                if significant and (load := _load_note(before, record)):
                    note += f"; {load}"
            else:
                significant = False
                note = "no confidence interval recorded: not judged"
            changes.append(Change(key, metric, a, b, significant, note,
                                  list(ci_old) if ci_old else None, list(ci_new) if ci_new else None))
    return changes


def ci_kind(record: Record) -> str:
    """How a record's interval was computed, in a few words."""
    return _ci_kind(record)


def _ci_kind(record: Record) -> str:
    ci = record.measurement.ci() if record.measurement is not None else {}
    replicates, blocks = _count(ci.get("replicates")), _count(ci.get("blocks"))
    if replicates > 1:
        return f"independent replications over {replicates} processes"
    return f"sectioning over {blocks} blocks" if blocks > 1 else "within-run bootstrap"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _load_note(old: Record, new: Record) -> str:
    """Words when the machine's load differed, or was high, in either measurement (it, not the code, may be why)."""
    def level(record: Record) -> float | None:
        load = record.measurement.load() if record.measurement is not None else {}
        values = [v for v in (load.get("before"), load.get("after"), load.get("max"))
                  if isinstance(v, int | float) and not isinstance(v, bool)]
        return max(values) if values else None

    a, b = level(old), level(new)
    if a is None or b is None:
        return ""
    cpus = (new.measurement.load() if new.measurement is not None else {}).get("cpus") or 1
    if not isinstance(cpus, int | float):
        cpus = 1
    if abs(a - b) >= max(0.5, 0.25 * cpus):
        return f"the machine's load differed (1-min load average {a:.1f} vs {b:.1f} on {cpus} CPUs)"
    if max(a, b) >= cpus:
        return (f"the machine was busy with other work (1-min load average {a:.1f} and {b:.1f} on {cpus} CPUs): "
                "its changes, not the code, may explain this")
    return ""
