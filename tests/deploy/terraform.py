"""Offline checks of infra/terraform: parse every .tf (python-hcl2), pinned providers,
declared and documented variables, module calls that pass what modules require, examples
that hold no secret; and checkov, run from its own virtual environment (it pins a
python-hcl2 of its own that would clash with ours).

python-hcl2 8 keeps HCL's quotes in strings and labels (`"\\"holdfast\\""`); `unquote`
strips them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
EXACT_VERSION = re.compile(r"^=?\s*\d+\.\d+\.\d+$")
VAR_REFERENCE = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")
Block = dict[str, Any]


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(path: Path) -> Block:
    with path.open() as handle:
        parsed: Block = hcl2.load(handle)
    return parsed


@dataclass
class Module:
    """One folder of .tf files, merged."""

    path: Path
    variables: dict[str, Block] = field(default_factory=dict)
    outputs: dict[str, Block] = field(default_factory=dict)
    required_providers: dict[str, Block] = field(default_factory=dict)
    module_calls: dict[str, Block] = field(default_factory=dict)
    resource_types: set[str] = field(default_factory=set)
    text: str = ""

    @classmethod
    def load(cls, path: Path) -> Module:
        module = cls(path)
        for tf in sorted(path.glob("*.tf")):
            module.add(parse(tf), tf.read_text())
        return module

    def add(self, parsed: Block, text: str) -> None:
        self.text += text
        for entry in parsed.get("variable", []):
            self.variables.update({unquote(k): v for k, v in entry.items()})
        for entry in parsed.get("output", []):
            self.outputs.update({unquote(k): v for k, v in entry.items()})
        for entry in parsed.get("module", []):
            self.module_calls.update({unquote(k): v for k, v in entry.items()})
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                self.resource_types.update(unquote(k) for k in entry)
        for settings in parsed.get("terraform", []):
            for block in settings.get("required_providers", []):
                self.required_providers.update(
                    {k: v for k, v in block.items() if not k.startswith("__")}
                )

    def required_variables(self) -> set[str]:
        return {name for name, block in self.variables.items() if "default" not in block}


def kubernetes_object_names(path: Path) -> dict[str, set[str]]:
    """Resource type -> `metadata { name = ... }` of the kubernetes_* resources in a folder."""
    names: dict[str, set[str]] = {}
    for tf in sorted(path.glob("*.tf")):
        for entry in parse(tf).get("resource", []):
            for resource_type, instances in entry.items():
                kind = unquote(resource_type)
                for body in instances.values() if kind.startswith("kubernetes_") else ():
                    for metadata in body.get("metadata", []):
                        if "name" in metadata:
                            names.setdefault(kind, set()).add(unquote(metadata["name"]))
    return names


def secret_data_keys(path: Path) -> dict[str, set[str]]:
    """Secret name -> the keys of `data` of each kubernetes_secret_v1 in a folder."""
    found: dict[str, set[str]] = {}
    for tf in sorted(path.glob("*.tf")):
        for entry in parse(tf).get("resource", []):
            for instance in entry.get(
                '"kubernetes_secret_v1"', entry.get("kubernetes_secret_v1", {})
            ).values():
                name = unquote(instance["metadata"][0]["name"])
                data = instance.get("data", {})
                found[name] = {str(unquote(k)) for k in data if not k.startswith("__")}
    return found


def module_folders() -> list[Path]:
    return sorted({p.parent for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts})


def provider_problems(module: Module) -> list[str]:
    """Every provider the module uses is declared with a source and an exact version."""
    problems = []
    for name, spec in sorted(module.required_providers.items()):
        version = str(unquote(spec.get("version", "")))
        if "source" not in spec:
            problems.append(f"{module.path.name}: provider {name} has no source")
        if not EXACT_VERSION.match(version):
            problems.append(f"{module.path.name}: provider {name} version {version!r} not pinned")
    for resource_type in sorted(module.resource_types):
        if resource_type.split("_", 1)[0] not in module.required_providers:
            problems.append(f"{module.path.name}: {resource_type} needs an undeclared provider")
    uses_anything = bool(module.resource_types or module.module_calls)
    if uses_anything and "required_version" not in module.text:
        problems.append(f"{module.path.name}: no required_version for Terraform itself")
    return problems


def variable_problems(module: Module) -> list[str]:
    problems = []
    for name in sorted(set(VAR_REFERENCE.findall(module.text)) - set(module.variables)):
        problems.append(f"{module.path.name}: var.{name} is used but not declared")
    for name, block in sorted(module.variables.items()):
        if not unquote(block.get("description", "")):
            problems.append(f"{module.path.name}: variable {name} has no description")
        if "type" not in block:
            problems.append(f"{module.path.name}: variable {name} has no type")
        if block.get("type") != "bool" and not block.get("validation"):
            problems.append(f"{module.path.name}: variable {name} has no validation")
    for name, block in sorted(module.outputs.items()):
        if not unquote(block.get("description", "")):
            problems.append(f"{module.path.name}: output {name} has no description")
    return problems


def module_call_problems(caller: Module) -> list[str]:
    """Each local module call passes every required variable, and only declared ones."""
    problems = []
    for name, call in sorted(caller.module_calls.items()):
        source = str(unquote(call.get("source", "")))
        if not source.startswith("../"):
            problems.append(f"{caller.path.name}: module {name} source {source!r} is not local")
            continue
        callee = Module.load((caller.path / source).resolve())
        for provider, spec in sorted(callee.required_providers.items()):
            mine = caller.required_providers.get(provider, {})
            if unquote(mine.get("version")) != unquote(spec.get("version")):
                problems.append(
                    f"{caller.path.name}: provider {provider} is not pinned as module {name} pins it"
                )
        passed = {k for k in call if k not in {"source", "__is_block__", "depends_on"}}
        for missing in sorted(callee.required_variables() - passed):
            problems.append(f"{caller.path.name}: module {name} misses required {missing}")
        for unknown in sorted(passed - set(callee.variables)):
            problems.append(f"{caller.path.name}: module {name} gets undeclared {unknown}")
    return problems


def example_problems(root: Module) -> list[str]:
    """terraform.tfvars.example sets every required variable, except sensitive ones, which
    it must name as TF_VAR_ exports instead of holding their values."""
    example = root.path / "terraform.tfvars.example"
    if not example.exists():
        return [f"{root.path.name}: no terraform.tfvars.example"]
    text = example.read_text()
    assigned = set(re.findall(r"^([a-z_][a-z0-9_]*)\s*=", text, flags=re.MULTILINE))
    problems = []
    for name in sorted(root.required_variables()):
        sensitive = root.variables[name].get("sensitive") is True
        if sensitive and name in assigned:
            problems.append(f"{root.path.name}: example holds a value for secret {name}")
        elif sensitive and f"TF_VAR_{name}" not in text:
            problems.append(f"{root.path.name}: example does not say how to pass {name}")
        elif not sensitive and name not in assigned:
            problems.append(f"{root.path.name}: example does not set required {name}")
    for name in sorted(assigned - set(root.variables)):
        problems.append(f"{root.path.name}: example sets undeclared {name}")
    return problems


# --- checkov ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    check_id: str
    resource: str
    file: str
    suppress_comment: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    failed: list[Finding]
    skipped: list[Finding]
    passed: int


def checkov_binary() -> Path | None:
    return CHECKOV if CHECKOV.exists() else None


def run_checkov(target: Path, frameworks: list[str], binary: Path = CHECKOV) -> Report:
    """checkov on a folder, offline (--skip-download: no policy download, no API key).
    Not --quiet: that drops the passed and skipped checks from the JSON report."""
    command = [
        str(binary),
        "--directory",
        str(target),
        "--framework",
        *frameworks,
        "--skip-download",
        "--output",
        "json",
        "--compact",
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BC_")}
    environment["LOG_LEVEL"] = "ERROR"
    done = subprocess.run(  # our own checkov and arguments
        command, capture_output=True, text=True, timeout=600, env=environment, check=False
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({done.returncode}): {done.stderr[-2000:]}")
    return summarise(done.stdout)


def summarise(stdout: str) -> Report:
    if not stdout.strip():
        return Report([], [], 0)
    parsed = json.loads(stdout)
    reports = parsed if isinstance(parsed, list) else [parsed]
    failed: list[Finding] = []
    skipped: list[Finding] = []
    passed = 0
    for report in reports:
        results = report.get("results", {})
        passed += len(results.get("passed_checks", []))
        failed += [finding(c) for c in results.get("failed_checks", [])]
        skipped += [finding(c) for c in results.get("skipped_checks", [])]
    return Report(failed, skipped, passed)


def finding(check: dict[str, Any]) -> Finding:
    return Finding(
        check_id=str(check.get("check_id")),
        resource=str(check.get("resource")),
        file=str(check.get("file_path")),
        suppress_comment=check.get("check_result", {}).get("suppress_comment"),
    )


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    return destination
