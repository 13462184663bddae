"""Gradual rollout (ops/rollout.py): the canary, promote and rollback manifests validate like
every other manifest, route exactly the split asked for, never start a second revision of a
release, and a split that does not sum to 100 (or any other broken one) is refused. The gate
asks a (fake) Prometheus about the candidate and says no when it is unhealthy."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy import manifests as m
from tests.ops.tools import OPS, run

SCRIPT = OPS / "rollout.py"
FUNCTIONS = ("accounts", "transfers", "ledger")


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("rollout", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rollout"] = module
    spec.loader.exec_module(module)
    return module


rollout = load_script()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `kubectl kustomize knative/overlays/prod` prints."""
    path = tmp_path_factory.mktemp("rollout") / "prod.yaml"
    path.write_text(yaml.safe_dump_all(kustomize.render(m.KNATIVE / "overlays" / "prod")))
    return path


def step(rendered: Path, *args: str) -> list[dict[str, Any]]:
    done = run([sys.executable, str(SCRIPT), args[0], str(rendered), *args[1:]])
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def services(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in documents
        if d["kind"] == "Service" and d["metadata"]["name"] in FUNCTIONS
    }


def split_of(service: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(t["revisionName"], t["percent"], t["tag"]) for t in service["spec"]["traffic"]]


@pytest.mark.parametrize(
    "args",
    [
        ("split", "--release", "g2", "--stable", "g1", "--percent", "10"),
        ("promote", "--release", "g2"),
        ("rollback", "--release", "g2", "--stable", "g1"),
    ],
    ids=["split", "promote", "rollback"],
)
def test_every_step_validates_like_the_other_manifests(rendered: Path, args: tuple[str]) -> None:
    documents = step(rendered, *args)
    assert len(documents) == len(list(yaml.safe_load_all(rendered.read_text())))
    for document in documents:
        m.validate_typed(document)
        assert m.unknown_fields(document) == []
        if m.SCHEMAS.is_dir():
            assert m.schema_errors(document) == []
        if document["kind"] == "Service":
            assert rollout.traffic_problems(document) == []


def test_a_canary_sends_the_share_asked_for_to_the_tagged_candidate(rendered: Path) -> None:
    found = services(
        step(rendered, "split", "--release", "g2", "--stable", "g1", "--percent", "10")
    )
    for name, service in found.items():
        assert service["spec"]["template"]["metadata"]["name"] == f"{name}-g2"
        assert split_of(service) == [(f"{name}-g1", 90, "stable"), (f"{name}-g2", 10, "candidate")]


def test_promote_and_rollback_move_traffic_without_a_new_revision(rendered: Path) -> None:
    canary = services(
        step(rendered, "split", "--release", "g2", "--stable", "g1", "--percent", "25")
    )
    promoted = services(step(rendered, "promote", "--release", "g2"))
    rolled_back = services(step(rendered, "rollback", "--release", "g2", "--stable", "g1"))
    for name in FUNCTIONS:
        templates = {
            json.dumps(s[name]["spec"]["template"], sort_keys=True)
            for s in (canary, promoted, rolled_back)
        }
        assert len(templates) == 1, "a traffic step must not change the revision template"
        assert split_of(promoted[name]) == [(f"{name}-g2", 100, "stable")]
        assert split_of(rolled_back[name]) == [
            (f"{name}-g1", 100, "stable"),
            (f"{name}-g2", 0, "candidate"),
        ]


def test_only_the_function_services_change(rendered: Path) -> None:
    before = list(yaml.safe_load_all(rendered.read_text()))
    after = step(rendered, "split", "--release", "g2", "--stable", "g1", "--percent", "10")
    changed = {
        (a["kind"], a["metadata"]["name"]) for a, b in zip(after, before, strict=True) if a != b
    }
    assert changed == {("Service", name) for name in FUNCTIONS}


# --- broken splits are refused --------------------------------------------------------------


def a_split_service(rendered: Path) -> dict[str, Any]:
    documents = step(rendered, "split", "--release", "g2", "--stable", "g1", "--percent", "10")
    return copy.deepcopy(services(documents)["transfers"])


def test_a_split_that_does_not_sum_to_100_is_caught(rendered: Path) -> None:
    service = a_split_service(rendered)
    service["spec"]["traffic"][0]["percent"] = 80
    assert rollout.traffic_problems(service) == ["transfers: traffic percents sum to 90, not 100"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t[1].update(percent=-10), "every percent must be an integer 0..100"),
        (lambda t: t[1].update(tag="stable"), "a tag names two targets"),
        (lambda t: t[1].update(revisionName="ledger-g2"), "ledger-g2 is not a revision of"),
        (lambda t: t[1].update(latestRevision=True), "exactly one of revisionName"),
    ],
)
def test_other_broken_splits_are_caught(rendered: Path, change: Any, problem: str) -> None:
    service = a_split_service(rendered)
    change(service["spec"]["traffic"])
    assert any(problem in p for p in rollout.traffic_problems(service)), rollout.traffic_problems(
        service
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("split", "--release", "g2", "--stable", "g1", "--percent", "150"), "not within 0..100"),
        (("split", "--release", "G2!", "--stable", "g1", "--percent", "5"), "lowercase letters"),
        (("rollback", "--release", "g1", "--stable", "g1"), "are the same"),
    ],
)
def test_the_command_refuses_a_bad_step(
    rendered: Path, args: tuple[str, ...], message: str
) -> None:
    done = run([sys.executable, str(SCRIPT), args[0], str(rendered), *args[1:]])
    assert done.returncode == 2
    assert message in done.stderr


def test_manifests_without_the_functions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    done = run([sys.executable, str(SCRIPT), "promote", str(path), "--release", "g2"])
    assert done.returncode == 2
    assert "no Knative Service for ['accounts', 'ledger', 'transfers']" in done.stderr


# --- the gate ---------------------------------------------------------------------------------


class FakePrometheus(BaseHTTPRequestHandler):
    answers: dict[str, float | None] = {}

    def do_GET(self) -> None:
        expr = parse_qs(urlsplit(self.path).query)["query"][0]
        key = next(k for k, q in rollout.gate_queries("g2").items() if q == expr)
        value = self.answers[key]
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, type[FakePrometheus]]]:
    handler = type("Handler", (FakePrometheus,), {"answers": {}})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("answers", "code", "says"),
    [
        ({"error_ratio": 0.001, "p99_s": 0.08, "requests": 5000}, 0, "healthy"),
        ({"error_ratio": 0.04, "p99_s": 0.08, "requests": 5000}, 1, "5xx share 4.00% > 1.00%"),
        ({"error_ratio": 0.0, "p99_s": 1.2, "requests": 5000}, 1, "p99 latency 1.200s > 0.5s"),
        ({"error_ratio": None, "p99_s": None, "requests": None}, 1, "served 0 requests"),
    ],
)
def test_the_gate_lets_only_a_healthy_candidate_through(
    prometheus: tuple[str, Any], answers: dict[str, Any], code: int, says: str
) -> None:
    url, handler = prometheus
    handler.answers.update(answers)
    done = run([sys.executable, str(SCRIPT), "gate", "--prometheus", url, "--release", "g2"])
    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout


def test_the_gate_queries_are_valid_promql_over_exported_metrics(tmp_path: Path) -> None:
    from tests.ops import promql
    from tests.ops.metrics import exported_series
    from tests.ops.tools import promtool

    queries = rollout.gate_queries("g2")
    names = set().union(*(promql.metric_names(q) for q in queries.values()))
    assert names <= set(exported_series())
    rules_file = {
        "groups": [
            {"name": "g", "rules": [{"record": f"gate:{k}", "expr": q} for k, q in queries.items()]}
        ]
    }
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(rules_file))
    done = run([promtool(), "check", "rules", str(tmp_path / "gate.yaml")])
    assert done.returncode == 0, done.stdout + done.stderr
