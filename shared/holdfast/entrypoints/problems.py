"""The one place that turns errors into RFC 9457 problem+json (and rejection event data)."""

from __future__ import annotations

from typing import Any

from holdfast.domain.errors import BusinessError

STATUS_BY_CODE: dict[str, int] = {
    "validation_error": 422,
    "insufficient_funds": 422,
    "currency_mismatch": 422,
    "amount_exceeds_reserved": 422,
    "balance_overflow": 422,
    "account_not_found": 404,
    "transfer_not_found": 404,
    "entry_not_found": 404,
    "not_found": 404,
    "forbidden": 403,
    "insufficient_scope": 403,
    "exists_with_different_fields": 409,
    "account_not_open": 409,
    "account_not_empty": 409,
    "transfer_cancelled": 409,
    "transfer_expired": 409,
    "transfer_confirmed": 409,
    "unauthorized": 401,
    "malformed_request": 400,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "unavailable": 503,
}


def problem(code: str, title: str, detail: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    status = STATUS_BY_CODE[code]
    body: dict[str, Any] = {
        "type": f"https://holdfast.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return status, body


def from_business_error(error: BusinessError) -> tuple[int, dict[str, Any]]:
    return problem(error.code, error.title, error.detail)
