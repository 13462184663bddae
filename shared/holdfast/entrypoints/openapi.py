"""The OpenAPI 3.1 document of Holdfast's public HTTP API, generated from the route tables.

    python -m holdfast.entrypoints.openapi [FILE]     (default: openapi.json at the repo root)

Paths, methods and scopes come from the three `Api` objects (`accounts.api`, `transfers.api`,
`ledger.api`) plus the ledger's streamed export; request bodies from `entrypoints.schemas`;
response bodies from `entrypoints.responses`; problem codes from `entrypoints.problems`.
What a route table cannot say (summaries, query parameters, which codes each operation can
answer) is in `OPERATIONS` below, keyed by the same rule and method: `document()` refuses a
route without an entry, or an entry without a route, so the document cannot drift from the
code. `tests/security/test_openapi.py` checks the shipped file equals `document()`.

Every error answer is `application/problem+json` whose `code` is limited to the codes that
operation can give for that status; every answer carries the security headers
(`web.SECURITY_HEADERS`). Probes (`/healthz`, `/readyz`), `/metrics` and CloudEvents at
`POST /` are per function and not behind the public gateway, so they are not in the document.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from holdfast import limits
from holdfast.domain.money import ISO_4217
from holdfast.entrypoints import accounts, ledger, responses, schemas, transfers
from holdfast.entrypoints.problems import STATUS_BY_CODE
from holdfast.entrypoints.web import SECURITY_HEADERS, Api

OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{model}"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PATH = REPO_ROOT / "openapi.json"
APIS: tuple[Api, ...] = (accounts.api, transfers.api, ledger.api)
# Routes served outside the three route tables (none today; kept for the completeness check).
EXTRA_ROUTES: dict[tuple[str, str], str] = {}
SCOPES = {
    "accounts:read": "read accounts (your own; every account with operator)",
    "accounts:write": "open, freeze and close accounts (unfreeze needs operator)",
    "transfers:read": "read and list transfers",
    "transfers:write": "reserve, confirm, cancel and batch transfers",
    "ledger:read": "the auditor's read-only scope: every ledger read, no write anywhere",
    "operator": "act on any customer's accounts and transfers (bank staff, back office)",
}
JSON = "application/json"
PROBLEM = "application/problem+json"
NDJSON = "application/x-ndjson"
# Answers every `/v1` operation shares, kept once under components/responses.
SHARED_ANSWERS: dict[tuple[int, tuple[str, ...]], str] = {
    (401, ("unauthorized",)): "Unauthorized",
    (403, ("insufficient_scope",)): "InsufficientScope",
    (413, ("payload_too_large",)): "PayloadTooLarge",
    (429, ("rate_limited",)): "RateLimited",
    (500, ("internal_error",)): "InternalError",
    (503, ("unavailable",)): "Unavailable",
}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    """What the route table does not say about one route."""

    operation_id: str
    summary: str
    ok: tuple[int, type[BaseModel] | None]  # success status and body (None: the export)
    errors: Mapping[int, tuple[str, ...]]  # status -> the problem codes it can carry
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_schema: dict[str, Any] | None = None  # a body no model describes (cancel)
    query: tuple[Query, ...] = ()
    description: str = ""
    # Another representation of the success answer, by content negotiation: (type, what).
    alternative: tuple[str, str] | None = None
    # The common answers of the `/v1` dispatcher (token, scope, size, rate, failures).
    common: Mapping[int, tuple[str, ...]] = field(
        default_factory=lambda: {
            401: ("unauthorized",),
            403: ("insufficient_scope",),
            413: ("payload_too_large",),
            429: ("rate_limited",),
            500: ("internal_error",),
            503: ("unavailable",),
        }
    )


# -- query parameters ---------------------------------------------------------------------

UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid"}
LIMIT = Query(
    "limit",
    {
        "type": "integer",
        "minimum": 1,
        "maximum": limits.page_limit_max,
        "default": limits.page_limit_default,
    },
    "page size",
)
NUMBER_MAX = 10**18 - 1  # 18 digits: what `ledger._count` takes
# `after=` (empty) is taken as "from the start", like leaving it out.
SEQ_CURSOR = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": NUMBER_MAX},
        {"type": "string", "maxLength": 0},
    ],
    "default": 0,
}
AS_OF = Query(
    "as_of",
    {"type": "string", "format": "date-time"},
    "RFC 3339 time with a zone (`Z` or `+hh:mm`; URL-encode `+` as %2B); default: now",
)
CHECKPOINT_NUMBER = {"type": "integer", "minimum": 1, "maximum": NUMBER_MAX}
# `from=`/`to=` (empty) are taken as their defaults, like leaving them out.
EXPORT_BOUND = {"anyOf": [CHECKPOINT_NUMBER, {"type": "string", "maxLength": 0}]}


def _ledger_answers(*extra: tuple[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    return {422: ("validation_error",), **dict(extra)}


# -- the operations -----------------------------------------------------------------------

ACCOUNT_PATH = "/v1/accounts/<uuid:account_id>"
TRANSFER_PATH = "/v1/transfers/<uuid:transfer_id>"
NOT_FOUND_ACCOUNT = (404, ("account_not_found", "not_found"))


def _status_change(action: str, summary: str, errors: dict[int, tuple[str, ...]]) -> Operation:
    return Operation(
        f"{action}_account",
        summary,
        ok=(200, responses.Account),
        errors={404: ("account_not_found", "not_found"), **errors},
        description="No body is read. Again: 200 with the account as it is.",
    )


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/v1/accounts", "POST"): Operation(
        "open_account",
        "Open an account",
        ok=(201, responses.Account),
        body=schemas.AccountIn,
        errors={
            400: ("malformed_request",),
            403: ("insufficient_scope", "forbidden"),
            409: ("exists_with_different_fields",),
            422: ("validation_error",),
        },
        description=(
            "Idempotent by `id`: the same request again answers 201 with the same body. "
            "Without `operator`, `owner` must be the token's `sub` (403 `forbidden`)."
        ),
    ),
    (ACCOUNT_PATH, "GET"): Operation(
        "get_account",
        "Read an account",
        ok=(200, responses.Account),
        errors=dict([NOT_FOUND_ACCOUNT]),
        description="Another customer's account answers 404, exactly like an unknown id.",
    ),
    (f"{ACCOUNT_PATH}/freeze", "POST"): _status_change(
        "freeze", "Freeze an account", {409: ("account_not_open",)}
    ),
    (f"{ACCOUNT_PATH}/unfreeze", "POST"): _status_change(
        "unfreeze",
        "Lift a freeze (operator)",
        {403: ("insufficient_scope", "forbidden"), 409: ("account_not_open",)},
    ),
    (f"{ACCOUNT_PATH}/close", "POST"): _status_change(
        "close", "Close an account", {409: ("account_not_empty",)}
    ),
    ("/v1/transfers", "POST"): Operation(
        "reserve_transfer",
        "Reserve a transfer (TCC try), or transfer at once with `immediate`",
        ok=(201, responses.Transfer),
        body=schemas.ReserveIn,
        errors={
            400: ("malformed_request",),
            404: ("account_not_found", "transfer_not_found"),
            409: ("account_not_open", "exists_with_different_fields", "transfer_cancelled"),
            422: (
                "validation_error",
                "insufficient_funds",
                "currency_mismatch",
                "balance_overflow",
            ),
        },
        description=(
            "Give `debit_account_id`, `credit_account_id` and `amount`, or `legs` (1..16). "
            "A leg without `currency` is in the transfer's `currency`; legs naming their own "
            "currencies may differ (a foreign-exchange payment through position accounts: "
            "omit the top-level `currency`, which the answer then shows as null). Each leg's "
            "two accounts hold its currency (422 `currency_mismatch` otherwise, and when a "
            "leg names a currency other than the top-level one); all legs are reserved, "
            "confirmed, cancelled or expired together. Idempotent by `id`: the same request "
            "again answers 201 with the transfer as the reserve left it (compared as sent, "
            "currencies included). Debiting another customer's account answers 404 "
            "`account_not_found`."
        ),
    ),
    ("/v1/transfers", "GET"): Operation(
        "list_transfers",
        "List transfers (newest first, cursor paginated)",
        ok=(200, responses.TransferPage),
        errors={422: ("validation_error",)},
        query=(
            Query("account_id", UUID_SCHEMA, "only this account's transfers"),
            Query(
                "state",
                {"type": "string", "enum": ["reserved", "confirmed", "cancelled", "expired"]},
                "only transfers in this state",
            ),
            Query("after", {"type": "string"}, "the `next` cursor of the previous page"),
            LIMIT,
        ),
        description="Without `operator`, only transfers touching the token's own accounts.",
    ),
    ("/v1/transfers:batch", "POST"): Operation(
        "batch_transfers",
        "Reserve, confirm and cancel many transfers in one call",
        ok=(200, responses.BatchResults),
        body=schemas.BatchIn,
        errors={400: ("malformed_request",), 422: ("validation_error",)},
        description=(
            'Each operation is `{"op": "reserve"|"confirm"|"cancel", ...}` with the '
            "fields of `ReserveIn`, `ConfirmEventIn` or `CancelEventIn`; each is checked on "
            "its own and answered in `results`, in order, with the body or the problem the "
            "single call would have given."
        ),
    ),
    (TRANSFER_PATH, "GET"): Operation(
        "get_transfer",
        "Read a transfer",
        ok=(200, responses.Transfer),
        errors={404: ("transfer_not_found", "not_found")},
        description="A reservation past `expires_at` reads as `expired` at once.",
    ),
    (f"{TRANSFER_PATH}/confirm", "POST"): Operation(
        "confirm_transfer",
        "Confirm a reservation (TCC confirm), optionally for less",
        ok=(200, responses.Transfer),
        body=schemas.ConfirmIn,
        body_required=False,
        errors={
            400: ("malformed_request",),
            404: ("transfer_not_found", "not_found"),
            409: ("transfer_cancelled", "transfer_expired", "exists_with_different_fields"),
            422: ("validation_error", "amount_exceeds_reserved", "balance_overflow"),
        },
        description="`amount` (single-leg only) confirms part; the rest is released.",
    ),
    (f"{TRANSFER_PATH}/cancel", "POST"): Operation(
        "cancel_transfer",
        "Cancel a reservation (TCC cancel); fences an id never reserved",
        ok=(200, responses.Transfer),
        body_schema={"description": "ignored: any JSON value, or no body"},
        body_required=False,
        errors={
            400: ("malformed_request",),
            404: ("transfer_not_found", "not_found"),
            409: ("transfer_confirmed",),
        },
        description=(
            "Cancel of an id never reserved answers 200 `cancelled` and fences the id (a later "
            "reserve is 409 `transfer_cancelled`); of an expired one, 200 `expired`."
        ),
    ),
    ("/v1/ledger/entries", "GET"): Operation(
        "list_entries",
        "Sealed ledger entries in ledger order",
        ok=(200, responses.EntryPage),
        errors=_ledger_answers(),
        query=(
            Query("account_id", UUID_SCHEMA, "only this account's entries"),
            Query("transfer_id", UUID_SCHEMA, "only this transfer's entries"),
            Query("after", SEQ_CURSOR, "entries after this seq"),
            LIMIT,
        ),
    ),
    (ledger.PROOF_PATH, "GET"): Operation(
        "prove_entry",
        "An entry's inclusion proof: the signed checkpoint and the audit path to its root",
        ok=(200, responses.EntryProof),
        errors={404: ("entry_not_found",)},
        description=(
            "404 `entry_not_found` for a seq not sealed yet (or none at all). "
            "`holdfast audit prove FILE --public-key KEY` checks the answer offline."
        ),
    ),
    ("/v1/ledger/accounts/<uuid:account_id>/balance", "GET"): Operation(
        "ledger_balance",
        "An account's posted balance at a time, from its entries",
        ok=(200, responses.AccountBalance),
        errors=_ledger_answers(NOT_FOUND_ACCOUNT),
        query=(AS_OF,),
    ),
    ("/v1/ledger/trial-balance", "GET"): Operation(
        "trial_balance",
        "Per currency, total debits and credits at a time",
        ok=(200, responses.TrialBalance),
        errors=_ledger_answers(),
        query=(AS_OF,),
    ),
    ("/v1/ledger/checkpoints", "GET"): Operation(
        "list_checkpoints",
        "Signed checkpoints, oldest first",
        ok=(200, responses.CheckpointPage),
        errors=_ledger_answers(),
        query=(Query("after", SEQ_CURSOR, "checkpoints after this number"), LIMIT),
    ),
    ("/v1/ledger/checkpoints/latest", "GET"): Operation(
        "latest_checkpoint",
        "The latest signed checkpoint",
        ok=(200, responses.Checkpoint),
        errors={404: ("not_found",)},
    ),
    ("/v1/ledger/checkpoints/<int(max=9223372036854775807):number>", "GET"): Operation(
        "get_checkpoint",
        "One signed checkpoint",
        ok=(200, responses.Checkpoint),
        errors={404: ("not_found",)},
    ),
    ("/v1/ledger/public-key", "GET"): Operation(
        "ledger_public_key",
        "The checkpoint signing keys (a convenience: pin keys obtained out of band)",
        ok=(200, responses.PublicKey),
        errors={},
        description=(
            "JSON by default. To `Accept: application/x-pem-file` (preferred over JSON), the "
            "bare PEM of the current key. `--public-key` of `holdfast audit` takes either."
        ),
        alternative=(ledger.PEM_MIMETYPE, "the current key, PEM (SubjectPublicKeyInfo)"),
    ),
    (ledger.EXPORT_PATH, "GET"): Operation(
        "export_ledger",
        "Stream checkpoints and entries as JSON Lines for `holdfast audit verify`",
        ok=(200, None),
        errors={422: ("validation_error",)},
        query=(
            Query("from", EXPORT_BOUND, "first checkpoint (default 1)"),
            Query("to", EXPORT_BOUND, "last checkpoint (default and at most: the latest)"),
        ),
        description="Records: `export` header, each `checkpoint` then its `entry` lines, `end`.",
    ),
}


# -- the document -------------------------------------------------------------------------


def routes() -> dict[tuple[str, str], str]:
    """(werkzeug rule, method) -> scope, for every route the three functions answer."""
    found: dict[tuple[str, str], str] = {}
    for api in APIS:
        for route in api.routes.values():
            for method in route.methods:
                found[(route.rule, method)] = route.scope
    return {**found, **EXTRA_ROUTES}


def openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """`/v1/accounts/<uuid:account_id>` -> `/v1/accounts/{account_id}` and its parameters."""
    parameters: list[dict[str, Any]] = []
    path = rule
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        converter, _, name = path[start + 1 : end].rpartition(":")
        converter = converter.split("(", 1)[0]  # int(max=...): the bound is in the schema
        schema = {"uuid": UUID_SCHEMA, "int": CHECKPOINT_NUMBER}.get(converter)
        if schema is None:
            raise ValueError(f"no schema for the path converter {converter!r} in {rule}")
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        path = path[:start] + "{" + name + "}" + path[end + 1 :]
    return path, parameters


def document() -> dict[str, Any]:
    table = routes()
    missing = sorted(set(table) - set(OPERATIONS))
    stale = sorted(set(OPERATIONS) - set(table))
    if missing or stale:
        raise ValueError(
            f"routes without an OpenAPI entry: {missing}; entries without a route: {stale}"
        )
    components = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for (rule, method), scope in sorted(table.items()):
        path, parameters = openapi_path(rule)
        paths.setdefault(path, {})[method.lower()] = _operation(
            OPERATIONS[(rule, method)], scope, parameters
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Holdfast",
            "version": "1",
            "summary": "Accounts, TCC transfers and a signed double-entry ledger.",
            "description": DESCRIPTION,
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "`holdfast dev`"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "accounts", "description": "the accounts function"},
            {"name": "transfers", "description": "the transfers function"},
            {"name": "ledger", "description": "the ledger function (auditors, read-only)"},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT (EdDSA or ES256) from the configured issuer, with "
                    "`sub`, `exp`, `iss`, `aud` and a space-separated `scope` claim. Scopes:\n"
                    + "\n".join(f"- `{name}`: {text}" for name, text in SCOPES.items()),
                }
            },
            "headers": {name: _header(value) for name, value in SECURITY_HEADERS.items()},
            "responses": {
                name: _problem_answer(status, codes)
                for (status, codes), name in SHARED_ANSWERS.items()
            },
        },
    }


DESCRIPTION = (
    "The public HTTP API of Holdfast (the contract: `CONTRACT.md`; the threat model: "
    "`SECURITY.md`). Amounts are integers in the currency's minor unit, "
    f"{limits.amount_minor_min}..{limits.amount_minor_max}; ids are client-chosen UUIDs and "
    "make every write idempotent. Errors are RFC 9457 problem+json with a stable `code`. "
    "Each operation names the one scope it needs; without `operator` a token acts only on "
    "accounts whose `owner` is its `sub`, and other customers' accounts and transfers answer "
    "404 like unknown ids. Bodies over "
    f"{limits.request_body_bytes_max} bytes are refused (413) before they are read. "
    "Response schemas are closed so that the fuzz run catches drift, but the contract only "
    "ever adds fields: clients must ignore fields they do not know."
)


def _header(value: str) -> dict[str, Any]:
    return {"required": True, "schema": {"type": "string", "const": value}}


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        schemas.AccountIn,
        schemas.ReserveIn,
        schemas.ConfirmIn,
        schemas.ConfirmEventIn,
        schemas.CancelEventIn,
        schemas.BatchIn,
        responses.Problem,
        responses.Account,
        responses.Transfer,
        responses.TransferPage,
        responses.BatchResults,
        responses.EntryPage,
        responses.EntryProof,
        responses.AccountBalance,
        responses.TrialBalance,
        responses.Checkpoint,
        responses.CheckpointPage,
        responses.PublicKey,
    ]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMA_REF)
    found: dict[str, Any] = top["$defs"]
    _refine(found)
    return dict(sorted(found.items()))


def _refine(found: dict[str, Any]) -> None:
    """What the request models' validators check but their JSON Schema cannot say."""
    for name in ("AccountIn", "ReserveIn", "LegIn"):
        _currency_enum(found[name]["properties"]["currency"])
    for name in ("AccountIn", "ReserveIn"):
        properties = found[name]["properties"]
        properties["metadata"]["maxProperties"] = limits.metadata_keys_max
        properties["metadata"]["description"] = (
            f"free-form; at most {limits.metadata_keys_max} keys and "
            f"{limits.metadata_bytes_max} bytes as JSON; sealed (AES-GCM) at rest"
        )
    operations = found["BatchIn"]["properties"]["operations"]
    operations["items"]["description"] = (
        '`{"op": "reserve"|"confirm"|"cancel", ...}` plus the fields of ReserveIn, '
        "ConfirmEventIn or CancelEventIn; checked one by one (a failed check is a problem "
        "in `results`, not a 422 of the whole batch)"
    )


def _currency_enum(schema: dict[str, Any]) -> None:
    """Name the accepted ISO 4217 codes on a currency's string schema (the optional ones
    are `anyOf` a string and null: the list goes on the string)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["enum"] = sorted(ISO_4217)


def _operation(spec: Operation, scope: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    tag = "ledger" if scope == ledger.SCOPE else scope.partition(":")[0]
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "tags": [tag],
        "security": [{"bearer": [scope]}],
        "x-required-scope": scope,
    }
    if spec.description:
        operation["description"] = spec.description
    query = [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for q in spec.query
    ]
    if parameters or query:
        operation["parameters"] = parameters + query
    if spec.body is not None or spec.body_schema is not None:
        schema = spec.body_schema or {"$ref": SCHEMA_REF.format(model=_name(spec.body))}
        operation["requestBody"] = {
            "required": spec.body_required,
            "content": {JSON: {"schema": schema}},
        }
    errors = dict(spec.common)
    for status, codes in spec.errors.items():
        errors[status] = tuple(dict.fromkeys((*errors.get(status, ()), *codes)))
    if parameters:  # a path parameter of the wrong form matches no route
        errors[404] = tuple(dict.fromkeys((*errors.get(404, ()), "not_found")))
    answers = {str(spec.ok[0]): _success(spec)}
    for status in sorted(errors):
        shared = SHARED_ANSWERS.get((status, errors[status]))
        answers[str(status)] = (
            {"$ref": f"#/components/responses/{shared}"}
            if shared
            else _problem_answer(status, errors[status])
        )
    operation["responses"] = answers
    return operation


def _name(model: type[BaseModel] | None) -> str:
    if model is None:
        raise ValueError("no model")
    return model.__name__


def _security_headers(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = {
        name: {"$ref": f"#/components/headers/{name}"} for name in SECURITY_HEADERS
    }
    return {**headers, **(extra or {})}


def _success(spec: Operation) -> dict[str, Any]:
    status, model = spec.ok
    if model is None:  # the export
        return {
            "description": "JSON Lines: the export header, checkpoints and entries, the end",
            "headers": _security_headers(
                {"Content-Disposition": {"required": True, "schema": {"type": "string"}}}
            ),
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    content: dict[str, Any] = {JSON: {"schema": {"$ref": SCHEMA_REF.format(model=model.__name__)}}}
    headers = _security_headers()
    if spec.alternative is not None:
        mimetype, what = spec.alternative
        content[mimetype] = {"schema": {"type": "string", "description": what}}
        headers = _security_headers({"Vary": {"required": True, "schema": {"const": "Accept"}}})
    return {
        "description": "Created" if status == 201 else "OK",
        "headers": headers,
        "content": content,
    }


def _problem_answer(status: int, codes: Iterable[str]) -> dict[str, Any]:
    codes = list(codes)
    wrong = [c for c in codes if STATUS_BY_CODE.get(c) != status]
    if wrong:
        raise ValueError(f"codes {wrong} are not answered with {status}")
    extra: dict[str, Any] = {}
    if status == 401:
        extra["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
    if status == 429:
        extra["Retry-After"] = {"required": True, "schema": {"type": "string"}}
    if status == 503:
        extra["Retry-After"] = {"required": False, "schema": {"type": "string"}}
    return {
        "description": ", ".join(f"`{code}`" for code in codes),
        "headers": _security_headers(extra),
        "content": {
            PROBLEM: {
                "schema": {
                    "allOf": [
                        {"$ref": SCHEMA_REF.format(model="Problem")},
                        {
                            "properties": {
                                "status": {"const": status},
                                "code": {"enum": codes},
                            }
                        },
                    ]
                }
            }
        },
    }


def render(value: dict[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, final newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
    target.write_text(render(document()))
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
