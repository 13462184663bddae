"""The Containerfile, statically: hadolint (the linter, from .venv-image) finds nothing at any
level, and every base image is pinned by a sha256 digest, the one thing the built image
cannot tell (it records only the base it was built from). Everything else about the image is
checked on the built image itself (tests/image). Both checks are shown to catch a broken
sample."""

from __future__ import annotations

import re

import pytest

from tests.deploy.tools import ROOT, require, run

CONTAINERFILE = ROOT / "Containerfile"
PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


def hadolint(text: str) -> tuple[int, str]:
    done = run([require("hadolint"), "--no-color", "--failure-threshold", "style", "-"], stdin=text)
    return done.returncode, done.stdout + done.stderr


def unpinned_bases(text: str) -> list[str]:
    """Each FROM's image (an ARG's default substituted) that is neither an earlier stage nor
    pinned by digest."""
    joined = re.sub(r"\\\n", " ", text)
    defaults = dict(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", joined, re.MULTILINE))
    stages: set[str] = set()
    found = []
    for image, stage in re.findall(
        r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", joined, re.M | re.I
    ):
        resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)
        if resolved not in stages and not PINNED.search(resolved):
            found.append(resolved)
        if stage:
            stages.add(stage)
    return found


def test_hadolint_finds_nothing() -> None:
    code, output = hadolint(CONTAINERFILE.read_text())
    assert code == 0, output


def test_every_base_is_pinned_by_digest() -> None:
    text = CONTAINERFILE.read_text()
    assert unpinned_bases(text) == []
    # The default base is the official image, in a FROM line (where Dependabot updates it).
    assert "ARG PYTHON_IMAGE=python-official\n" in text
    assert "FROM docker.io/library/python:3.11-slim-bookworm@sha256:" in text


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        ("FROM python:latest\n", "DL3007"),
        ("FROM python:3.11@sha256:" + "a" * 64 + "\nUSER root\n", "DL3002"),
        ("FROM python:3.11@sha256:" + "a" * 64 + "\nUSER holdfast\n", "DL3066"),
        ("FROM python:3.11@sha256:" + "a" * 64 + "\nRUN pip install flask\n", "DL3013"),
    ],
)
def test_hadolint_reports_a_broken_sample(broken: str, rule: str) -> None:
    code, output = hadolint(broken)
    assert code != 0 and rule in output, output


@pytest.mark.parametrize(
    ("text", "unpinned"),
    [
        ("FROM python:3.11-slim\n", ["python:3.11-slim"]),
        ("ARG BASE=python:3.11\nFROM ${BASE} AS build\nFROM build\n", ["python:3.11"]),
        ("ARG BASE=python@sha256:" + "b" * 64 + "\nFROM $BASE AS build\nFROM build\n", []),
    ],
)
def test_the_pin_check_reads_args_and_stages(text: str, unpinned: list[str]) -> None:
    assert unpinned_bases(text) == unpinned
