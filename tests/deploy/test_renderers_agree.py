"""Before the home-made renderer (tests/deploy/kustomize.py) is retired: it and the real
Kustomize (`kubectl kustomize`, from .venv-image) render every kustomization in knative/ to
the same resources. Any difference is a bug in one of them."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE
from tests.deploy.tools import require, run

FOLDERS = ["base", "overlays/dev", "overlays/prod"]


def kubectl_kustomize(folder: Path) -> list[dict[str, Any]]:
    done = run([require("kubectl"), "kustomize", str(folder)])
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def by_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(d["apiVersion"], d["kind"], d["metadata"]["name"]): d for d in documents}


@pytest.mark.parametrize("folder", FOLDERS)
def test_both_renderers_give_the_same_resources(folder: str) -> None:
    ours = by_name(kustomize.render(KNATIVE / folder))
    real = by_name(kubectl_kustomize(KNATIVE / folder))
    assert sorted(ours) == sorted(real)
    differences = []
    for key, document in ours.items():
        if document != real[key]:
            a = yaml.safe_dump(document, sort_keys=True).splitlines()
            b = yaml.safe_dump(real[key], sort_keys=True).splitlines()
            differences.append("\n".join(difflib.unified_diff(a, b, "ours", "kubectl", n=1)))
    assert differences == []
    print(f"[figures] renderers agree on knative/{folder}: {len(ours)} resources, same content")
