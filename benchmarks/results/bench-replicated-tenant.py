"""A stand-in for another tenant on the shared 2-core machine: busy for a while, idle for a while, at random.

    python benchmarks/results/bench-replicated-tenant.py --seconds 420 --seed 1 &

The earlier identical runs (bench-repeat-README.md) disagreed when other work came and went during them, so
the latency switched between states lasting seconds to minutes. This script makes such states on purpose, so a
check of `--repeats` does not depend on whether a colleague happened to be running tests: it alternates
between spinning one core (a pure-Python loop in a child process) and sleeping, each spell 2-30 s long
(uniform, seeded), until `--seconds` have passed. It prints each spell to stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True, help="how long to keep coming and going")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    end = time.monotonic() + args.seconds
    busy = rng.random() < 0.5
    while (now := time.monotonic()) < end:
        spell = min(rng.uniform(2.0, 30.0), end - now)
        print(f"{time.strftime('%H:%M:%S')} {'busy' if busy else 'idle'} for {spell:.1f} s", file=sys.stderr)
        if busy:
            worker = multiprocessing.Process(target=_spin, args=(time.monotonic() + spell,))
            worker.start()
            worker.join()
        else:
            time.sleep(spell)
        busy = not busy


if __name__ == "__main__":
    main(sys.argv[1:])
