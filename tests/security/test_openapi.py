"""The shipped `openapi.json`: equal to what `holdfast.entrypoints.openapi` generates, and
documenting every route of the three functions (and nothing else)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from holdfast.entrypoints import openapi
from holdfast.entrypoints.problems import STATUS_BY_CODE
from tests.conftest import ROOT

SHIPPED = ROOT / "openapi.json"
METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}


def documented() -> set[tuple[str, str]]:
    paths = json.loads(SHIPPED.read_text())["paths"]
    return {(path, method.upper()) for path, item in paths.items() for method in item}


def test_the_shipped_document_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == openapi.render(openapi.document()), (
        "openapi.json is stale: run .venv/bin/python -m holdfast.entrypoints.openapi"
    )


def test_the_module_regenerates_the_file(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    subprocess.run(
        [sys.executable, "-m", "holdfast.entrypoints.openapi", str(target)],
        check=True,
        capture_output=True,
    )
    assert target.read_text() == SHIPPED.read_text()


def test_every_route_of_the_three_functions_is_documented_and_nothing_else() -> None:
    routes = {
        (openapi.openapi_path(rule)[0], method)
        for api in openapi.APIS
        for route in api.routes.values()
        for rule, method in ((route.rule, m) for m in route.methods)
    }
    export = ("/v1/ledger/export", "GET")  # LedgerApi streams it itself, after the same checks
    assert documented() == routes | {export}


def test_each_operation_names_the_scope_of_its_route() -> None:
    paths = json.loads(SHIPPED.read_text())["paths"]
    for (rule, method), scope in openapi.routes().items():
        operation = paths[openapi.openapi_path(rule)[0]][method.lower()]
        assert operation["security"] == [{"bearer": [scope]}]
        assert operation["x-required-scope"] == scope


def test_a_route_without_an_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(openapi.EXTRA_ROUTES, ("/v1/ledger/secret", "GET"), "ledger:read")
    with pytest.raises(ValueError, match="without an OpenAPI entry"):
        openapi.document()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "$ref"] + [
            r for v in value.values() for r in _refs(v)
        ]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_the_document_is_well_formed() -> None:
    document = json.loads(SHIPPED.read_text())
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    ]
    assert len(ids) == len(set(ids))
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")


def test_every_error_answer_is_problem_json_with_codes_of_its_status() -> None:
    document = json.loads(SHIPPED.read_text())
    shared = document["components"]["responses"]
    for item in document["paths"].values():
        for operation in item.values():
            assert {"401", "403", "500", "503"} <= set(operation["responses"])
            for status, given in operation["responses"].items():
                answer = shared[given["$ref"].rsplit("/", 1)[1]] if "$ref" in given else given
                assert "X-Content-Type-Options" in answer["headers"]
                if int(status) < 400:
                    continue
                schema = answer["content"]["application/problem+json"]["schema"]
                codes = schema["allOf"][1]["properties"]["code"]["enum"]
                assert codes and all(STATUS_BY_CODE[c] == int(status) for c in codes)
