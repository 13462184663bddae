"""Cursor pagination: opaque `after` cursors and the `limit` rule shared by every list."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from holdfast import limits
from holdfast.entrypoints.web import HttpProblem


def limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit", str(limits.page_limit_default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= limits.page_limit_max:
        raise HttpProblem(
            "validation_error", "Invalid input", f"limit must be 1..{limits.page_limit_max}"
        )
    return int(raw)


def encode_time_cursor(at: datetime, id_: UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{id_}".encode()).decode().rstrip("=")


def decode_time_cursor(raw: str | None) -> tuple[datetime, UUID] | None:
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        at, id_ = text.split("|")
        return datetime.fromisoformat(at), UUID(id_)
    except (ValueError, UnicodeDecodeError) as error:
        raise HttpProblem(
            "validation_error", "Invalid input", "after is not a valid cursor"
        ) from error


def uuid_param(query: Mapping[str, str], name: str) -> UUID | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError as error:
        raise HttpProblem("validation_error", "Invalid input", f"{name} must be a UUID") from error
