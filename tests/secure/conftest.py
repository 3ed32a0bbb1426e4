"""A secured local stack (Kafka SASL_SSL + SCRAM-SHA-512, MinIO over HTTPS) for this folder only.

Components reach it only through the documented variables (`StackInfo.env()`). Every process
the tests start writes its output under `run_dir`, so the secret scan can read all of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import Stack
from tests.secure.harness import Cli, clean_environment


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory, starts_servers: None) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("secure-stack"), secure=True)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every process of the run writes: CLI output, serving instance and model-server logs."""
    return tmp_path_factory.mktemp("secure-run")


@pytest.fixture(scope="module")
def secure_env(secure_stack: Stack) -> Iterator[dict[str, str]]:
    """The runner's environment pointed at the secured stack; also os.environ for the module."""
    env = clean_environment() | secure_stack.info().env()
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(env):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def cli(run_dir: Path) -> Cli:
    return Cli(run_dir / "cli")
