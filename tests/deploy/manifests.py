"""Loading and validating the Knative manifests offline, three ways.

1. Typed models (cloudcoil): each document must build its kind's pydantic model. The models
   ignore unknown fields, so on their own they miss a misspelt key.
2. The Knative CRD OpenAPI schemas (../shared/schemas/knative, copied from the Knative
   repositories): types, enums and required fields, as the API server would check them.
   Built-in kinds (the relay's apps/v1 Deployment) have no CRD: their typed model's JSON
   Schema stands in (types and required fields of the Kubernetes OpenAPI it was made from).
   Most of those schemas do not forbid unknown fields either (nor does the API server for
   preserve-unknown-fields parts: a typo is silently dropped).
3. A strict walk: every key of a document must be a field of its typed model, all the way
   down, except inside free-form maps (labels, annotations, data). This is what catches
   `containerConcurency` or a probe under the wrong parent.
"""

from __future__ import annotations

import importlib
import types
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import yaml

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
SCHEMAS = ROOT.parent / "shared" / "schemas" / "knative"
Document = dict[str, Any]

# apiVersion/kind -> (cloudcoil model module and class, CRD schema file or "" for a built-in
# kind, whose model's JSON Schema is used instead)
KINDS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("apps/v1", "Deployment"): ("cloudcoil.models.kubernetes.apps.v1", "Deployment", ""),
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "cloudcoil.models.kubernetes.networking.v1",
        "NetworkPolicy",
        "",
    ),
    ("serving.knative.dev/v1", "Service"): (
        "cloudcoil.models.knative_serving.serving.v1",
        "Service",
        "serving-service.yaml",
    ),
    ("eventing.knative.dev/v1", "Broker"): (
        "cloudcoil.models.knative_eventing.eventing.v1",
        "Broker",
        "eventing-broker.yaml",
    ),
    ("eventing.knative.dev/v1", "Trigger"): (
        "cloudcoil.models.knative_eventing.eventing.v1",
        "Trigger",
        "eventing-trigger.yaml",
    ),
    ("sources.knative.dev/v1", "PingSource"): (
        "cloudcoil.models.knative_eventing.sources.v1",
        "PingSource",
        "eventing-pingsource.yaml",
    ),
    ("sources.knative.dev/v1", "SinkBinding"): (
        "cloudcoil.models.knative_eventing.sources.v1",
        "SinkBinding",
        "eventing-sinkbindings.yaml",
    ),
}


class ManifestError(ValueError):
    """A manifest that a cluster would reject, or that says something we did not mean."""


def base_files() -> list[Path]:
    return sorted((KNATIVE / "base").glob("*.yaml"))


def documents_of(path: Path) -> list[Document]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for document in documents:
        if not isinstance(document, dict):
            raise ManifestError(f"{path}: a document is not a mapping")
    return documents


def is_kustomization(document: Document) -> bool:
    return document.get("kind") == "Kustomization"


def key_of(document: Document) -> tuple[str, str]:
    key = (str(document.get("apiVersion")), str(document.get("kind")))
    if key not in KINDS:
        raise ManifestError(f"unexpected kind {key}: add it to tests/deploy/manifests.KINDS")
    return key


def model_of(document: Document) -> type[pydantic.BaseModel]:
    module_name, class_name, _ = KINDS[key_of(document)]
    with warnings.catch_warnings():
        # cloudcoil's generated Channel model shadows Resource.name: harmless, and not ours.
        warnings.filterwarnings("ignore", message="Field name .* shadows", category=UserWarning)
        module = importlib.import_module(module_name)
    model: type[pydantic.BaseModel] = getattr(module, class_name)
    return model


def validate_typed(document: Document) -> pydantic.BaseModel:
    """Build the cloudcoil model; raises pydantic.ValidationError on a wrong type."""
    return model_of(document).model_validate(document)


def crd_schema(document: Document) -> dict[str, Any]:
    _, _, schema_file = KINDS[key_of(document)]
    if not schema_file:
        return model_of(document).model_json_schema(by_alias=True)
    crd = yaml.safe_load((SCHEMAS / schema_file).read_text())
    version = str(document["apiVersion"]).rsplit("/", 1)[-1]
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise ManifestError(f"{schema_file} has no version {version}")


def schema_errors(document: Document) -> list[str]:
    """Every way the document breaks its CRD's OpenAPI schema (empty when it conforms)."""
    schema = crd_schema(document)
    built_in = not KINDS[key_of(document)][2]
    validator = (jsonschema.Draft202012Validator if built_in else jsonschema.Draft7Validator)(
        schema
    )
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def unknown_fields(document: Document) -> list[str]:
    """Paths of keys that are not fields of the document's typed model."""
    return list(_walk(document, model_of(document), ""))


def _walk(value: Any, annotation: Any, path: str) -> Iterator[str]:
    for model in _models_in(annotation):
        if isinstance(value, dict):
            yield from _walk_model(value, model, path)
            return
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006
        for index, item in enumerate(value):
            yield from _walk(item, args[0], f"{path}[{index}]")
    elif origin in (dict, typing.Dict) and isinstance(value, dict):  # noqa: UP006
        for key, item in value.items():
            yield from _walk(item, args[1], f"{path}.{key}")
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _walk(value, arg, path)
                return


def _walk_model(value: dict[str, Any], model: type[pydantic.BaseModel], path: str) -> Iterator[str]:
    if issubclass(model, pydantic.RootModel):
        yield from _walk(value, model.model_fields["root"].annotation, path)
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            yield where
        else:
            yield from _walk(item, fields[key].annotation, where)


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    candidates = [annotation, *typing.get_args(annotation)]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType, None):
        candidates = [annotation]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, pydantic.BaseModel)]


def free_form_paths(document: Document) -> list[str]:
    """Paths holding objects the typed model does not describe field by field (Any/dict of
    Any): the strict walk cannot vouch for them, so the tests keep this list short."""
    return list(_free_form(document, model_of(document), ""))


def _free_form(value: Any, annotation: Any, path: str) -> Iterator[str]:
    models = _models_in(annotation)
    if models and isinstance(value, dict):
        model = models[0]
        if issubclass(model, pydantic.RootModel):
            yield from _free_form(value, model.model_fields["root"].annotation, path)
            return
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        for key, item in value.items():
            if key in fields:
                where = f"{path}.{key}" if path else key
                yield from _free_form(item, fields[key].annotation, where)
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        yield from _free_form(value, inner[0], path) if len(inner) == 1 else iter(())
    elif origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006
        for index, item in enumerate(value):
            yield from _free_form(item, args[0], f"{path}[{index}]")
    elif origin in (dict, typing.Dict) and isinstance(value, dict):  # noqa: UP006
        if args[1] is Any and any(isinstance(v, dict) for v in value.values()):
            yield path
    elif annotation is Any and isinstance(value, dict):
        yield path
