"""Static checks of the Containerfile and .containerignore (no container engine here).

A Containerfile is read as its instructions (continued lines joined, comments dropped) and
split into stages; .containerignore patterns are matched as Docker does it (the last
matching pattern wins, `!` re-includes, `**` crosses folders).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\b")
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|make|build-essential|apt-get install|apk add|pip install)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [argument for word, argument in self.instructions if word == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, argument = stripped.partition(" ")
            found.append((word.upper(), argument.strip()))
    return found


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    for word, argument in instructions(text):
        if word == "FROM":
            parts = argument.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append(Stage(parts[0], name))
        elif result:
            result[-1].instructions.append((word, argument))
    return result


def problems(text: str) -> list[str]:
    found: list[str] = []
    all_stages = stages(text)
    if len(all_stages) < 2:
        found.append("not multi-stage: build tools would stay in the image")
    names = {s.name for s in all_stages if s.name}
    for stage in all_stages:
        if stage.base not in names and not DIGEST.search(stage.base):
            found.append(f"base {stage.base} is not pinned by a sha256 digest")
    if not all_stages:
        return found
    final = all_stages[-1]
    users = final.values("USER")
    if not users or users[-1].split(":")[0] in {"0", "root", ""}:
        found.append("the final stage does not switch to a non-root USER")
    elif not users[-1].split(":")[0].isdigit():
        found.append("USER is not numeric: Kubernetes cannot check runAsNonRoot")
    for run in final.values("RUN"):
        if BUILD_TOOLS.search(run):
            found.append(f"the final stage installs or builds: {run[:60]}")
    entry = " ".join(final.values("ENTRYPOINT") + final.values("CMD"))
    if "functions_framework" not in entry:
        found.append("the entry point is not functions-framework")
    return found


def final_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for argument in stages(text)[-1].values("ENV"):
        for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", argument):
            env[name] = value.strip('"')
    return env


def copy_sources(text: str) -> list[str]:
    """Build-context paths the Containerfile copies (not --from another stage)."""
    sources = []
    for stage in stages(text):
        for argument in stage.values("COPY"):
            parts = [p for p in argument.split() if not p.startswith("--")]
            if "--from=" not in argument:
                sources.extend(parts[:-1])
    return sources


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .containerignore keeps `path` (relative, with slashes) out of the context."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if matches(path, body.strip("/")):
            excluded = not negated
    return excluded


def matches(path: str, pattern: str) -> bool:
    """A pattern matches the path itself or one of its parent folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    regex = re.compile(_translate(pattern))
    return any(regex.fullmatch(c) for c in candidates)


def _translate(pattern: str) -> str:
    pieces = pattern.split("**")
    return ".*".join(fnmatch.translate(p).removeprefix("(?s:").removesuffix(")\\Z") for p in pieces)


def ignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
