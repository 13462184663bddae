"""The metric names a PromQL expression reads, without a PromQL parser (none is on PyPI for
Python 3.11 without a native build): strings, label matchers, ranges and label lists are cut
out, then every identifier not called as a function and not a keyword is a metric name.
`promtool check rules` vouches for the syntax; this only has to find the names in valid
expressions."""

from __future__ import annotations

import re

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
RANGE = re.compile(r"\[[^\[\]]*\]")
LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right", "atan2", "start", "end"}
)
# Grafana's variables, replaced by something PromQL accepts before checking a panel.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def grafana_to_promql(expr: str, variables: dict[str, str] | None = None) -> str:
    """A panel's expression with Grafana's macros and the dashboard's variables filled in."""
    text = expr
    for name, value in {**GRAFANA_VARIABLES, **(variables or {})}.items():
        text = text.replace(name, value)
    return text


def metric_names(expr: str) -> set[str]:
    text = STRING.sub('""', expr)
    text = MATCHERS.sub(" ", text)
    text = RANGE.sub(" ", text)
    text = LABEL_LIST.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names
