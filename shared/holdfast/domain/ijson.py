"""Strict reading of I-JSON (RFC 7493), so that no two parsers can read a record differently.

Python's `json` keeps the last of two members with the same name, other parsers the first or
neither; an export line with `"amount"` twice could then mean two different entries to two
verifiers. `loads` refuses, besides malformed JSON:
- text that is not UTF-8 (RFC 7493 §2.1), including escaped lone surrogates (`"\\ud800"`);
- an object with two members of the same name (after unescaping; §2.3);
- numbers that are not exact in IEEE 754 double precision: integers beyond ±(2**53 - 1), and
  numbers beyond the double range (`1e400`), and the non-numbers `NaN`, `Infinity`,
  `-Infinity` that Python's `json` would otherwise accept (§2.2). Other fractions are read as
  floats (the ledger's records hold none, and refuse them).
"""

from __future__ import annotations

import json
import math
from typing import Any

INTEGER_ABS_MAX = 2**53 - 1


class NotIJson(ValueError):
    """The text is not an I-JSON value; the message says why."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise NotIJson(f"the member name {name!r} appears twice in one object")
            seen.add(name)
    return found


def _string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise NotIJson(f"a string holds an unpaired surrogate: {text!r}") from error


def _integer(text: str) -> int:
    value = int(text)
    if abs(value) > INTEGER_ABS_MAX:
        raise NotIJson(f"the integer {text} is beyond 2**53 - 1 (not exact in every parser)")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotIJson(f"the number {text} is beyond IEEE 754 double precision")
    return value


def _constant(name: str) -> Any:
    raise NotIJson(f"{name} is not JSON")


def _strings(value: Any) -> None:
    """Refuse lone surrogates in member names and string values."""
    if isinstance(value, str):
        _string(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item)
    elif isinstance(value, dict):
        for name, item in value.items():
            _string(name)
            _strings(item)


# Built once: json.loads with hooks builds a decoder per call, which costs more than parsing.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_int=_integer,
    parse_float=_fraction,
    parse_constant=_constant,
)


def loads(raw: bytes | str) -> Any:
    """One I-JSON value, or NotIJson."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        raise NotIJson(f"not UTF-8: {error}") from error
    try:
        value = _DECODER.decode(text)
    except NotIJson:
        raise
    except (ValueError, RecursionError) as error:
        raise NotIJson(f"not JSON: {error}") from error
    if "\\u" in text:  # strict UTF-8 holds no surrogate: only an escape can make one
        _strings(value)
    return value
