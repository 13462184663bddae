"""Reading the alert rules file and the runbook it links."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.ops.tools import OPS, ROOT

RULES = OPS / "prometheus" / "rules.yaml"
RULE_TESTS = OPS / "prometheus" / "tests.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"
RUNBOOK_URL = re.compile(r"^https://[^#\s]+/docs/operations\.md#([a-z0-9-]+)$")
SEVERITIES = ("critical", "warning")


def load(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule of every group."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for rule in load(path) if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lowercase, punctuation dropped,
    spaces to dashes)."""
    found = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            found.add(text.replace(" ", "-"))
    return found


def alert_problems(rules: list[dict[str, Any]], runbook: str) -> list[str]:
    """What an on-call engineer needs on each alert: a severity, a summary, and a runbook
    link whose anchor exists in docs/operations.md."""
    problems = []
    known = anchors(runbook)
    for rule in rules:
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        notes = rule.get("annotations", {})
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} is not one of {SEVERITIES}")
        if not str(notes.get("summary", "")).strip():
            problems.append(f"{name}: no summary")
        link = RUNBOOK_URL.match(str(notes.get("runbook_url", "")))
        if link is None:
            problems.append(f"{name}: runbook_url is not a link into docs/operations.md")
        elif link.group(1) not in known:
            problems.append(f"{name}: docs/operations.md has no heading #{link.group(1)}")
    return problems
