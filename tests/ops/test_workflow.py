"""The delivery pipeline (.github/workflows/delivery.yml) passes actionlint and GitHub's
workflow JSON Schema, and runs the stages in the order a bank needs: tests, then build, scan
and push, then dev, then prod behind an approval with a canary, a gate and a rollback.
Both linters are shown to reject broken samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.tools import ACTIONLINT, CHECK_JSONSCHEMA, ROOT, require, run

WORKFLOW = ROOT / ".github" / "workflows" / "delivery.yml"


def actionlint(path: Path) -> tuple[int, str]:
    done = run([require(ACTIONLINT, "actionlint"), str(path)])
    return done.returncode, done.stdout + done.stderr


def schema_check(path: Path) -> tuple[int, str]:
    binary = require(CHECK_JSONSCHEMA, "check-jsonschema")
    done = run([binary, "--builtin-schema", "vendor.github-workflows", str(path)])
    return done.returncode, done.stdout + done.stderr


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job["steps"])


def test_actionlint_passes() -> None:
    code, output = actionlint(WORKFLOW)
    assert code == 0, output


def test_the_workflow_schema_passes() -> None:
    code, output = schema_check(WORKFLOW)
    assert code == 0, output


def test_stages_run_in_order() -> None:
    jobs = workflow()["jobs"]
    assert jobs["build"]["needs"] == "test"
    assert jobs["dev"]["needs"] == "build"
    assert set(jobs["production"]["needs"]) == {"build", "dev"}
    assert "make test" in runs(jobs["test"])


def test_the_image_is_scanned_before_it_is_pushed_and_deployed_by_digest() -> None:
    steps = [s.get("uses", "") + s.get("run", "") for s in workflow()["jobs"]["build"]["steps"]]
    scan = next(i for i, s in enumerate(steps) if "trivy" in s)
    push = next(i for i, s in enumerate(steps) if "docker push" in s)
    assert scan < push
    assert "image=$IMAGE@${digest#*@}" in steps[push]


def test_prod_waits_for_approval_and_rolls_out_gradually() -> None:
    jobs = workflow()["jobs"]
    assert jobs["production"]["environment"] == "production"
    assert jobs["dev"]["environment"] == "dev"
    names = [s["name"] for s in jobs["production"]["steps"] if "name" in s]
    order = [
        next(i for i, n in enumerate(names) if n.startswith(word))
        for word in ("canary", "soak", "promote", "roll back")
    ]
    assert order == sorted(order)
    steps = {s.get("name"): s for s in jobs["production"]["steps"]}
    assert (
        "rollout.py split"
        in steps["canary (the candidate takes a share, tagged `candidate`)"]["run"]
    )
    assert "rollout.py gate" in steps["soak, then ask Prometheus about the candidate"]["run"]
    rollback = steps["roll back (the stable release takes all traffic again)"]
    assert rollback["if"].startswith("failure()")
    assert "rollout.py rollback" in rollback["run"]


def test_the_workflow_holds_no_secret_value() -> None:
    text = WORKFLOW.read_text()
    for marker in ("BEGIN PRIVATE KEY", "postgresql://", "cockroachdb://", "password="):
        assert marker not in text


# --- the linters catch broken samples --------------------------------------------------------

BROKEN_YAML = """on: push
jobs:
  test:
    runs-on: ubuntu-24.04
    steps:
      - run: make test
     - run: echo misaligned
"""
BROKEN_NEEDS = """on: push
jobs:
  deploy:
    needs: build
    runs-on: ubuntu-24.04
    steps:
      - run: echo ${{ github.sha }}
"""
BROKEN_CONTEXT = """on: push
jobs:
  deploy:
    runs-on: ubuntu-24.04
    env:
      OUT: ${{ runner.temp }}/x
    steps:
      - run: echo "$OUT"
"""
BROKEN_SCHEMA = """on: push
jobs:
  deploy:
    runs_on: ubuntu-24.04
    steps:
      - run: echo hi
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (BROKEN_YAML, "yaml"),
        (BROKEN_NEEDS, 'needs job "build" which does not exist'),
        (BROKEN_CONTEXT, 'context "runner" is not allowed here'),
    ],
    ids=["syntax-error", "unknown-needs", "context"],
)
def test_actionlint_rejects_a_broken_workflow(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / ".github" / "workflows" / "broken.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    code, output = actionlint(path)
    assert code != 0
    assert says in output.lower() if says == "yaml" else says in output


@pytest.mark.parametrize("text", [BROKEN_YAML, BROKEN_SCHEMA], ids=["syntax-error", "schema"])
def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(text)
    code, _ = schema_check(path)
    assert code != 0
