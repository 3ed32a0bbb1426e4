"""Fetch and build the real servers once, into a cache outside the repo.

Kafka comes as jars from Maven Central (`mvn dependency:copy-dependencies` over
kafka-pom.xml); MinIO is built from source with `go install`. A finished artefact is
marked complete, so an interrupted first run is redone rather than half-used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

KAFKA_VERSION = "4.1.1"
# The community edition is source-only; this pseudo-version is the module proxy's newest.
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# The MinIO client (`mc ready`: the healthcheck of MinIO's image); the module proxy's newest.
MC_MODULE = "github.com/minio/mc"
MC_VERSION = "v0.0.0-20250313080218-cf909e1063a9"

MARKER = ".complete"


class ProvisionError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("RECOMMENDER_CACHE_DIR", Path.home() / ".cache" / "streaming-recommender"))


def _require_tool(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ProvisionError(f"'{tool}' is not on PATH; it is needed to {why} (see README prerequisites)")
    return path


def _run_with_progress(
    cmd: list[str], label: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> None:
    """Run a long build, printing a heartbeat so the first run does not look hung."""
    print(f"[provision] {label} (first run only; cached in {cache_dir()})", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(15):
            print(f"[provision] {label}: {time.monotonic() - started:.0f}s ...", file=sys.stderr, flush=True)

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    finally:
        done.set()
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ProvisionError(f"{label} failed (exit {result.returncode}):\n{tail}")
    print(f"[provision] {label}: done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def kafka_libs() -> Path:
    """Directory of the Kafka jars, resolving them from Maven Central on first use (again when the
    pom changes: its hash names the cache folder)."""
    pom_text = resources.files("local.stack").joinpath("kafka-pom.xml").read_text()
    home = cache_dir() / f"kafka-{KAFKA_VERSION}-{hashlib.sha256(pom_text.encode()).hexdigest()[:8]}"
    libs = home / "libs"
    if (home / MARKER).exists():
        return libs
    mvn = _require_tool("mvn", "fetch Apache Kafka from Maven Central")
    _require_tool("java", "run Apache Kafka")
    home.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    pom = home / "pom.xml"
    pom.write_text(pom_text)
    _run_with_progress(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
        f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven",
    )
    (home / MARKER).touch()
    return libs


def go_install(module: str, version: str, binary: str, label: str) -> Path:
    """`binary` of Go `module`@`version`, built with `go install` into the cache on first use."""
    home = cache_dir() / f"{binary}-{version}"
    target = home / binary
    if (home / MARKER).exists() and target.exists():
        return target
    go = _require_tool("go", f"build {binary} from the Go module proxy")
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as gobin:
        env = {**os.environ, "GOBIN": gobin}
        _run_with_progress([go, "install", f"{module}@{version}"], label, env=env)
        Path(gobin, binary).replace(target)
    (home / MARKER).touch()
    return target


def minio_binary() -> Path:
    return go_install(MINIO_MODULE, MINIO_VERSION, "minio", f"building MinIO {MINIO_VERSION} with go install")


def mc_binary() -> Path:
    return go_install(MC_MODULE, MC_VERSION, "mc", f"building the MinIO client {MC_VERSION} with go install")


def provision_all() -> None:
    kafka_libs()
    minio_binary()
