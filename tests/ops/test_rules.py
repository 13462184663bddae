"""The alert rules: promtool accepts them and their unit tests pass, every alert carries a
severity, a summary and a runbook link that resolves, and every metric they read is one the
code exports. Each check is shown to catch a broken sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.ops import promql, rules
from tests.ops.metrics import exported_series
from tests.ops.tools import promtool, run

# The issue's list: each must be watched by at least one alert.
WATCHED = {
    "holdfast_http_server_request_duration_seconds_count",  # error rate (5xx share)
    "holdfast_http_server_request_duration_seconds_bucket",  # reserve p99
    "holdfast_db_serialization_retries_total",
    "holdfast_outbox_oldest_age_seconds",
    "holdfast_holds_lapsed_unswept",
    "holdfast_ledger_sealing_lag_seconds",
    "holdfast_ledger_checkpoint_verification_failures_total",
}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return set(exported_series())


def named_metrics(path: Path = rules.RULES) -> dict[str, set[str]]:
    return {r.get("alert") or r["record"]: promql.metric_names(r["expr"]) for r in rules.load(path)}


def unexported(named: dict[str, set[str]], exported: set[str]) -> dict[str, set[str]]:
    return {rule: names - exported for rule, names in named.items() if names - exported}


def test_promtool_accepts_the_rules() -> None:
    done = run([promtool(), "check", "rules", str(rules.RULES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules.load())} rules found" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    """ops/prometheus/tests.yaml: each alert fires on bad series, stays silent on good ones."""
    done = run([promtool(), "test", "rules", str(rules.RULE_TESTS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(rules.RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {a["alert"] for a in rules.alerts()}


def test_every_alert_has_severity_summary_and_a_runbook_that_resolves() -> None:
    assert rules.alert_problems(rules.alerts(), rules.RUNBOOK.read_text()) == []


def test_the_issues_signals_are_all_watched() -> None:
    read = set().union(*named_metrics().values())
    assert read >= WATCHED


def test_every_metric_a_rule_reads_is_exported(exported: set[str]) -> None:
    assert exported >= WATCHED, "the code no longer exports a watched metric"
    assert unexported(named_metrics(), exported) == {}


# --- the checks catch broken samples -------------------------------------------------------


def write_rules(folder: Path, expr: str, **alert: object) -> Path:
    rule = {
        "alert": "Sample",
        "expr": expr,
        "labels": {"severity": "critical"},
        "annotations": {"summary": "s", "runbook_url": "https://x.invalid/docs/operations.md#a"},
        **alert,
    }
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "sample", "rules": [rule]}]}))
    return path


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(holdfast_transfers_total[5m]) > ",  # unbalanced
        "rate(holdfast_transfers_total[5x])",  # not a duration
        'holdfast_transfers_total{outcome=~"("}',  # not a regular expression
    ],
)
def test_promtool_rejects_a_bad_expression(tmp_path: Path, expr: str) -> None:
    done = run([promtool(), "check", "rules", str(write_rules(tmp_path, expr))])
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


def test_a_rule_naming_a_metric_that_does_not_exist_is_caught(
    tmp_path: Path, exported: set[str]
) -> None:
    path = write_rules(tmp_path, "max(holdfast_outbox_oldest_age) > 60")  # unit suffix missing
    assert unexported(named_metrics(path), exported) == {"Sample": {"holdfast_outbox_oldest_age"}}


def test_a_failing_unit_test_fails(tmp_path: Path) -> None:
    shutil.copy(rules.RULES, tmp_path / "rules.yaml")
    document = yaml.safe_load(rules.RULE_TESTS.read_text())
    case = document["tests"][0]["alert_rule_test"][0]  # error rate silent at 4 minutes
    case["eval_time"] = "12m"
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document))
    done = run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path)
    assert done.returncode != 0
    assert "HoldfastErrorRateHigh" in done.stdout + done.stderr


def test_an_alert_without_severity_or_with_a_dead_runbook_link_is_caught() -> None:
    broken = [
        {"alert": "A", "labels": {}, "annotations": {"summary": "s"}},
        {
            "alert": "B",
            "labels": {"severity": "page"},
            "annotations": {"runbook_url": "https://x.invalid/docs/operations.md#nowhere"},
        },
    ]
    assert rules.alert_problems(broken, "# Runbook\n## Somewhere\n") == [
        "A: severity None is not one of ('critical', 'warning')",
        "A: runbook_url is not a link into docs/operations.md",
        "B: severity 'page' is not one of ('critical', 'warning')",
        "B: no summary",
        "B: docs/operations.md has no heading #nowhere",
    ]


def test_the_metric_name_finder() -> None:
    expr = (
        'sum by (function) (rate(a_count{status=~"5..", x="f(y)"}[5m])) / on(job) '
        "histogram_quantile(0.9, b_bucket) > 0.1 and absent(c) or vector(0) unless d offset 1h"
    )
    assert promql.metric_names(expr) == {"a_count", "b_bucket", "c", "d"}


def test_anchors_follow_githubs_rules() -> None:
    markdown = "# Runbook\n## Outbox backlog\n### Key rotation (metadata, ledger)\n"
    assert rules.anchors(markdown) == {"runbook", "outbox-backlog", "key-rotation-metadata-ledger"}
