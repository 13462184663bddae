"""Cold start of each function, as Knative starts it after scale to zero.

Knative starts the container's entry point (`python -m functions_framework`, target and
source from FUNCTION_TARGET / FUNCTION_SOURCE) and its queue-proxy probes the readiness path
every few milliseconds until it answers 200; the activator then hands over the request that
woke the service. This script does the same on this machine, against a real PostgreSQL
(embedded, migrated once beforehand, as the database is already up in a cluster):

    process start -> first 200 from GET /readyz (database reached) -> first authenticated
    call answered (token verified, a real query)

Holdfast's sources are byte-compiled first, as the image's build does. It prints the median
(and range) of several runs per function, with the CPU time the process tree used (what the
start costs, whatever else the machine is doing), then what dominates: the interpreter's own
start and the imports (`python -X importtime`, packages by self time); the rest is
gunicorn's boot, the runtime's engine and JWKS, the first connection.
Not measured here: scheduling the pod and pulling the image, which depend on the cluster.

    .venv/bin/python bench/cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from holdfast.adapters.crypto import write_key_file
from holdfast.adapters.database import EmbeddedPostgres, create_engine, migrate
from holdfast.adapters.signing import private_pem
from holdfast.adapters.tokens import DevIssuer

ROOT = Path(__file__).resolve().parents[1]
THREADS = "8"  # as in knative/base/services.yaml (containerConcurrency)
READY_TIMEOUT_S = 30.0
PROBE_INTERVAL_S = 0.005
TARGET_S = 1.0
# One real, authenticated call per function: path and the scope it needs.
CALLS = {
    "accounts": (f"/v1/accounts/{uuid.UUID(int=1)}", "accounts:read"),
    "transfers": ("/v1/transfers?limit=1", "transfers:read"),
    "ledger": ("/v1/ledger/checkpoints/latest", "ledger:read"),
}


@dataclass(frozen=True, slots=True)
class Run:
    ready_s: float
    first_call_s: float
    call_status: int
    cpu_s: float  # user + system CPU of the process tree: robust on a busy machine


@dataclass(frozen=True, slots=True)
class Stage:
    """Everything a function process needs: database URL, keys, a token per scope."""

    home: Path
    database_url: str
    jwks_file: Path
    signing_key_file: Path
    metadata_keys_file: Path

    def environment(self, function: str, port: int) -> dict[str, str]:
        return {
            **os.environ,
            "FUNCTION_TARGET": function,
            "FUNCTION_SOURCE": str(ROOT / "functions" / function / "main.py"),
            "PORT": str(port),
            "THREADS": THREADS,
            "HOLDFAST_DB_POOL_SIZE": THREADS,
            "HOLDFAST_HOME": str(self.home),
            "HOLDFAST_DATABASE_URL": self.database_url,
            "HOLDFAST_JWKS_FILE": str(self.jwks_file),
            "HOLDFAST_LEDGER_SIGNING_KEY_FILE": str(self.signing_key_file),
            "HOLDFAST_METADATA_KEYS_FILE": str(self.metadata_keys_file),
        }

    def token(self, scope: str) -> str:
        issuer = DevIssuer(self.home, issuer="holdfast-dev", audience="holdfast")
        return issuer.issue("bench", scope)


def byte_compiled() -> None:
    """Compile Holdfast's sources as the image does (Containerfile: `compileall`), so that a
    start reads bytecode rather than compiling the project: a checkout run with
    PYTHONDONTWRITEBYTECODE (as some machines set it) would otherwise compile it at every
    start, and measure a cost the image never pays. The venv's packages are compiled by pip."""
    for folder in ("shared", "functions"):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / folder)],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def staged() -> Iterator[Stage]:
    byte_compiled()
    with tempfile.TemporaryDirectory(prefix="holdfast-cold-start-") as folder:
        home = Path(folder)
        database = EmbeddedPostgres(home)
        url = database.start()
        try:
            engine = create_engine(url, pool_size=1)
            migrate(engine)
            engine.dispose()
            issuer = DevIssuer(home, issuer="holdfast-dev", audience="holdfast")
            key_file = home / "ledger-signing-key.pem"
            key_file.write_bytes(private_pem())
            metadata_keys = home / "metadata-keys.json"
            write_key_file(metadata_keys, {"bench-1": os.urandom(32)}, "bench-1")
            yield Stage(home, url, issuer.write_jwks(), key_file, metadata_keys)
        finally:
            database.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(function: str, port: int, *, importtime: bool = False) -> list[str]:
    flags = ["-X", "importtime"] if importtime else []
    return [
        sys.executable,
        *flags,
        "-m",
        "functions_framework",
        f"--target={function}",
        f"--source={ROOT / 'functions' / function / 'main.py'}",
        "--host=127.0.0.1",
        f"--port={port}",
    ]


def wait_ready(client: httpx.Client, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the function exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if client.get(url + "/readyz").status_code == 200:
                return
        time.sleep(PROBE_INTERVAL_S)
    raise RuntimeError(f"{url} not ready after {READY_TIMEOUT_S} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cold_start(stage: Stage, function: str) -> Run:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path, scope = CALLS[function]
    headers = {"Authorization": f"Bearer {stage.token(scope)}"}
    with httpx.Client(timeout=2.0) as client:
        started = time.perf_counter()
        process = subprocess.Popen(  # our own interpreter and arguments
            command(function, port),
            env=stage.environment(function, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(client, url, process)
            ready = time.perf_counter() - started
            status = client.get(url + path, headers=headers).status_code
            first_call = time.perf_counter() - started
            cpu = tree_cpu_s(process.pid)
        finally:
            stop(process)
    return Run(ready, first_call, status, cpu)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU so far of a process and its children (gunicorn's arbiter and its
    worker), from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(child) for child in children)
    return total


def interpreter_start_s(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def import_profile(stage: Stage, function: str) -> dict[str, float]:
    """Import time (seconds) by package, in one real start."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log, httpx.Client(timeout=2.0) as client:
        process = subprocess.Popen(  # our own interpreter and arguments
            command(function, port, importtime=True),
            env=stage.environment(function, port),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            wait_ready(client, url, process)
        finally:
            stop(process)
        log.seek(0)
        text = log.read().decode(errors="replace")
    # Self time summed by distribution (first name of each module), whoever imported it: so
    # sqlalchemy's cost counts as sqlalchemy's even though holdfast pulled it in.
    totals: dict[str, float] = {}
    for match in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", text):
        package = match.group(2).split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(match.group(1)) / 1e6
    return totals


def report(function: str, runs: list[Run]) -> float:
    ready = [r.ready_s for r in runs]
    call = [r.first_call_s for r in runs]
    statuses = sorted({r.call_status for r in runs})
    cpu = statistics.median(r.cpu_s for r in runs)
    print(
        f"{function:10} ready {statistics.median(ready) * 1000:6.0f} ms "
        f"({min(ready) * 1000:.0f}-{max(ready) * 1000:.0f})   "
        f"first authenticated call {statistics.median(call) * 1000:6.0f} ms "
        f"({min(call) * 1000:.0f}-{max(call) * 1000:.0f}, HTTP {statuses})   "
        f"CPU {cpu * 1000:4.0f} ms"
    )
    return statistics.median(call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold starts per function")
    arguments = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, THREADS={THREADS}")
    print(f"load average {load} (other work on the machine inflates wall-clock figures)")
    print(f"cold start, median of {arguments.runs} runs (range):")
    with staged() as stage:
        cold_start(stage, "accounts")  # warm the OS page cache once, as a node would be
        worst = max(
            report(name, [cold_start(stage, name) for _ in range(arguments.runs)]) for name in CALLS
        )
        verdict = "under" if worst < TARGET_S else "OVER"
        print(f"slowest median to first answered call: {worst * 1000:.0f} ms ({verdict} 1 s)")
        print()
        base = interpreter_start_s(arguments.runs)
        print(f"what dominates (transfers): interpreter start alone {base * 1000:.0f} ms")
        profile = import_profile(stage, "transfers")
        total = sum(profile.values())
        print(
            f"imports {total * 1000:.0f} ms under -X importtime (which slows them; read the "
            "shares): the packages that cost most, self time"
        )
        for package, seconds in sorted(profile.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {package:28} {seconds * 1000:6.1f} ms  {seconds / total:4.0%}")


if __name__ == "__main__":
    main()
