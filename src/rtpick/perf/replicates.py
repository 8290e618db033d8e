"""`--repeats N`: one closed-loop configuration measured in N processes, combined into one record.

The intervals of the combined record come from the spread between processes (independent replications, see
`rtpick.perf.stats`), every process's own summary kept beside it. The records are read and written in their
stored form (`Record.to_dict`), so the combined one has exactly the usual shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rtpick.perf.record import Record


def combine_records(records: Sequence[Record]) -> Record:
    """`combine_replicates` over typed records."""
    return Record.from_dict(combine_replicates([r.to_dict() for r in records]), "the combined record")


def _replicate_summary(index: int, record: dict[str, Any]) -> dict[str, Any]:
    """What one process of a replicated configuration measured, kept short: its figures, intervals, costs."""
    out: dict[str, Any] = {"process": index + 1, "status": record.get("status")}
    if record.get("status") != "ok":
        out["error"] = record.get("error", "")
        return out
    metrics = record["metrics"]
    lat = metrics["latency_ms"]
    out.update(
        p50=lat["p50"], p99=lat["p99"], ci_p50=lat["ci"]["p50"], ci_p99=lat["ci"]["p99"],
        ci_method=lat["ci"].get("method"), n=metrics["n"], throughput=metrics["throughput"],
        duration_s=metrics["duration_s"], warmup=metrics["warmup"], load_avg=metrics.get("load_avg"),
        build_time_s=record.get("build_time_s"), first_inference_ms=record.get("first_inference_ms"),
        host_rss_peak_mb=(record.get("memory") or {}).get("host_rss_peak_mb"), accuracy=record.get("accuracy"),
    )
    return out


def _failure_words(records: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"process {i + 1}: {r.get('status')}: {r.get('error', '')}"
                     for i, r in enumerate(records) if r.get("status") != "ok")


def combine_replicates(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The records of one closed-loop job run in N processes -> one record of the usual shape.

    Figures and intervals come from `rtpick.perf.stats.combine_latency_ms` (independent replications over the
    processes that succeeded); throughput is `batch` / the combined mean, i.e. the geometric mean of the
    processes' throughputs; build time and first inference are the median over processes; memory is the
    largest of any process; accuracy is the first process's (all score the same session type; a warning says
    if they differ). A failed process does not take the configuration down: the others are combined and a
    warning names it. With one success that process's own record stays (with a warning that no replication
    interval could be formed); with none, the first failure. `replicates` keeps every process's summary.
    """
    from rtpick.perf.stats import combine_latency_ms

    summaries = [_replicate_summary(i, r) for i, r in enumerate(records)]
    ok = [r for r in records if r.get("status") == "ok"]
    n = len(records)
    if not ok:
        return {**records[0], "replicates": summaries}
    warnings = list(dict.fromkeys(w for r in ok for w in r.get("warnings", [])))
    failed = _failure_words(records)
    if len(ok) == 1:
        warnings.append(f"only 1 of {n} processes succeeded ({failed}), so no replication interval could be "
                        "formed: the figures and interval are that one process's (sectioning within it)")
        return {**ok[0], "warnings": warnings, "replicates": summaries}
    if failed:
        warnings.append(f"{n - len(ok)} of {n} processes failed ({failed}); the figures combine the {len(ok)} "
                        "that succeeded")
    first = ok[0]
    metrics = [r["metrics"] for r in ok]
    latency = combine_latency_ms([m["latency_ms"] for m in metrics])
    batch = first["metrics"]["batch"]
    combined = {
        **first["metrics"],
        "n": latency["n"], "latency_ms": latency, "throughput": batch * 1e3 / latency["mean"],
        "duration_s": float(sum(m["duration_s"] for m in metrics)),
        "warmup": int(sum(m["warmup"] for m in metrics)),
        "method": _replicated_method(metrics),
        "load_avg": _combined_load(metrics),
    }
    if all(m.get("device_latency_ms") for m in metrics):
        combined["device_latency_ms"] = combine_latency_ms([m["device_latency_ms"] for m in metrics])
    if any("samples_ms" in m for m in metrics):
        combined["samples_ms"] = [s for m in metrics for s in m.get("samples_ms") or []]
    scores = sorted({r.get("accuracy") for r in ok if r.get("accuracy") is not None})
    if len(scores) > 1:
        warnings.append(f"the processes' top-1 accuracy differed ({', '.join(f'{s:.4%}' for s in scores)}); "
                        "the first process's is shown")
    return {
        **first, "metrics": combined, "warnings": warnings, "replicates": summaries,
        "build_time_s": _median([r.get("build_time_s") for r in ok]),
        "first_inference_ms": _median([r.get("first_inference_ms") for r in ok]),
        "load_time_s": _median([r.get("load_time_s") for r in ok]),
        "memory": _largest_memory([r.get("memory") or {} for r in ok]),
    }


def _replicated_method(metrics: Sequence[dict[str, Any]]) -> str:
    """How a replicated figure was measured, in words: the processes, then one process's own method."""
    counts = [m["n"] for m in metrics]
    own = "; ".join(part for part in metrics[0]["method"].split("; ") if not part.startswith("95% CI"))
    return (f"{len(metrics)} separate processes, each with its own start-up, build and warm-up "
            f"({min(counts):,}-{max(counts):,} calls each, {sum(counts):,} in all); percentiles and mean are the "
            f"geometric mean over the processes of each process's own; 95% CI by independent replications "
            f"between the {len(metrics)} processes (includes per-process offsets and drift within each); "
            f"process 1: {own}")


def _combined_load(metrics: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The machine's load from the first process's start to the last one's end, and each process's."""
    loads = [m.get("load_avg") or {} for m in metrics]
    if not any(loads):
        return None
    values = [v for load in loads for v in (load.get("before"), load.get("after")) if v is not None]
    return {
        "before": loads[0].get("before"), "after": loads[-1].get("after"),
        "max": max(values) if values else None, "cpus": loads[0].get("cpus"),
        "per_process": [[load.get("before"), load.get("after")] for load in loads],
        "what": "1-minute load average of the whole machine (runnable threads, all tenants): before the first "
                "process's measurement, after the last one's, and the highest reading around any process",
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else 0.5 * (present[mid - 1] + present[mid])


def _largest_memory(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Memory peaks (``*_mb``) at their largest over the processes (a deployment must fit the worst one),
    other ``*_max``/``*_min`` figures (clocks, temperatures) at their extreme, the rest as process 1 saw it."""
    out = dict(reports[0])
    for key in reports[0]:
        values = [r[key] for r in reports if isinstance(r.get(key), int | float) and not isinstance(r[key], bool)]
        if not values:
            continue
        if key.endswith(("_mb", "_max")):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
    if isinstance(out.get("host_rss_method"), str):
        out["host_rss_method"] += f"; the largest of {len(reports)} processes"
    return out
