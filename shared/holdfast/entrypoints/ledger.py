"""The ledger function (auditors): entries and their inclusion proofs, balances, trial balance,
checkpoints, the public key, export.

Every route needs `ledger:read` and none writes: an auditor sees every account's entries and
can change nothing. The PingSource tick (`dev.knative.sources.ping`) seals new entries into
signed checkpoints. The export streams JSON Lines (`Reply` bodies are JSON documents, so
`LedgerApi` serves that one route itself, after the same token and scope check).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from cloudevents.http import CloudEvent

from holdfast.adapters.signing import public_pem
from holdfast.entrypoints import pages
from holdfast.entrypoints.runtime import Runtime
from holdfast.entrypoints.web import (
    Api,
    Call,
    EventReply,
    HttpProblem,
    Reply,
    Route,
)
from holdfast.services import ledger as service
from holdfast.services.views import rfc3339

SCOPE = "ledger:read"
EXPORT_PATH = "/v1/ledger/export"
PROOF_PATH = "/v1/ledger/entries/<int(max=9223372036854775807):seq>/proof"
PEM_MIMETYPE = "application/x-pem-file"
EXPORT_CHUNK_BYTES = 64 * 1024

# -- query parameters -----------------------------------------------------------------------


def _count(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise HttpProblem("validation_error", "Invalid input", f"{name} must be an integer >= 0")
    return int(raw)


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as error:
        raise HttpProblem(
            "validation_error",
            "Invalid input",
            f"{name} must be an RFC 3339 time (URL-encode + as %2B)",
        ) from error
    if value.tzinfo is None:
        raise HttpProblem(
            "validation_error", "Invalid input", f"{name} needs a time zone (Z or +hh:mm)"
        )
    try:
        value.astimezone(UTC)  # near year 1 or 9999 the UTC instant does not exist
    except OverflowError as error:
        raise HttpProblem("validation_error", "Invalid input", f"{name} is out of range") from error
    return value


# -- routes -----------------------------------------------------------------------------------


def list_entries(call: Call) -> Reply:
    query = call.request.args
    limit = pages.limit(query)
    page = service.list_entries(
        call.runtime.db,
        account_id=pages.uuid_param(query, "account_id"),
        transfer_id=pages.uuid_param(query, "transfer_id"),
        after=_count(query, "after", 0) or 0,
        limit=limit,
    )
    return Reply(
        200,
        {
            "entries": [entry.record() for entry in page],
            "next": str(page[-1].seq) if len(page) == limit else None,
        },
    )


def account_balance(call: Call) -> Reply:
    found = service.balance(
        call.runtime.db, call.args["account_id"], _time(call.request.args, "as_of")
    )
    return Reply(
        200,
        {
            "account_id": str(found.account_id),
            "currency": found.currency,
            "normal_balance": str(found.normal_balance),
            "as_of": rfc3339(found.as_of),
            "debits_posted": found.debits_posted,
            "credits_posted": found.credits_posted,
            "balance": {"posted": found.posted},
            "entries": found.entries,
        },
    )


def trial_balance(call: Call) -> Reply:
    at, totals = service.trial_balance(call.runtime.db, _time(call.request.args, "as_of"))
    currencies = [
        {
            "currency": currency,
            "debits": sides.get("debit", 0),
            "credits": sides.get("credit", 0),
            "balanced": sides.get("debit", 0) == sides.get("credit", 0),
        }
        for currency, sides in sorted(totals.items())
    ]
    return Reply(
        200,
        {
            "as_of": rfc3339(at),
            "currencies": currencies,
            "balanced": all(c["balanced"] for c in currencies),
        },
    )


def list_checkpoints(call: Call) -> Reply:
    query = call.request.args
    limit = pages.limit(query)
    page = service.list_checkpoints(
        call.runtime.db, after=_count(query, "after", 0) or 0, limit=limit
    )
    return Reply(
        200,
        {
            "checkpoints": [checkpoint.record() for checkpoint in page],
            "next": str(page[-1].number) if len(page) == limit else None,
        },
    )


def latest_checkpoint(call: Call) -> Reply:
    return Reply(200, service.get_checkpoint(call.runtime.db, None).record())


def get_checkpoint(call: Call) -> Reply:
    return Reply(200, service.get_checkpoint(call.runtime.db, call.args["number"]).record())


def entry_proof(call: Call) -> Reply:
    return Reply(200, service.prove(call.runtime.db, call.args["seq"]))


def public_key(call: Call) -> Reply:
    """JSON by default; the bare PEM of the current key to `Accept: application/x-pem-file`
    (preferred over JSON), so that `curl ... > key.pem` gives what `--public-key` reads."""
    current = call.runtime.ledger_signer
    accept = call.request.accept_mimetypes
    if accept.quality(PEM_MIMETYPE) > accept.quality("application/json"):
        return Reply(
            200,
            None,
            headers={"Vary": "Accept"},
            stream=[public_pem(current.public_key).encode()],
            mimetype=PEM_MIMETYPE,
        )
    keys = [
        {
            "key_id": key_id,
            "algorithm": "Ed25519",
            "public_key": pem,
            "first_used_at": rfc3339(first_used_at),
            "current": key_id == current.key_id,
        }
        for key_id, pem, first_used_at in service.known_keys(call.runtime.db)
    ]
    return Reply(
        200,
        {
            "key_id": current.key_id,
            "algorithm": "Ed25519",
            "public_key": public_pem(current.public_key),
            "keys": keys,
        },
        headers={"Vary": "Accept"},
    )


# -- the export (streamed) --------------------------------------------------------------------


def export(call: Call) -> Reply:
    """JSON Lines, streamed: entries and checkpoints, everything a verifier needs."""
    query = call.request.args
    span = service.export_range(
        call.runtime.db, _count(query, "from", None), _count(query, "to", None)
    )
    return Reply(
        200,
        None,
        headers={
            "Content-Disposition": f'attachment; filename="ledger-{span.first}-{span.last}.jsonl"'
        },
        stream=_chunks(service.export_lines(call.runtime.db, span)),
        mimetype="application/x-ndjson",
    )


def _chunks(lines: Iterator[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for text in lines:
        line = text + "\n"
        buffer.append(line)
        size += len(line)
        if size >= EXPORT_CHUNK_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


# -- CloudEvents ------------------------------------------------------------------------------


def on_tick(runtime: Runtime, event: CloudEvent) -> EventReply:
    """The PingSource's tick: seal what is queued (bounded: a few checkpoints at most)."""
    service.seal_pending(runtime.db, runtime.ledger_signer)
    service.measure_queue(runtime.db)
    return EventReply()


api = Api(
    "ledger",
    [
        Route("/v1/ledger/entries", ("GET",), SCOPE, list_entries),
        Route(PROOF_PATH, ("GET",), SCOPE, entry_proof),
        Route("/v1/ledger/accounts/<uuid:account_id>/balance", ("GET",), SCOPE, account_balance),
        Route("/v1/ledger/trial-balance", ("GET",), SCOPE, trial_balance),
        Route("/v1/ledger/checkpoints", ("GET",), SCOPE, list_checkpoints),
        Route("/v1/ledger/checkpoints/latest", ("GET",), SCOPE, latest_checkpoint),
        Route(
            "/v1/ledger/checkpoints/<int(max=9223372036854775807):number>",
            ("GET",),
            SCOPE,
            get_checkpoint,
        ),
        Route("/v1/ledger/public-key", ("GET",), SCOPE, public_key),
        Route(EXPORT_PATH, ("GET",), SCOPE, export),
    ],
    events={"dev.knative.sources.ping": on_tick},
)

__all__ = ["api"]
