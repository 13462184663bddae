"""End-to-end fixtures: a real `holdfast dev` process (embedded database, three function
processes, the gateway) on free ports, with its own HOLDFAST_HOME."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import state_dir

ROOT = Path(__file__).resolve().parents[2]
HOLDFAST = Path(sys.executable).parent / "holdfast"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Dev:
    process: subprocess.Popen[str]
    base_url: str
    home: Path
    env: dict[str, str]
    output: list[str] = field(default_factory=list)
    functions: dict[str, str] = field(default_factory=dict)  # name -> its own URL

    def drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-2000]

    def token(self, sub: str, scope: str) -> str:
        return subprocess.run(
            [str(HOLDFAST), "token", "--sub", sub, "--scope", scope],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def client(self, sub: str = "alice", scope: str = "") -> httpx.Client:
        scope = scope or "accounts:read accounts:write transfers:read transfers:write ledger:read"
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token(sub, scope)}"},
            timeout=30,
        )


def start_dev(home: Path, extra_env: dict[str, str] | None = None) -> Dev:
    port = free_port()
    env = {**os.environ, "HOLDFAST_HOME": str(home), **(extra_env or {})}
    env.pop("HOLDFAST_DATABASE_URL", None) if "HOLDFAST_DATABASE_URL" not in (
        extra_env or {}
    ) else None
    process = subprocess.Popen(
        [str(HOLDFAST), "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    lines = []
    functions: dict[str, str] = {}
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if " function at " in line:
            name, _, _, url = line.split()
            functions[name] = url
        if "Holdfast is running at" in line:
            base_url = line.rsplit(" ", 1)[-1].strip()
            dev = Dev(process, base_url, home, env, output=lines, functions=functions)
            # Keep reading: a full pipe would block every process that writes to it.
            threading.Thread(target=dev.drain, daemon=True).start()
            return dev
    process.kill()
    raise RuntimeError("holdfast dev did not start:\n" + "".join(lines))


def stop_dev(dev: Dev, sig: int = signal.SIGTERM) -> int:
    dev.process.send_signal(sig)
    try:
        code = dev.process.wait(timeout=30)
    finally:
        if dev.process.poll() is None:
            os.killpg(dev.process.pid, signal.SIGKILL)
    return code


@pytest.fixture
def home() -> Iterator[Path]:
    """A HOLDFAST_HOME outside pytest's tmp root (see tests.conftest.state_dir)."""
    path = state_dir("home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    path = state_dir("home-")
    running = start_dev(path)
    try:
        yield running
    finally:
        stop_dev(running)
        shutil.rmtree(path, ignore_errors=True)
