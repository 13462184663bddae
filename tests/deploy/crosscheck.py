"""Cross-checks between the Knative manifests and the code they deploy.

Each checker returns a list of problems (empty when all is well), so a test can assert both
that the real manifests pass and that a broken sample is caught with the right message.

- events: every Trigger's type is handled by its subscriber's `events` table, every handled
  type reaches its function (a Trigger, or a PingSource for the timer type), and every
  PingSource's function handles the ping type;
- environment: every variable the code reads is set on every workload (the function
  Services and the relay Deployment; K_SINK by a SinkBinding), or is in docs/deploy.md's
  configuration table with a default;
- concurrency: the thread count functions-framework's gunicorn will run, given the image's
  and the manifest's environment, equals containerConcurrency.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Document = dict[str, Any]
PING_TYPE = "dev.knative.sources.ping"
ENV_NAME = re.compile(r"^(HOLDFAST|K|OTEL)_[A-Z0-9_]+$")
FUNCTIONS = ("accounts", "transfers", "ledger")
DEPLOYMENTS = ("relay",)


def of_kind(documents: Iterable[Document], kind: str) -> list[Document]:
    return [d for d in documents if d.get("kind") == kind]


def function_services(documents: Iterable[Document]) -> dict[str, Document]:
    services = {d["metadata"]["name"]: d for d in of_kind(documents, "Service")}
    return {name: services[name] for name in FUNCTIONS if name in services}


def workloads(documents: Iterable[Document]) -> dict[str, Document]:
    """The function Services and the relay Deployment, by name."""
    listed = list(documents)
    deployments = {d["metadata"]["name"]: d for d in of_kind(listed, "Deployment")}
    found = function_services(listed)
    found.update({name: deployments[name] for name in DEPLOYMENTS if name in deployments})
    return found


def container(service: Document) -> dict[str, Any]:
    containers: list[dict[str, Any]] = service["spec"]["template"]["spec"]["containers"]
    return containers[0]


# --- events ---------------------------------------------------------------------------


def event_problems(documents: list[Document], handled: Mapping[str, Iterable[str]]) -> list[str]:
    """`handled`: function name -> the event types its `events` table dispatches."""
    handled_sets = {name: set(types) for name, types in handled.items()}
    problems: list[str] = []
    reaching: dict[str, set[str]] = {name: set() for name in handled_sets}
    brokers = {d["metadata"]["name"] for d in of_kind(documents, "Broker")}
    for trigger in of_kind(documents, "Trigger"):
        name, spec = trigger["metadata"]["name"], trigger["spec"]
        event_type = spec.get("filter", {}).get("attributes", {}).get("type")
        target = spec["subscriber"].get("ref", {}).get("name")
        if spec.get("broker") not in brokers:
            problems.append(f"Trigger {name}: no Broker named {spec.get('broker')!r}")
        if event_type is None:
            problems.append(f"Trigger {name}: no type filter (it would get every event)")
        elif target not in handled_sets:
            problems.append(f"Trigger {name}: subscriber {target!r} is not a function")
        elif event_type not in handled_sets[target]:
            problems.append(f"Trigger {name}: {target} does not handle {event_type}")
        else:
            reaching[target].add(event_type)
    for source in of_kind(documents, "PingSource"):
        name = source["metadata"]["name"]
        target = source["spec"]["sink"].get("ref", {}).get("name")
        if target not in handled_sets:
            problems.append(f"PingSource {name}: sink {target!r} is not a function")
        elif PING_TYPE not in handled_sets[target]:
            problems.append(f"PingSource {name}: {target} does not handle {PING_TYPE}")
        else:
            reaching[target].add(PING_TYPE)
    for function, types in sorted(handled_sets.items()):
        for event_type in sorted(types - reaching[function]):
            problems.append(f"{function} handles {event_type} but nothing delivers it")
    return problems


# --- environment ------------------------------------------------------------------------


def env_reads(roots: Iterable[Path]) -> dict[str, set[str]]:
    """Variable name -> files that read it: `X.get("NAME", ...)` (os.environ or a copy of
    it), `os.getenv("NAME")` and `os.environ["NAME"]`, for HOLDFAST_*, K_* and OTEL_* names
    (OpenTelemetry's own variables, when the code reads them itself)."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for name in _env_names(ast.parse(path.read_text(), filename=str(path))):
                found.setdefault(name, set()).add(str(path))
    return found


def _env_names(tree: ast.AST) -> Iterable[str]:
    for node in ast.walk(tree):
        literal: ast.expr | None = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"get", "getenv", "pop", "setdefault"}
            and node.args
        ):
            literal = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            literal = node.slice
        if (
            isinstance(literal, ast.Constant)
            and isinstance(literal.value, str)
            and ENV_NAME.match(literal.value)
        ):
            yield literal.value


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def env_set(service: Document, documents: list[Document]) -> set[str]:
    """Names a workload's container gets: its env list, plus K_SINK from a SinkBinding."""
    names = {e["name"] for e in container(service).get("env", [])}
    for binding in of_kind(documents, "SinkBinding"):
        if binds(binding, service):
            names.add("K_SINK")
    return names


def binds(binding: Document, service: Document) -> bool:
    subject = binding["spec"]["subject"]
    if (subject.get("apiVersion"), subject.get("kind")) != (service["apiVersion"], service["kind"]):
        return False
    if "name" in subject:
        return bool(subject["name"] == service["metadata"]["name"])
    labels = service["metadata"].get("labels", {}) or {}
    wanted = subject.get("selector", {}).get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def documented_defaults(markdown: str) -> dict[str, str]:
    """The configuration table of docs/deploy.md: `| `NAME` | default | meaning |` rows."""
    table: dict[str, str] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[A-Z0-9_]+`", cells[0]):
            table[cells[0].strip("`")] = cells[1]
    return table


def env_problems(
    reads: Mapping[str, Iterable[str]],
    documents: list[Document],
    defaults: Mapping[str, str],
    required: Mapping[str, Iterable[str]],
) -> list[str]:
    """`required`: workload -> variables it must have set whatever the documentation says."""
    problems: list[str] = []
    services = workloads(documents)
    for name in sorted(reads):
        if name not in defaults:
            problems.append(f"{name} is read by the code but not documented in docs/deploy.md")
    for function, service in sorted(services.items()):
        present = env_set(service, documents)
        for name in sorted(set(reads) - present):
            default = defaults.get(name, "")
            if not default or default.lower() in {"-", "—", "required", "none"}:
                problems.append(f"{function}: {name} is read but not set and has no default")
        for name in sorted(set(required.get(function, ())) - present):
            problems.append(f"{function}: {name} must be set in its manifest")
    return problems


# --- concurrency ---------------------------------------------------------------------------


def literal_env(service: Document) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container(service).get("env", []) if "value" in e}


def gunicorn_threads(environment: Mapping[str, str]) -> int:
    """The thread count functions-framework's gunicorn application takes from `environment`
    (its own code decides: THREADS, else 4 x the CPUs the process sees)."""
    import os
    from unittest import mock

    from functions_framework._http.gunicorn import GunicornApplication

    with mock.patch.dict(os.environ, dict(environment), clear=True):
        application = GunicornApplication(None, "127.0.0.1", 8080, False)
    return int(application.options["threads"])


def concurrency_problems(documents: list[Document], image_env: Mapping[str, str]) -> list[str]:
    """`image_env`: the built image's environment (tests/image reads it from the image)."""
    problems: list[str] = []
    base = dict(image_env)
    for function, service in sorted(function_services(documents).items()):
        environment = {**base, **literal_env(service)}
        concurrency = service["spec"]["template"]["spec"].get("containerConcurrency")
        if "THREADS" not in environment:
            problems.append(f"{function}: THREADS unset: gunicorn would use 4 x the node's CPUs")
            continue
        threads = gunicorn_threads(environment)
        if concurrency != threads:
            problems.append(
                f"{function}: containerConcurrency {concurrency} != gunicorn threads {threads}"
            )
        pool = int(environment.get("HOLDFAST_DB_POOL_SIZE", "8"))
        if pool < threads:
            problems.append(f"{function}: HOLDFAST_DB_POOL_SIZE {pool} < {threads} threads")
    return problems
