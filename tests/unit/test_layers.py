"""The architecture rule, as a test: the domain imports no adapter (import-linter contracts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The domain imports no adapter, service or entrypoint KEPT" in result.stdout


def test_domain_modules_import_no_io_library() -> None:
    """A second, simpler check that does not depend on import-linter's configuration."""
    forbidden = (
        "sqlalchemy",
        "flask",
        "cloudevents",
        "psycopg",
        "httpx",
        "holdfast.adapters",
        "holdfast.services",
        "holdfast.entrypoints",
    )
    for path in (ROOT / "shared" / "holdfast" / "domain").glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert not any(f" {name}" in stripped for name in forbidden), (
                    f"{path.name}: {stripped}"
                )
