"""Do identical `rtpick bench` runs agree within their 95% CIs? Every pair of result files, per figure.

    PYTHONPATH=src python benchmarks/results/bench-repeat-agreement.py benchmarks/results/bench-repeat-run*.json

Prints each run's p50/p99 with its interval and the machine's load, then for every pair of runs whether the
intervals overlap (the rule `rtpick diff` uses) and, where they do not, by how much the figures differ. For
runs made with ``--repeats N`` it then judges the same processes one at a time, each by its own sectioning
interval (what a run without --repeats would have reported), every pair of processes across all the runs.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from rtpick.perf.stats import intervals_overlap
from rtpick.results import Results


def main(paths: list[str]) -> None:
    runs = {Path(p).stem.rsplit("-", 1)[-1]: {r.config: r.to_dict() for r in Results.read(p).ok()} for p in paths}
    configs = sorted({c for records in runs.values() for c in records})
    print("| run | configuration | p50 ms [95% CI] | p99 ms [95% CI] | calls | top-1 | load (1-min avg, 2 CPUs) |")
    print("|---|---|---|---|---|---|---|")
    for name, records in runs.items():
        for config in configs:
            r = records[config]
            lat, load = r["metrics"]["latency_ms"], r["metrics"]["load_avg"]
            peak = f" (max {load['max']:.1f})" if load.get("max") is not None else ""
            print(f"| {name} | {config} | {lat['p50']:.4f} [{lat['ci']['p50'][0]:.4f}, {lat['ci']['p50'][1]:.4f}] | "
                  f"{lat['p99']:.3g} [{lat['ci']['p99'][0]:.3g}, {lat['ci']['p99'][1]:.3g}] | {lat['n']:,} | "
                  f"{r['accuracy']:.2%} | {load['before']:.1f} -> {load['after']:.1f}{peak} |")
    print()
    print("| configuration | figure | pairs whose CIs overlap | pairs that do not (ratio of the two figures) |")
    print("|---|---|---|---|")
    for config in configs:
        for metric in ("p50", "p99"):
            agree, disagree = 0, []
            for a, b in itertools.combinations(runs, 2):
                la, lb = runs[a][config]["metrics"]["latency_ms"], runs[b][config]["metrics"]["latency_ms"]
                if intervals_overlap(la["ci"][metric], lb["ci"][metric]):
                    agree += 1
                else:
                    disagree.append(f"{a}/{b} x{max(la[metric], lb[metric]) / min(la[metric], lb[metric]):.2f}")
            total = agree + len(disagree)
            print(f"| {config} | {metric} | {agree} of {total} | {', '.join(disagree) or '-'} |")
    processes(runs, configs)


def processes(runs: dict[str, dict[str, dict]], configs: list[str]) -> None:
    """Every process of replicated runs on its own, by its own sectioning interval: how often pairs agree."""
    each = {config: [(f"{name}.{p['process']}", p) for name, records in runs.items()
                     for p in records[config].get("replicates", []) if p.get("status") == "ok"]
            for config in configs}
    if not any(each.values()):
        return
    print()
    print("Each process on its own (its own sectioning interval, as a run without --repeats reports it):")
    print()
    print("| configuration | figure | processes | pairs whose CIs overlap | largest ratio among pairs that do not |")
    print("|---|---|---|---|---|")
    for config, procs in each.items():
        for metric in ("p50", "p99"):
            agree, ratios = 0, []
            for (_, a), (_, b) in itertools.combinations(procs, 2):
                if intervals_overlap(a[f"ci_{metric}"], b[f"ci_{metric}"]):
                    agree += 1
                else:
                    ratios.append(max(a[metric], b[metric]) / min(a[metric], b[metric]))
            total = agree + len(ratios)
            worst = f"x{max(ratios):.2f}" if ratios else "-"
            print(f"| {config} | {metric} | {len(procs)} | {agree} of {total} | {worst} |")


if __name__ == "__main__":
    main(sys.argv[1:])
