"""`rtpick recommend` end to end, cold then warm compile caches (issue 17: H200 and CPU targets).

Runs ``python -m rtpick recommend MODEL --p99-ms P --quick --json RUN.json`` twice in fresh processes: first with
empty Inductor, Triton and rtpick caches (cold: every torch.compile and int8 choice starts from nothing), then
again with the caches the first run filled (warm). Each run's wall time is the process's, start to exit; the
phase times come from its progress log. Writes ``<out>/{cold,warm}.{json,log,txt}`` and ``<out>/summary.md``.

    PYTHONPATH=src python benchmarks/recommend_cold_warm.py --out benchmarks/results/h200/recommend
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASE = re.compile(r"^\[recommend +([0-9.]+) s\] (correctness check|probe round \d|full measurement)[^:]*: \d+ steps?$")


def run_once(name: str, model: str, budget: list[str], caches: Path, out: Path, timeout_s: float) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"), TRITON_CACHE_DIR=str(caches / "triton"),
               RTPICK_CACHE_DIR=str(caches / "rtpick"))
    command = [sys.executable, "-m", "rtpick", "recommend", model, *budget, "--quick", "--json",
               str(out / f"{name}.json")]
    start = time.perf_counter()
    with open(out / f"{name}.txt", "w") as stdout, open(out / f"{name}.log", "w") as stderr:
        try:
            code = subprocess.run(command, env=env, stdout=stdout, stderr=stderr, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.perf_counter() - start
    return summarise(name, out, code, wall, " ".join(["python", "-m", "rtpick", *command[3:]]))


def summarise(name: str, out: Path, code: int | None, wall: float, command: str) -> dict:
    """One run's row from its files: phase times summed per phase (a search checks in rounds, so a phase can
    start more than once), the answer line and what happened to each candidate."""
    phases, last = [], None
    for line in (out / f"{name}.log").read_text().splitlines():
        if match := PHASE.match(line):
            phases.append((match.group(2), float(match.group(1))))
        if line.startswith("[recommend"):
            last = float(line.split()[1])
    spans: dict[str, float] = {}
    for i, (what, at) in enumerate(phases):
        end = phases[i + 1][1] if i + 1 < len(phases) else (last or at)
        spans[what] = round(spans.get(what, 0.0) + end - at, 1)
    load = phases[0][1] if phases else None
    if load is not None:
        spans = {"load": round(load, 1), **spans}
    first_line = next(iter((out / f"{name}.txt").read_text().splitlines()), "")
    counts: dict[str, int] = {}
    path = out / f"{name}.json"
    if path.is_file():
        for record in json.loads(path.read_text())["configurations"]:
            error = record.get("error") or ""
            key = "measured in full" if record["status"] == "ok" else error.split(":")[0] or record["status"]
            counts[key] = counts.get(key, 0) + 1
    return {"run": name, "exit": code, "wall_s": round(wall, 1), "phases_s": spans, "answer": first_line,
            "records": counts, "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet50")
    parser.add_argument("--p99-ms", type=float, default=1.0)
    parser.add_argument("--min-throughput", type=float, help="samples/s, as recommend's own option")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout-s", type=float, default=330.0, help="per run")
    parser.add_argument("--resummarise", action="store_true",
                        help="no runs: rebuild summary.md/json from the logs and results already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = ["--p99-ms", f"{args.p99_ms:g}"]
    if args.min_throughput is not None:
        budget += ["--min-throughput", f"{args.min_throughput:g}"]
    options = " ".join(["--model", args.model, *budget])
    if args.resummarise:
        before = {row["run"]: row for row in json.loads((out / "summary.json").read_text())["runs"]}
        rows = [summarise(name, out, row["exit"], row["wall_s"], row["command"]) for name, row in before.items()]
    else:
        caches = Path(tempfile.mkdtemp(prefix="rtpick-recommend-caches-"))
        try:
            rows = [run_once(name, args.model, budget, caches, out, args.timeout_s) for name in ("cold", "warm")]
        finally:
            shutil.rmtree(caches, ignore_errors=True)
    lines = [f"# `rtpick recommend {args.model} {' '.join(budget)} --quick`, cold then warm caches", "",
             f"Command: `PYTHONPATH=src python benchmarks/recommend_cold_warm.py {options} --out {args.out} "
             f"--timeout-s {args.timeout_s:g}` (exit None: killed at the timeout)", "",
             "| run | exit | wall s | phases (s) | answer | candidates |", "|---|---|---|---|---|---|"]
    for row in rows:
        phases = ", ".join(f"{k} {v}" for k, v in row["phases_s"].items())
        records = ", ".join(f"{v} {k}" for k, v in sorted(row["records"].items()))
        lines.append(f"| {row['run']} | {row['exit']} | {row['wall_s']} | {phases} | {row['answer']} | {records} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"model": args.model, "p99_ms": args.p99_ms,
                                                  "min_throughput": args.min_throughput, "runs": rows},
                                                 indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
