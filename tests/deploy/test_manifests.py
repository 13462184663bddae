"""Every Knative manifest parses and validates three ways (typed models, CRD schemas, strict
field names), both as written in knative/base and as each overlay renders it; and each of
those checks rejects a deliberately broken sample."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
import pytest

from holdfast.entrypoints.ingress import load_triggers
from tests.deploy import kustomize
from tests.deploy import manifests as m

OVERLAYS = ("dev", "prod")
needs_schemas = pytest.mark.skipif(
    not m.SCHEMAS.is_dir(),
    reason=f"Knative CRD schemas not found at {m.SCHEMAS} (shared/ is laid beside the repo)",
)


def base_documents() -> list[dict[str, Any]]:
    return [d for path in m.base_files() for d in m.documents_of(path) if not m.is_kustomization(d)]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    found = [(f"base/{d['kind']}/{d['metadata']['name']}", d) for d in base_documents()]
    for overlay in OVERLAYS:
        for document in kustomize.render(m.KNATIVE / "overlays" / overlay):
            found.append((f"{overlay}/{document['kind']}/{document['metadata']['name']}", document))
    return found


DOCUMENTS = all_documents()
IDS = [label for label, _ in DOCUMENTS]


def a_service() -> dict[str, Any]:
    document = next(d for d in base_documents() if d["metadata"]["name"] == "transfers")
    return copy.deepcopy(document)


def test_every_base_file_is_listed_in_the_kustomization() -> None:
    kustomization = m.documents_of(m.KNATIVE / "base" / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in m.base_files()} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("document", [d for _, d in DOCUMENTS], ids=IDS)
def test_typed_model_accepts(document: dict[str, Any]) -> None:
    model = m.validate_typed(document)
    assert model.model_dump(by_alias=True, exclude_none=True)["kind"] == document["kind"]


@pytest.mark.parametrize("document", [d for _, d in DOCUMENTS], ids=IDS)
def test_no_unknown_fields(document: dict[str, Any]) -> None:
    assert m.unknown_fields(document) == []
    assert m.free_form_paths(document) == [], "parts the strict walk cannot vouch for"


@needs_schemas
@pytest.mark.parametrize("document", [d for _, d in DOCUMENTS], ids=IDS)
def test_crd_schema_accepts(document: dict[str, Any]) -> None:
    assert m.schema_errors(document) == []


def test_typed_model_rejects_a_wrong_type() -> None:
    broken = a_service()
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "eight"
    with pytest.raises(pydantic.ValidationError):
        m.validate_typed(broken)


def test_strict_walk_rejects_misspelt_and_misplaced_fields() -> None:
    broken = a_service()
    spec = broken["spec"]["template"]["spec"]
    spec["containerConcurency"] = 8
    spec["containers"][0]["readinessProbe"]["path"] = "/readyz"
    spec["containers"][0]["env"][0]["valueFrom"] = {"secretRef": {"name": "x"}}
    broken["metadata"]["lables"] = {"a": "b"}
    assert sorted(m.unknown_fields(broken)) == [
        "metadata.lables",
        "spec.template.spec.containerConcurency",
        "spec.template.spec.containers[0].env[0].valueFrom.secretRef",
        "spec.template.spec.containers[0].readinessProbe.path",
    ]


def test_the_relay_deployment_schema_rejects_a_wrong_type_and_a_missing_selector() -> None:
    relay = copy.deepcopy(next(d for d in base_documents() if d["kind"] == "Deployment"))
    assert m.schema_errors(relay) == []
    relay["spec"]["replicas"] = "two"
    del relay["spec"]["selector"]
    assert m.schema_errors(relay) != []
    with pytest.raises(pydantic.ValidationError):
        m.validate_typed(relay)


@needs_schemas
def test_crd_schema_rejects_wrong_types_and_missing_required_fields() -> None:
    broken = a_service()
    broken["spec"]["template"]["spec"]["timeoutSeconds"] = "thirty"
    del broken["spec"]["template"]["spec"]["containers"]
    errors = m.schema_errors(broken)
    assert any("timeoutSeconds" in e and "integer" in e for e in errors), errors
    assert any("'containers' is a required property" in e for e in errors), errors


def test_an_unknown_kind_is_reported() -> None:
    with pytest.raises(m.ManifestError, match="unexpected kind"):
        m.validate_typed({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {}})


def test_holdfast_dev_still_loads_the_base_triggers() -> None:
    """`holdfast dev`'s events ingress reads knative/base: the same Triggers, the Broker's
    delivery spec as their default."""
    triggers = {t.name: t for t in load_triggers(m.KNATIVE)}
    assert {t.subscriber for t in triggers.values()} == {"accounts", "transfers"}
    assert len(triggers) == 4
    assert all(t.retry == 5 and t.backoff_policy == "exponential" for t in triggers.values())


def test_no_manifest_outside_base_and_overlays() -> None:
    stray = [
        p
        for p in m.KNATIVE.rglob("*.y*ml")
        if p.parent != m.KNATIVE / "base" and p.parent.parent != m.KNATIVE / "overlays"
    ]
    assert stray == []


def test_schema_location_is_beside_the_repository() -> None:
    assert Path(m.ROOT).parent / "shared" / "schemas" / "knative" == m.SCHEMAS
