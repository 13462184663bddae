"""Where the transfers function spends its CPU under load: py-spy while wrk runs reserve+confirm.

Starts `holdfast dev`, drives the reserve+confirm load of bench/run.py through the gateway
(8 clients, accounts at random) and samples the transfers function's gunicorn worker with
py-spy, only the thread holding the GIL (`--gil`): what the one Python core is doing. Prints
the functions by own samples and by inclusive samples (a frame counted once per stack).
py-spy is not a dependency of Holdfast: install it where you run this.

    .venv/bin/pip install py-spy && .venv/bin/python bench/profile.py [--seconds 8]
    WORKERS=2 .venv/bin/python bench/profile.py    # the same with the lever under test
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import run  # bench/run.py: the same dev, tokens, pools and wrk load

SAMPLE_RATE_HZ = 200
SHOWN = 30


def frame_key(frame: str) -> str:
    """`function (path/file.py:line)` -> `function (file.py)`: lines of one function merged."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def summarise(raw: Path) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [frame_key(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"{total} samples holding the GIL")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"-- by {title} samples")
        for frame, samples in counter.most_common(SHOWN):
            print(f"  {samples / max(total, 1):6.1%}  {frame[:110]}")


def gunicorn_workers(pids: list[int]) -> list[int]:
    """The processes of a function whose parent is in it too: gunicorn's workers."""

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    return [pid for pid in pids if parent(pid) in pids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="how long py-spy samples")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    home = Path(tempfile.mkdtemp(prefix="holdfast-profile-"))
    lever = {k: v for k, v in os.environ.items() if k in {"THREADS", "WORKERS"}}
    dev = run.start_dev(home, lever)
    try:
        tokens = [dev.token(f"bench-{i}", run.OPS_SCOPE) for i in range(8)]
        pool = run.open_accounts(dev.base_url, tokens[0], run.POOL_ACCOUNTS)
        workers = gunicorn_workers(run.Processes(dev).groups()["transfers"])
        figures: dict[str, float] = {}
        load = threading.Thread(
            target=lambda: figures.update(
                run.wrk(dev.base_url, tokens, args.seconds + 4, "pair", pool)
            )
        )
        load.start()
        time.sleep(2)  # past the first requests
        raw = home / "profile.txt"
        options = ["--gil", "--nonblocking", "-r", str(SAMPLE_RATE_HZ), "-d", str(args.seconds)]
        output = ["-f", "raw", "-o", str(raw), "-p", str(workers[-1])]
        subprocess.run([py_spy, "record", *options, *output], check=True, capture_output=True)
        load.join()
        print(f"{figures['pairs_per_s']:.1f} reserve+confirm pairs/s while sampled; {lever}")
        summarise(raw)
    finally:
        run.stop_dev(dev)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
