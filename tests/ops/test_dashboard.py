"""The Grafana dashboard: well-formed JSON Grafana can import, every panel query valid
PromQL (promtool checks it as a recording rule, Grafana's macros filled in), every metric it
reads exported by the code, and every alert's signal on a panel. Each check is shown to catch
a broken sample."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops import promql, rules
from tests.ops.metrics import exported_series
from tests.ops.tools import OPS, promtool, run

DASHBOARD = OPS / "grafana" / "holdfast-operations.json"
Dashboard = dict[str, Any]
# Values a dashboard variable takes when its queries are checked.
VARIABLES = {"$function": ".*", "${function}": ".*"}


def load() -> Dashboard:
    loaded: Dashboard = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: Dashboard) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: Dashboard) -> dict[str, str]:
    """Where -> PromQL: every panel target and every query variable."""
    found = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found[f"{panel['title']} [{target['refId']}]"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = text.removeprefix("label_values(").rsplit(",", 1)[0]
            found[f"variable {variable['name']}"] = inner
    return found


def layout_problems(dashboard: Dashboard) -> list[str]:
    problems = []
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"no {key}")
    ids = [p.get("id") for p in panels(dashboard)]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids are missing or repeated: {ids}")
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        box = panel.get("gridPos", {})
        if not {"x", "y", "w", "h"} <= set(box) or box["x"] + box["w"] > 24:
            problems.append(f"{panel.get('title')}: gridPos {box} is not inside 24 columns")
            continue
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                if (x, y) in cells:
                    problems.append(f"{panel['title']} overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel["title"]
            else:
                continue
            break
        if panel.get("type") not in {"row", "alertlist"} and not panel.get("targets"):
            problems.append(f"{panel['title']}: no query")
        if panel.get("type") not in {"row", "alertlist"} and not panel.get("description"):
            problems.append(f"{panel['title']}: no description for the on-call engineer")
    return problems


def promtool_problems(exprs: dict[str, str], folder: Path) -> str:
    """Check every query as a recording rule; promtool's complaint, or "" if all parse."""
    rules_file = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"panel:{index}", "expr": promql.grafana_to_promql(e, VARIABLES)}
                    for index, e in enumerate(exprs.values())
                ],
            }
        ]
    }
    path = folder / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules_file))
    done = run([promtool(), "check", "rules", str(path)])
    return "" if done.returncode == 0 else done.stdout + done.stderr


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return set(exported_series())


def test_the_dashboard_is_laid_out_for_grafana() -> None:
    assert layout_problems(load()) == []


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    assert promtool_problems(queries(load()), tmp_path) == ""


def test_every_metric_a_panel_reads_is_exported(exported: set[str]) -> None:
    read = {where: promql.metric_names(e) - exported for where, e in queries(load()).items()}
    assert {where: names for where, names in read.items() if names} == {}


def test_every_alerts_signal_is_on_a_panel() -> None:
    shown = set().union(*(promql.metric_names(e) for e in queries(load()).values()))
    for alert in rules.alerts():
        assert promql.metric_names(alert["expr"]) <= shown, alert["alert"]


def test_panels_use_the_datasource_variable() -> None:
    for panel in panels(load()):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# --- broken samples -----------------------------------------------------------------------


def test_a_broken_panel_query_is_caught(tmp_path: Path) -> None:
    broken = copy.deepcopy(load())
    target = next(p for p in panels(broken) if p.get("targets"))["targets"][0]
    target["expr"] = "sum(rate(holdfast_transfers_total[$__rate_interval])"
    assert "FAILED" in promtool_problems(queries(broken), tmp_path)


def test_a_panel_reading_an_unexported_metric_is_caught(exported: set[str]) -> None:
    broken = copy.deepcopy(load())
    target = next(p for p in panels(broken) if p.get("targets"))["targets"][0]
    target["expr"] = "sum(rate(holdfast_transfer_operations_total[5m]))"
    read = set().union(*(promql.metric_names(e) for e in queries(broken).values()))
    assert read - exported == {"holdfast_transfer_operations_total"}


def test_overlapping_or_undocumented_panels_are_caught() -> None:
    broken = copy.deepcopy(load())
    first, second = [p for p in panels(broken) if p.get("targets")][:2]
    second["gridPos"] = dict(first["gridPos"])
    del second["description"]
    problems = layout_problems(broken)
    assert f"{second['title']} overlaps {first['title']}" in problems
    assert f"{second['title']}: no description for the on-call engineer" in problems
