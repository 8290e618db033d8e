"""End-to-end time of `rtpick recommend` on the bundled demo model, on a CPU, before and after a change.

Issue 17's CPU targets: ``recommend rtpick:digits --p99-ms 5 --quick`` under 60 s, and with
``--min-throughput`` as well under 90 s. Each source tree given with ``--tree NAME=PATH/src`` runs the same
commands (``python -m rtpick recommend ...`` with that tree first on PYTHONPATH), one after the other, and the
wall time of each, the machine's 1-minute load average before and after, its CPU count and the answer's first
line are written to ``--out`` (JSON) and printed as a Markdown table. A shared machine moves these figures:
the load averages are there so a reader can judge that.

    python benchmarks/recommend_cpu.py --tree before=/tmp/base/src --tree after=src \\
        --out benchmarks/results/recommend-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "p99": ["recommend", "rtpick:digits", "--p99-ms", "5", "--quick"],
    "p99+throughput": ["recommend", "rtpick:digits", "--p99-ms", "5", "--min-throughput", "2000", "--quick"],
}


def run(tree: str, words: list[str], timeout_s: float) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=tree, COLUMNS="160")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "rtpick", *words], env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired:
        code, out = None, ""
    wall = time.perf_counter() - start
    answer = next((line.strip() for line in out.splitlines()
                   if line.startswith(("recommended:", "no configuration meets"))), "")
    return {"wall_s": round(wall, 1), "exit": code, "answer": answer, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH to a src directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", choices=sorted(COMMANDS), action="append")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()
    rows = []
    for item in args.tree:
        name, _, path = item.partition("=")
        for label, words in COMMANDS.items():
            if args.only and label not in args.only:
                continue
            result = run(str(Path(path).resolve()), words, args.timeout)
            row = {"tree": name, "case": label, "command": "rtpick " + " ".join(words), **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "note": "shared by several engineers' test runs at the time"},
              "invocation": "python " + " ".join(sys.argv), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| tree | command | wall s | exit | load before/after | answer |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tree']} | `{r['command']}` | {r['wall_s']} | {r['exit']} | {r['load_before']:.1f} / "
              f"{r['load_after']:.1f} | {r['answer']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
