"""What the compose stack test needs to run docker-compose.yml on podman instead of a Docker engine.

- `podman system service` answers the Docker API on a socket of its own (DOCKER_HOST).
- Podman without systemd has no timer that runs healthchecks: `HealthcheckDriver` runs
  `podman healthcheck run` for each of the project's containers at the interval the compose file
  gave it, so `depends_on: condition: service_healthy` behaves as on Docker.
- No registry serves apache/kafka, MinIO or tensorflow/serving here: `local_images` builds them
  from what the project already provisions (the Maven jars, the MinIO source build, the project
  image's stand-in target), and tests/compose/local-images.yml selects them for the test only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from local.stack import provision
from tests.containers import build, files_hash, project_image, run, standin_image, usable_or_skip

IMAGES = Path(__file__).with_name("images")
PROJECT_LABEL = "com.docker.compose.project"


@contextmanager
def podman_service(directory: Path) -> Iterator[str]:
    """`podman system service` on a socket in `directory`; yields its DOCKER_HOST."""
    socket = directory / "podman.sock"
    log = (directory / "podman-service.log").open("w")
    process = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of the test must leave it up for `compose down`
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                said = (directory / "podman-service.log").read_text()
                pytest.fail(f"podman system service did not open {socket}: {said}")
            time.sleep(0.1)
        yield f"unix://{socket}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


class HealthcheckDriver:
    """Runs each healthcheck of a compose project's containers every interval, as Docker would."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.stopping = threading.Event()
        self.started: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.runs = 0

    def __enter__(self) -> HealthcheckDriver:
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        self.threads.append(watcher)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _watch(self) -> None:
        while not self.stopping.wait(1):
            listed = run(
                ["podman", "ps", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format", "{{.ID}}"]
            )
            for container in listed.stdout.split():
                if container not in self.started:
                    self.started.add(container)
                    interval = self._interval_s(container)
                    if interval:
                        thread = threading.Thread(target=self._check, args=(container, interval), daemon=True)
                        thread.start()
                        self.threads.append(thread)

    @staticmethod
    def _interval_s(container: str) -> float | None:
        inspected = run(["podman", "inspect", "--format", "{{json .Config.Healthcheck}}", container])
        check = json.loads(inspected.stdout or "null") if inspected.returncode == 0 else None
        if not check or check.get("Test", ["NONE"])[0] == "NONE":
            return None
        return (check.get("Interval") or 30_000_000_000) / 1e9

    def _check(self, container: str, interval: float) -> None:
        # Docker's first check comes one interval after the start, then one every interval.
        while not self.stopping.wait(interval):
            result = run(["podman", "healthcheck", "run", container], timeout=120)
            self.runs += 1
            if "no such container" in result.stderr.lower() or "not running" in result.stderr.lower():
                return


def _context(directory: Path, source: Path, extra: dict[str, Path]) -> Path:
    """A build context: `source`'s files plus `extra` (name -> file or folder to copy in)."""
    shutil.copytree(source, directory, dirs_exist_ok=True)
    for name, path in extra.items():
        if path.is_dir():
            shutil.copytree(path, directory / name)
        else:
            shutil.copy2(path, directory / name)
    return directory


def _build_local(config: pytest.Config, repository: str, source: Path, extra: dict[str, Path]) -> str:
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="srtest-context-") as tmp:
        context = _context(Path(tmp), source, extra)
        files = sorted(p for p in context.rglob("*") if p.is_file())
        return build(config, f"{repository}:{files_hash(files, context)}", context, host_certs=False)


def local_images(config: pytest.Config) -> dict[str, str]:
    """The variables tests/compose/local-images.yml reads, naming the images built here."""
    usable_or_skip(config, "compose stack test")
    return {
        "RECOMMENDER_IMAGE": project_image(config),
        "TEST_STANDIN_IMAGE": standin_image(config),
        "TEST_KAFKA_IMAGE": _build_local(
            config, "localhost/srtest-kafka", IMAGES / "kafka", {"libs": provision.kafka_libs()}
        ),
        "TEST_MINIO_IMAGE": _build_local(
            config,
            "localhost/srtest-minio",
            IMAGES / "minio",
            {"minio": provision.minio_binary(), "mc": provision.mc_binary()},
        ),
    }


def leftovers(project: str) -> dict[str, list[str]]:
    """The project's containers, volumes and networks that still exist."""
    label = f"label={PROJECT_LABEL}={project}"
    found = {}
    for kind, command in {
        "containers": ["podman", "ps", "--all", "--filter", label, "--format", "{{.Names}}"],
        "volumes": ["podman", "volume", "ls", "--filter", label, "--format", "{{.Name}}"],
        "networks": ["podman", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
    }.items():
        found[kind] = run(command).stdout.split()
    return found
