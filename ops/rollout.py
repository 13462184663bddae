"""Gradual rollout of the functions by Knative traffic splitting (docs/operations.md).

Takes the rendered manifests (`kubectl kustomize knative/overlays/prod`) and writes them
again with, on each function's Knative Service, a revision name of its own
(`<service>-<release>`) and a `traffic` block:

    split    --release R --stable S --percent P   S keeps 100 - P % (tag `stable`), the
                                                  candidate R takes P % (tag `candidate`)
    promote  --release R                          R takes 100 % (tag `stable`)
    rollback --release R --stable S               S takes 100 % again; R stays at 0 % under
                                                  its tag, reachable for debugging

Every step keeps the template (image and revision name R) unchanged, so Knative makes one
revision per release and moving traffic never starts another. The output is checked before
it is written (percents 0..100 summing to 100, one target each, unique tags, revisions of the
same Service); `tests/ops` validates it like every other manifest.

    gate --prometheus URL --release R [--max-error-ratio F] [--max-p99-s F]

asks Prometheus whether the candidate's revisions are healthy (5xx share and p99 latency,
by the `revision` label the scrape config takes from the pod's
`serving.knative.dev/revision` label); exit 1 names what is not.

Needs Python 3.11 and PyYAML only, so the delivery pipeline runs it without the project.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

FUNCTIONS = ("accounts", "transfers", "ledger")
RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
Document = dict[str, Any]


class RolloutError(ValueError):
    """A split that Knative would refuse, or that would not mean what was asked."""


def revision(service: str, release: str) -> str:
    if not RELEASE.match(release):
        raise RolloutError(f"release {release!r}: lowercase letters, digits and dashes, <= 42")
    return f"{service}-{release}"


def target(name: str, percent: int, tag: str) -> dict[str, Any]:
    return {"revisionName": name, "percent": percent, "tag": tag}


def traffic_for(
    service: str, step: str, release: str, stable: str | None, percent: int
) -> list[dict[str, Any]]:
    candidate = revision(service, release)
    if step == "promote":
        return [target(candidate, 100, "stable")]
    if stable is None:
        raise RolloutError(f"{step} needs --stable (the release that serves now)")
    if stable == release:
        raise RolloutError("the stable and the candidate release are the same")
    if step == "rollback":
        return [target(revision(service, stable), 100, "stable"), target(candidate, 0, "candidate")]
    if not 0 <= percent <= 100:
        raise RolloutError(f"percent {percent} is not within 0..100")
    return [
        target(revision(service, stable), 100 - percent, "stable"),
        target(candidate, percent, "candidate"),
    ]


def apply_step(
    documents: list[Document],
    step: str,
    release: str,
    stable: str | None = None,
    percent: int = 0,
) -> list[Document]:
    """The documents with every function Service pinned to `release` and its traffic set."""
    result = copy.deepcopy(documents)
    seen = set()
    for document in result:
        name = document.get("metadata", {}).get("name")
        if document.get("kind") != "Service" or name not in FUNCTIONS:
            continue
        seen.add(name)
        template = document["spec"]["template"]
        template.setdefault("metadata", {})["name"] = revision(name, release)
        document["spec"]["traffic"] = traffic_for(name, step, release, stable, percent)
        problems = traffic_problems(document)
        if problems:
            raise RolloutError("; ".join(problems))
    missing = set(FUNCTIONS) - seen
    if missing:
        raise RolloutError(f"no Knative Service for {sorted(missing)} in the manifests")
    return result


def traffic_problems(service: Document) -> list[str]:
    """Why Knative would refuse this Service's traffic block, or route it other than meant."""
    name = service["metadata"]["name"]
    targets = service["spec"].get("traffic")
    if targets is None:
        return []  # Knative's default: 100 % to the latest ready revision
    problems = []
    percents = [t.get("percent", 0) for t in targets]
    if any(not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 100 for p in percents):
        problems.append(f"{name}: every percent must be an integer 0..100, not {percents}")
    elif sum(percents) != 100:
        problems.append(f"{name}: traffic percents sum to {sum(percents)}, not 100")
    tags = [t["tag"] for t in targets if "tag" in t]
    if len(tags) != len(set(tags)):
        problems.append(f"{name}: a tag names two targets: {tags}")
    template_name = service["spec"]["template"].get("metadata", {}).get("name")
    if template_name is not None and not template_name.startswith(f"{name}-"):
        problems.append(f"{name}: revision name {template_name} must start with {name}-")
    for entry in targets:
        by_name, latest = "revisionName" in entry, entry.get("latestRevision") is True
        if by_name == latest:
            problems.append(f"{name}: a target needs exactly one of revisionName, latestRevision")
        elif by_name and not str(entry["revisionName"]).startswith(f"{name}-"):
            problems.append(f"{name}: {entry['revisionName']} is not a revision of {name}")
    return problems


# -- the gate: is the candidate healthy? -----------------------------------------------------

DURATION = "holdfast_http_server_request_duration_seconds"


def gate_queries(release: str, window: str = "10m") -> dict[str, str]:
    """PromQL for the candidate's revisions (`<function>-<release>`) of every function."""
    revisions = "|".join(revision(f, release) for f in FUNCTIONS)
    selector = f'revision=~"{revisions}"'
    return {
        "error_ratio": (
            f'sum(rate({DURATION}_count{{{selector}, status=~"5.."}}[{window}])) / '
            f"sum(rate({DURATION}_count{{{selector}}}[{window}]))"
        ),
        "p99_s": (
            f"histogram_quantile(0.99, sum by (le) (rate({DURATION}_bucket{{{selector}}}"
            f"[{window}])))"
        ),
        "requests": f"sum(increase({DURATION}_count{{{selector}}}[{window}]))",
    }


def query(prometheus: str, expr: str) -> float | None:
    url = f"{prometheus.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the operator's URL
        body = json.load(response)
    if body.get("status") != "success":
        raise RolloutError(f"Prometheus refused {expr}: {body.get('error')}")
    result = body["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value  # NaN: no traffic


def gate(
    prometheus: str, release: str, max_error_ratio: float, max_p99_s: float, min_requests: float
) -> list[str]:
    """What is wrong with the candidate (empty when it may be promoted)."""
    values = {key: query(prometheus, expr) for key, expr in gate_queries(release).items()}
    problems = []
    requests = values["requests"] or 0.0
    if requests < min_requests:
        problems.append(f"the candidate served {requests:.0f} requests, fewer than {min_requests}")
    if values["error_ratio"] is not None and values["error_ratio"] > max_error_ratio:
        problems.append(f"5xx share {values['error_ratio']:.2%} > {max_error_ratio:.2%}")
    if values["p99_s"] is not None and values["p99_s"] > max_p99_s:
        problems.append(f"p99 latency {values['p99_s']:.3f}s > {max_p99_s}s")
    return problems


# -- the command line ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = root.add_subparsers(dest="step", required=True)
    for step in ("split", "promote", "rollback"):
        sub = steps.add_parser(step)
        sub.add_argument("manifests", type=Path, help="rendered manifests (kubectl kustomize)")
        sub.add_argument("--release", required=True, help="the candidate release, e.g. g1a2b3c4")
        if step != "promote":
            sub.add_argument("--stable", required=True, help="the release serving now")
        if step == "split":
            sub.add_argument("--percent", type=int, required=True, help="candidate's share")
        sub.add_argument("--output", type=Path, help="where to write (default: stdout)")
    check = steps.add_parser("gate")
    check.add_argument("--prometheus", required=True)
    check.add_argument("--release", required=True)
    check.add_argument("--max-error-ratio", type=float, default=0.01)
    check.add_argument("--max-p99-s", type=float, default=0.5)
    check.add_argument("--min-requests", type=float, default=100.0)
    return root


def load_all(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def dump_all(documents: Iterable[Document]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.step == "gate":
            problems = gate(
                args.prometheus,
                args.release,
                args.max_error_ratio,
                args.max_p99_s,
                args.min_requests,
            )
            for problem in problems:
                print(f"candidate {args.release}: {problem}")
            if not problems:
                print(f"candidate {args.release}: healthy")
            return 1 if problems else 0
        documents = apply_step(
            load_all(args.manifests),
            args.step,
            args.release,
            getattr(args, "stable", None),
            getattr(args, "percent", 0),
        )
    except RolloutError as error:
        print(f"rollout: {error}", file=sys.stderr)
        return 2
    text = dump_all(documents)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
