"""The flakiness check to run before resolving any issue (`make flakiness`).

Runs the integration suite RUNS times in a row, each time once as it is and once with 30% of
commits failed by the server (SQLSTATE 40001), while LOAD processes keep every core busy (as
a second job on a CI machine would). Every run must be green: a test that fails here is a
bug, in the test or in the code. A failing run's output names the test, and the fault pass
prints the seed that replays it (`HOLDFAST_TEST_FAULT_SEED`).

    python tests/flakiness.py [--runs 5] [--load 2] [pytest arguments, e.g. tests/integration]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = Path(sys.executable).parent / "pytest"


def burn(stop_at: float) -> None:
    """Keep one core busy until `stop_at` (bounded: it ends by itself)."""
    while time.time() < stop_at:
        sum(i * i for i in range(10_000))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", type=int, default=2, help="busy processes alongside")
    parser.add_argument("--hours-max", type=float, default=3.0, help="the load stops by then")
    args, pytest_args = parser.parse_known_args()
    targets = pytest_args or ["tests/integration"]
    stop_at = time.time() + args.hours_max * 3600
    load = [multiprocessing.Process(target=burn, args=(stop_at,)) for _ in range(args.load)]
    for process in load:
        process.start()
    results: list[tuple[str, int, float]] = []
    try:
        for run in range(1, args.runs + 1):
            for label, rate in (("plain", "0"), ("faults 0.3", "0.3")):
                started = time.monotonic()
                code = subprocess.call(
                    [str(PYTEST), "-q", "-n", "2", "-p", "no:cacheprovider", *targets],
                    cwd=ROOT,
                    env={**os.environ, "HOLDFAST_TEST_FAULT_RATE": rate},
                )
                elapsed = time.monotonic() - started
                results.append((f"run {run} {label}", code, elapsed))
                print(f"[flakiness] run {run} {label}: exit {code} in {elapsed:.0f} s", flush=True)
    finally:
        for process in load:
            process.terminate()
            process.join()
    failed = [name for name, code, _ in results if code != 0]
    print(f"[flakiness] {len(results) - len(failed)} passed, {len(failed)} failed runs", flush=True)
    for name in failed:
        print(f"[flakiness] FAILED {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
