"""A small offline renderer for the Kustomize subset knative/ uses, so overlays can be checked
without the kustomize binary (none exists on these machines; no PyPI package renders a
kustomization.yaml on Python 3.11: `pykustomize` needs 3.14, `kustomize` on PyPI is an
unrelated generator library).

Supported, with kustomize's semantics for custom resources (the Knative kinds have no
OpenAPI schema in kustomize, so a strategic merge treats their lists as atomic):

- `resources`: files and folders holding a kustomization.yaml (recursively);
- `namespace`: set on every resource;
- `images`: `name` matched against container images, `newName`, `newTag` and `digest`;
- `patches`: a strategic merge patch (one document, found by kind and name, or applied to
  every match of `target`) or a JSON 6902 patch (a list of add, replace, remove and test
  operations; needs a `target`).

Anything else in a kustomization.yaml is an error, never silently ignored, so the renderer
cannot pass an overlay that the real kustomize would render differently.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
IMAGE_PATHS = (("spec", "template", "spec", "containers"), ("spec", "containers"))


class KustomizeError(ValueError):
    """The kustomization uses something outside the subset, or a patch does not apply."""


@dataclass(frozen=True, slots=True)
class Target:
    group: str | None = None
    version: str | None = None
    kind: str | None = None
    name: str | None = None
    label_selector: dict[str, str] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Target:
        unknown = set(raw) - {"group", "version", "kind", "name", "labelSelector"}
        if unknown:
            raise KustomizeError(f"unsupported patch target fields: {sorted(unknown)}")
        selector = raw.get("labelSelector")
        return cls(
            group=raw.get("group"),
            version=raw.get("version"),
            kind=raw.get("kind"),
            name=raw.get("name"),
            label_selector=parse_selector(selector) if selector else None,
        )

    def matches(self, resource: Resource) -> bool:
        group, _, version = str(resource.get("apiVersion", "")).rpartition("/")
        labels = resource.get("metadata", {}).get("labels", {}) or {}
        checks = (
            self.group is None or self.group == group,
            self.version is None or self.version == version,
            self.kind is None or self.kind == resource.get("kind"),
            self.name is None or self.name == resource["metadata"].get("name"),
            self.label_selector is None
            or all(labels.get(k) == v for k, v in self.label_selector.items()),
        )
        return all(checks)


def parse_selector(text: str) -> dict[str, str]:
    """Equality-based label selectors only (`a=b,c=d`), the kind the overlays use."""
    pairs = {}
    for term in text.split(","):
        key, sep, value = term.partition("=")
        if not sep or "!" in key or not key.strip():
            raise KustomizeError(f"unsupported label selector: {text}")
        pairs[key.strip()] = value.strip().removeprefix("=")
    return pairs


def load_documents(path: Path) -> list[Resource]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(folder: Path) -> list[Resource]:
    """The resources `kustomize build folder` would print, in order."""
    kustomization_path = folder / "kustomization.yaml"
    if not kustomization_path.exists():
        raise KustomizeError(f"no kustomization.yaml in {folder}")
    kustomization = yaml.safe_load(kustomization_path.read_text()) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kustomization_path}: unsupported fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        resources.extend(render(path) if path.is_dir() else load_documents(path))
    for patch in kustomization.get("patches", []):
        apply_patch(resources, folder, patch)
    for image in kustomization.get("images", []):
        set_image(resources, image)
    if "namespace" in kustomization:
        for resource in resources:
            resource.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return resources


def apply_patch(resources: list[Resource], folder: Path, entry: dict[str, Any]) -> None:
    unknown = set(entry) - {"path", "target"}
    if unknown or "path" not in entry:
        raise KustomizeError(f"unsupported patch entry: {entry}")
    documents = list(yaml.safe_load_all((folder / entry["path"]).read_text()))
    if len(documents) != 1:
        raise KustomizeError(f"{entry['path']}: a patch file holds exactly one patch")
    patch = documents[0]
    target = Target.from_dict(entry["target"]) if "target" in entry else None
    if isinstance(patch, list):
        if target is None:
            raise KustomizeError(f"{entry['path']}: a JSON 6902 patch needs a target")
        apply_to_targets(resources, target, entry["path"], lambda r: json6902(r, patch))
        return
    if target is None:
        target = Target(kind=patch.get("kind"), name=patch.get("metadata", {}).get("name"))
    apply_to_targets(resources, target, entry["path"], lambda r: merge(r, patch, keep_name=True))


def apply_to_targets(resources: list[Resource], target: Target, label: str, change: Any) -> None:
    matched = [i for i, r in enumerate(resources) if target.matches(r)]
    if not matched:
        raise KustomizeError(f"patch {label} matches no resource ({target})")
    for index in matched:
        resources[index] = change(resources[index])


def merge(base: Any, patch: Any, *, keep_name: bool = False) -> Any:
    """A strategic merge as kustomize does it for custom resources: maps merge key by key,
    `null` deletes, lists and scalars are replaced whole."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(base)
    for key, value in patch.items():
        wanted = value
        if keep_name and key == "metadata":
            wanted = {k: v for k, v in value.items() if k != "name"}
        if wanted is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), wanted)
    return result


def json6902(resource: Resource, operations: list[dict[str, Any]]) -> Resource:
    result = copy.deepcopy(resource)
    for operation in operations:
        op, path = operation.get("op"), str(operation.get("path", ""))
        parent, key = locate(result, path)
        if op == "test":
            if lookup(parent, key, path) != operation.get("value"):
                raise KustomizeError(f"test failed at {path}: {lookup(parent, key, path)!r}")
        elif op == "replace":
            lookup(parent, key, path)
            assign(parent, key, copy.deepcopy(operation["value"]), insert=False)
        elif op == "add":
            assign(parent, key, copy.deepcopy(operation["value"]), insert=True)
        elif op == "remove":
            lookup(parent, key, path)
            del parent[key]
        else:
            raise KustomizeError(f"unsupported JSON 6902 operation: {op}")
    return result


def locate(document: Any, path: str) -> tuple[Any, Any]:
    """The container holding the last path element, and that element (RFC 6901 pointer)."""
    if not path.startswith("/"):
        raise KustomizeError(f"not a JSON pointer: {path!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    node = document
    for part in parts[:-1]:
        node = lookup(node, index_of(node, part), path)
    return node, index_of(node, parts[-1])


def index_of(node: Any, part: str) -> Any:
    if isinstance(node, list):
        return len(node) if part == "-" else int(part)
    return part


def lookup(node: Any, key: Any, path: str) -> Any:
    try:
        return node[key]
    except (KeyError, IndexError, TypeError) as error:
        raise KustomizeError(f"path {path} does not exist") from error


def assign(parent: Any, key: Any, value: Any, *, insert: bool) -> None:
    if isinstance(parent, list) and insert:
        parent.insert(key, value)
    else:
        parent[key] = value


def set_image(resources: list[Resource], image: dict[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"unsupported images fields: {sorted(unknown)}")
    for resource in resources:
        for container in containers_of(resource):
            name = image_name(str(container.get("image", "")))
            if name != image["name"]:
                continue
            reference = image.get("newName", name)
            if "digest" in image:
                reference += "@" + image["digest"]
            elif "newTag" in image:
                reference += ":" + str(image["newTag"])
            container["image"] = reference


def image_name(reference: str) -> str:
    """`registry/name:tag@sha256:...` without its tag and digest."""
    without_digest = reference.split("@", 1)[0]
    last_slash = without_digest.rfind("/")
    colon = without_digest.rfind(":")
    return without_digest[:colon] if colon > last_slash else without_digest


def containers_of(resource: Resource) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in IMAGE_PATHS:
        node: Any = resource
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, list):
            found.extend(c for c in node if isinstance(c, dict))
    return found
