"""The growth benchmark runs as `make bench` runs it, at a tiny size: a benchmark that stopped
working would otherwise go unnoticed until someone needs its figures (it did once: its own
writes were sealed under other keys than `holdfast dev`'s, and every read of them was a 500).
Speeds are printed, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_growth_benchmark_reads_exports_and_verifies_a_small_ledger() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOLDFAST_DATABASE_URL"}
    finished = subprocess.run(
        [sys.executable, "bench/growth.py", "--sizes", "200,600", "--samples", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-3000:]
    assert "read (ms: median / p99)" in output
    assert "transfers page (funding, 100)" in output
    assert "export through the dev gateway: 600 entries" in output
    verified = next(line for line in output.splitlines() if line.startswith("audit verify:"))
    assert "OK: 600 entries of 300 transfers" in verified
