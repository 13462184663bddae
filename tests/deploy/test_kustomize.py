"""The overlays render (`kubectl kustomize`) to what each environment needs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy import crosscheck as x
from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


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


def images(node: Any) -> Iterator[str]:
    """Every `image:` value anywhere in a document (containers, init containers, sources)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(node, list):
        for item in node:
            yield from images(item)


def test_every_prod_image_is_pinned_by_digest_and_dev_differs() -> None:
    prod_images = {image for d in rendered("prod") for image in images(d)}
    assert len(prod_images) == 2, prod_images  # holdfast's and the dead-letter display's
    assert [i for i in prod_images if not DIGEST.search(i)] == []
    dev_images = {image for d in rendered("dev") for image in images(d)}
    assert dev_images != prod_images
    assert images({"spec": {"x": [{"image": "a:latest"}]}}).__next__() == "a:latest"
    assert not any(image == "holdfast" for image in dev_images | prod_images)


def test_prod_broker_is_durable_and_keeps_the_dead_letter_sink() -> None:
    broker = x.of_kind(rendered("prod"), "Broker")[0]
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    delivery = broker["spec"]["delivery"]
    assert delivery["deadLetterSink"]["ref"]["name"] == "dead-letter"
    assert delivery["backoffPolicy"] == "exponential"
