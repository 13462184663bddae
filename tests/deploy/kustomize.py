"""The overlays as the real Kustomize renders them: `kubectl kustomize FOLDER` (kubectl from
the lock's `tools` group in .venv-image, Kustomize v5.8), parsed into documents.

It replaced a home-made renderer of the Kustomize subset knative/ uses; before it went, both
rendered base, dev and prod to the same resources (kustomize orders them by kind).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import require, run

Resource = dict[str, Any]
IMAGE_PATHS = (("spec", "template", "spec", "containers"), ("spec", "containers"))


def render(folder: Path) -> list[Resource]:
    """The resources `kubectl kustomize folder` prints, in its order (a fresh copy)."""
    return copy.deepcopy(_render(folder.resolve()))


@functools.cache
def _render(folder: Path) -> list[Resource]:
    done = run([require("kubectl"), "kustomize", str(folder)])
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed: {done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def containers_of(resource: Resource) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in IMAGE_PATHS:
        node: Any = resource
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, list):
            found.extend(c for c in node if isinstance(c, dict))
    return found
