"""Helpers of the secured-stack tests: the real CLI as subprocesses, and the secret scan."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Variables of the test runner's own environment that could point a component elsewhere, or make
# it trust a CA it was not given (minio-py reads SSL_CERT_FILE).
FOREIGN_PREFIXES = ("KAFKA_", "MINIO_", "TOPIC_", "SERVING_", "MODEL", "PUBLISHER_", "CLIENT_")
FOREIGN_NAMES = {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "RECOMMENDER_STACK_STATE"}


def clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(FOREIGN_PREFIXES) and name not in FOREIGN_NAMES
    }


@dataclass(frozen=True)
class Result:
    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-5:])
        return f"{self.name}: exit {self.returncode} after {self.seconds:.1f}s; stderr ends:\n{tail}"


@dataclass
class Running:
    """A `recommender ...` subprocess whose stdout and stderr go to files under the run dir."""

    name: str
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    started: float

    def wait(self, timeout: float) -> Result:
        try:
            self.process.wait(timeout=max(0.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            pytest.fail(f"{self.name} did not finish within {timeout:.0f}s")
        return Result(
            self.name,
            self.process.returncode,
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
            time.monotonic() - self.started,
        )


class Cli:
    """Runs the real command line (`python -m recommender ...`) with a given environment."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Running:
        stdout_path, stderr_path = self.directory / f"{name}.out", self.directory / f"{name}.err"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "recommender", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # so a timeout can kill it with its children
            )
        return Running(name, process, stdout_path, stderr_path, time.monotonic())

    def run(self, name: str, args: list[str], env: dict[str, str], timeout: float = 90.0) -> Result:
        return self.start(name, args, env).wait(timeout)


def files_holding(roots: Iterable[Path], secrets: dict[str, str]) -> list[str]:
    """'<file>: <secret name>' for every file under `roots` that holds a secret, raw or base64."""
    needles = {name: (value.encode(), base64.b64encode(value.encode())) for name, value in secrets.items()}
    hits = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            hits += [f"{path}: {name}" for name, forms in needles.items() if any(f in data for f in forms)]
    return hits
