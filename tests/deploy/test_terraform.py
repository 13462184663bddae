"""infra/terraform parses, pins its providers, declares and documents its variables, keeps
secrets out of files, and passes checkov (every waiver carries a reason). Each check is also
shown to catch a broken sample."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy import terraform as t
from tests.deploy.manifests import KNATIVE, ROOT

FOLDERS = t.module_folders()
IDS = [str(f.relative_to(t.TERRAFORM)) for f in FOLDERS]
ROOTS = [t.TERRAFORM / "bootstrap", t.TERRAFORM / "deploy"]
NO_REASON = {None, "", "No comment provided"}


def test_the_layout_has_two_root_states_and_two_modules() -> None:
    assert IDS == ["bootstrap", "deploy", "modules/app", "modules/cockroach"]


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_every_tf_file_parses(folder: Path) -> None:
    for path in folder.glob("*.tf"):
        assert isinstance(t.parse(path), dict), path


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_providers_are_pinned_exactly(folder: Path) -> None:
    assert t.provider_problems(t.Module.load(folder)) == []


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_variables_are_declared_described_typed_and_validated(folder: Path) -> None:
    assert t.variable_problems(t.Module.load(folder)) == []


@pytest.mark.parametrize("folder", ROOTS, ids=["bootstrap", "deploy"])
def test_roots_call_their_module_with_every_required_variable(folder: Path) -> None:
    root = t.Module.load(folder)
    assert root.module_calls
    assert t.module_call_problems(root) == []


@pytest.mark.parametrize("folder", ROOTS, ids=["bootstrap", "deploy"])
def test_examples_set_required_variables_and_hold_no_secret(folder: Path) -> None:
    assert t.example_problems(t.Module.load(folder)) == []


def test_the_cockroach_module_protects_prod_and_uses_the_cockroach_provider() -> None:
    module = t.Module.load(t.TERRAFORM / "modules" / "cockroach")
    assert {"cockroach_cluster", "cockroach_database", "cockroach_sql_user"} <= (
        module.resource_types
    )
    assert {"region", "plan"} <= {n.rstrip("s") for n in module.variables}
    assert 'var.environment == "prod" ? true : var.delete_protection' in module.text
    assert module.outputs["database_url"].get("sensitive") is True
    assert module.outputs["migration_database_url"].get("sensitive") is True
    # Only the schema's owner comes from the Cloud API (its users are admins); the
    # functions' login is made by the migration job with the holdfast_functions role only.
    assert module.text.count('resource "cockroach_sql_user"') == 1


def test_the_migration_job_migrates_as_owner_then_grants_the_functions_login() -> None:
    text = (t.TERRAFORM / "modules" / "app" / "main.tf").read_text()
    job = text[text.index('resource "kubernetes_job_v1" "migrate"') :]
    assert job.index("init_container") < job.index('command           = ["holdfast", "migrate"]')
    assert "/opt/holdfast-grant/grant_app_user.py" in job
    assert 'file("${path.module}/grant_app_user.py")' in text


def test_the_app_module_creates_every_secret_the_functions_read() -> None:
    names = t.kubernetes_object_names(t.TERRAFORM / "modules" / "app")
    assert names["kubernetes_secret_v1"] == {
        "holdfast-database",
        "holdfast-migration",
        "holdfast-jwks",
        "holdfast-metadata-keys",
        "holdfast-ledger-signing-key",
    }
    assert names["kubernetes_config_map_v1"] == {"holdfast-auth", "holdfast-grant-functions-login"}
    module = t.Module.load(t.TERRAFORM / "modules" / "app")
    assert "provider::kubernetes::manifest_decode_multi" in module.text


# --- the checkers catch broken samples -----------------------------------------------------


def write_module(folder: Path, text: str) -> t.Module:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.tf").write_text(text)
    return t.Module.load(folder)


UNPINNED = """
terraform {
  required_version = ">= 1.8.0"
  required_providers {
    kubernetes = { source = "hashicorp/kubernetes", version = ">= 2.0" }
  }
}
resource "kubernetes_namespace_v1" "a" {
  metadata { name = var.name }
}
resource "random_id" "b" { byte_length = 4 }
variable "other" {
  type = string
}
"""


def test_an_unpinned_or_undeclared_provider_is_reported(tmp_path: Path) -> None:
    module = write_module(tmp_path / "sample", UNPINNED)
    assert t.provider_problems(module) == [
        "sample: provider kubernetes version '>= 2.0' not pinned",
        "sample: random_id needs an undeclared provider",
    ]


def test_an_undeclared_or_undocumented_variable_is_reported(tmp_path: Path) -> None:
    module = write_module(tmp_path / "sample", UNPINNED)
    assert t.variable_problems(module) == [
        "sample: var.name is used but not declared",
        "sample: variable other has no description",
        "sample: variable other has no validation",
    ]


def test_a_module_call_missing_a_required_variable_is_reported(tmp_path: Path) -> None:
    write_module(tmp_path / "child", 'variable "needed" {\n  type = string\n}\n')
    caller = write_module(
        tmp_path / "root", 'module "child" {\n  source = "../child"\n  extra = 1\n}\n'
    )
    assert t.module_call_problems(caller) == [
        "root: module child misses required needed",
        "root: module child gets undeclared extra",
    ]


def test_an_example_holding_a_secret_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    shutil.copytree(t.TERRAFORM / "deploy", root)
    example = root / "terraform.tfvars.example"
    example.write_text(example.read_text() + 'database_url = "postgresql://u:p@h/db"\n')
    problems = t.example_problems(t.Module.load(root))
    assert problems == ["deploy: example holds a value for secret database_url"]


# --- checkov ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> Path:
    binary = t.checkov_binary()
    if binary is None:
        message = f"checkov is not installed at {t.CHECKOV}: run `make .venv-checkov/.installed`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def scan_tree(destination: Path) -> Path:
    """What checkov scans: the Terraform, the Containerfile (as a Dockerfile, the name
    checkov recognises) and both overlays as rendered."""
    t.copy_tree(t.TERRAFORM, destination / "terraform")
    shutil.copy(ROOT / "Containerfile", destination / "Dockerfile")
    for overlay in ("dev", "prod"):
        documents = kustomize.render(KNATIVE / "overlays" / overlay)
        (destination / f"knative-{overlay}.yaml").write_text(yaml.safe_dump_all(documents))
    return destination


@pytest.fixture(scope="module")
def report(checkov: Path, tmp_path_factory: pytest.TempPathFactory) -> t.Report:
    tree = scan_tree(tmp_path_factory.mktemp("checkov"))
    return t.run_checkov(tree, ["terraform", "secrets", "dockerfile", "kubernetes"], checkov)


def test_checkov_finds_no_failed_check(report: t.Report) -> None:
    assert report.passed > 50, "checkov scanned almost nothing: is a framework missing?"
    assert report.failed == []


def test_every_checkov_waiver_gives_a_reason(report: t.Report) -> None:
    assert all(f.suppress_comment not in NO_REASON for f in report.skipped), report.skipped


def test_every_checkov_waiver_is_listed_in_the_readme(report: t.Report) -> None:
    readme = (t.TERRAFORM / "README.md").read_text()
    table = readme[readme.index("## Checkov waivers") :]
    assert report.skipped, "no waiver at all: drop the README's table, or this test"
    for waiver in report.skipped:
        assert f"| {waiver.check_id} " in table, waiver


def test_checkov_reports_a_failing_sample_and_honours_a_reasoned_waiver(
    checkov: Path, tmp_path: Path
) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "kubernetes_secret_v1" "in_default" {\n'
        '  metadata {\n    name = "x"\n  }\n}\n'
        'resource "kubernetes_secret_v1" "waived" {\n'
        "  #checkov:skip=CKV_K8S_21:a sample waiver\n"
        '  metadata {\n    name = "y"\n  }\n}\n'
    )
    sample = t.run_checkov(tmp_path, ["terraform"], checkov)
    assert [(f.check_id, f.resource) for f in sample.failed] == [
        ("CKV_K8S_21", "kubernetes_secret_v1.in_default")
    ]
    assert [(f.check_id, f.suppress_comment) for f in sample.skipped] == [
        ("CKV_K8S_21", "a sample waiver")
    ]


# --- backups and per-function logins --------------------------------------------------------


def test_managed_backups_are_on_and_our_own_schedule_keeps_revision_history() -> None:
    module = t.Module.load(t.TERRAFORM / "modules" / "cockroach")
    assert "backup_config = {\n    enabled           = true" in module.text
    assert {"backup_frequency_minutes", "backup_retention_days"} <= set(module.variables)
    schedule = (ROOT / "infra" / "cockroach" / "backup_schedule.sql").read_text()
    statement = " ".join(line for line in schedule.splitlines() if not line.startswith("--"))
    assert "CREATE SCHEDULE IF NOT EXISTS holdfast_backup FOR BACKUP DATABASE holdfast" in (
        " ".join(statement.split())
    )
    assert "WITH revision_history" in statement
    assert "RECURRING '*/15 * * * *'" in statement and "FULL BACKUP '@daily'" in statement


def test_every_function_gets_a_login_of_its_own_from_bootstrap_to_the_job() -> None:
    functions = '["accounts", "transfers", "ledger", "relay"]'
    cockroach = t.Module.load(t.TERRAFORM / "modules" / "cockroach")
    assert f"functions         = {functions}" in cockroach.text
    assert cockroach.outputs["function_database_urls"].get("sensitive") is True
    app = t.Module.load(t.TERRAFORM / "modules" / "app")
    assert app.variables["function_database_urls"].get("sensitive") is True
    assert f"functions = {functions}" in app.text
    assert 'name = "HOLDFAST_DATABASE_URL_${upper(env.value)}"' in app.text
    deploy = t.Module.load(t.TERRAFORM / "deploy")
    assert deploy.module_calls["app"]["function_database_urls"] == "${var.function_database_urls}"
