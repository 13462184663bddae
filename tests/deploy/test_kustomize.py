"""The overlays render (with the offline renderer in tests/deploy/kustomize.py) to what each
environment needs, and the renderer itself fails loudly instead of guessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import crosscheck as x
from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE

DIGEST = "@sha256:"


def rendered(overlay: str) -> list[dict[str, Any]]:
    return kustomize.render(KNATIVE / "overlays" / overlay)


def annotations(service: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = service["spec"]["template"]["metadata"]["annotations"]
    return result


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_every_base_resource_into_its_namespace(overlay: str) -> None:
    documents = rendered(overlay)
    base = kustomize.render(KNATIVE / "base")
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        (d["kind"], d["metadata"]["name"]) for d in base
    ]
    assert {d["metadata"]["namespace"] for d in documents} == {"holdfast"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_functions_scale_to_zero_with_bounds(overlay: str) -> None:
    for name, service in x.function_services(rendered(overlay)).items():
        notes = annotations(service)
        spec = service["spec"]["template"]["spec"]
        assert notes["autoscaling.knative.dev/min-scale"] == "0", name
        assert 1 <= int(notes["autoscaling.knative.dev/max-scale"]) <= 50, name
        assert 0 < int(notes["autoscaling.knative.dev/target"]) <= spec["containerConcurrency"]
        assert 0 < spec["timeoutSeconds"] <= 600, name
        resources = x.container(service)["resources"]
        assert set(resources) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


def test_prod_is_bigger_than_dev_and_ticks_more_often() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    for name in x.FUNCTIONS:
        dev_max = annotations(x.function_services(dev)[name])["autoscaling.knative.dev/max-scale"]
        prod_max = annotations(x.function_services(prod)[name])["autoscaling.knative.dev/max-scale"]
        assert int(prod_max) > int(dev_max)
    schedules = {
        d["metadata"]["name"]: d["spec"]["schedule"] for d in x.of_kind(prod, "PingSource")
    }
    assert schedules == {"transfers-expiry-sweep": "* * * * *", "ledger-sealing": "* * * * *"}


def test_prod_images_are_pinned_by_digest_and_dev_differs() -> None:
    prod_images = {c["image"] for d in rendered("prod") for c in kustomize.containers_of(d)}
    assert prod_images and all(DIGEST in image for image in prod_images), prod_images
    dev_images = {c["image"] for d in rendered("dev") for c in kustomize.containers_of(d)}
    assert dev_images != prod_images
    assert not any(image == "holdfast" for image in dev_images | prod_images)


def test_prod_broker_is_durable_and_keeps_the_dead_letter_sink() -> None:
    broker = x.of_kind(rendered("prod"), "Broker")[0]
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    delivery = broker["spec"]["delivery"]
    assert delivery["deadLetterSink"]["ref"]["name"] == "dead-letter"
    assert delivery["backoffPolicy"] == "exponential"


# --- the renderer's own behaviour, on small samples -----------------------------------------


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


SERVICE = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: one, labels: {tier: fn}}
spec:
  template:
    metadata: {annotations: {a: "1", b: "2"}}
    spec:
      containers: [{name: function, image: holdfast, env: [{name: X, value: "1"}]}]
"""


def test_strategic_merge_merges_maps_replaces_lists_and_deletes_nulls(tmp_path: Path) -> None:
    patch = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: one}
spec:
  template:
    metadata: {annotations: {a: "9", b: null}}
    spec:
      containers: [{name: function, image: other}]
"""
    kustomization = "resources: [svc.yaml]\npatches: [{path: patch.yaml}]\n"
    folder = write(
        tmp_path, {"svc.yaml": SERVICE, "patch.yaml": patch, "kustomization.yaml": kustomization}
    )
    (service,) = kustomize.render(folder)
    assert service["spec"]["template"]["metadata"]["annotations"] == {"a": "9"}
    assert service["spec"]["template"]["spec"]["containers"] == [
        {"name": "function", "image": "other"}
    ]


def test_json6902_test_operation_guards_the_patch(tmp_path: Path) -> None:
    patch = "- {op: test, path: /spec/template/spec/containers/0/name, value: web}\n"
    kustomization = (
        "resources: [svc.yaml]\n"
        "patches: [{path: patch.yaml, target: {kind: Service, labelSelector: tier=fn}}]\n"
    )
    folder = write(
        tmp_path, {"svc.yaml": SERVICE, "patch.yaml": patch, "kustomization.yaml": kustomization}
    )
    with pytest.raises(kustomize.KustomizeError, match="test failed"):
        kustomize.render(folder)


def test_a_patch_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    patch = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: two}\n"
    kustomization = "resources: [svc.yaml]\npatches: [{path: patch.yaml}]\n"
    folder = write(
        tmp_path, {"svc.yaml": SERVICE, "patch.yaml": patch, "kustomization.yaml": kustomization}
    )
    with pytest.raises(kustomize.KustomizeError, match="matches no resource"):
        kustomize.render(folder)


def test_unsupported_kustomize_features_are_refused(tmp_path: Path) -> None:
    kustomization = "resources: [svc.yaml]\ncommonLabels: {a: b}\n"
    folder = write(tmp_path, {"svc.yaml": SERVICE, "kustomization.yaml": kustomization})
    with pytest.raises(kustomize.KustomizeError, match="commonLabels"):
        kustomize.render(folder)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "holdfast", "newTag": "v1"}, "holdfast:v1"),
        ({"name": "holdfast", "newName": "r.io/h", "digest": "sha256:ab"}, "r.io/h@sha256:ab"),
        ({"name": "other", "newTag": "v1"}, "holdfast"),
    ],
)
def test_images(entry: dict[str, str], expected: str) -> None:
    documents = [kustomize.yaml.safe_load(SERVICE)]
    kustomize.set_image(documents, entry)
    assert kustomize.containers_of(documents[0])[0]["image"] == expected


def test_image_name_ignores_registry_port_tag_and_digest() -> None:
    assert (
        kustomize.image_name("localhost:5000/holdfast:dev@sha256:ab") == "localhost:5000/holdfast"
    )
