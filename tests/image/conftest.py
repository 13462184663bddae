"""The image, built once per test session (`.ci/build-image`, as `make image` does) and shared
by every test here; all of them run on one xdist worker (group "image") so it is built once.

On a machine that reaches no registry the base is the stand-in made from Debian's packages
(.ci/python-base), and the figures say so.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy.tools import ROOT, require, run

TAG = "localhost/holdfast:test"


@dataclass(frozen=True)
class Image:
    tag: str
    base: str
    standin: bool
    build_s: float
    size_bytes: int
    inspect: dict[str, Any]

    def env(self) -> dict[str, str]:
        pairs = (e.split("=", 1) for e in self.inspect["Config"].get("Env") or [])
        return dict(pairs)


# The first test to use the image waits for its build: on a fresh machine that is the
# stand-in base (debootstrap) and every layer, minutes on a busy 2-core machine.
BUILD_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/image/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.xdist_group("image"))
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def image() -> Image:
    podman = require("podman")
    done = subprocess.run(  # our own build script
        [str(ROOT / ".ci" / "build-image"), TAG],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    inspected = run([podman, "image", "inspect", TAG])
    assert inspected.returncode == 0, inspected.stderr
    return Image(
        tag=TAG,
        base=figures["base"],
        standin=figures["standin"],
        build_s=float(figures["seconds"]),
        size_bytes=int(figures["size_bytes"]),
        inspect=json.loads(inspected.stdout)[0],
    )
