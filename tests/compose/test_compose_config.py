"""Static checks of docker-compose.yml through the real Compose v2 `config` (no engine needed)."""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from modelsync.sync import TMP_PREFIX
from tests.compose.conftest import REPO, TEST_ENV, run_compose
from tests.deploy.settings_names import misplaced, recommender_command

COMPONENTS = {
    "init",
    "datapublisher",
    "serving-a-sync",
    "serving-b-sync",
    "modelserver",
    "pipeline",
    "client",
}


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.env"
    path.write_text("")
    return path


@pytest.fixture
def config(compose_binary: Path, env_file: Path) -> dict:
    result = run_compose(
        compose_binary, "--profile", "client", "config", "--format", "json", env=TEST_ENV, env_file=env_file
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_is_valid(compose_binary: Path, env_file: Path) -> None:
    result = run_compose(compose_binary, "config", "--quiet", env=TEST_ENV, env_file=env_file)
    assert result.returncode == 0, result.stderr


def test_the_env_example_is_a_complete_env_file_once_filled_in(compose_binary: Path, tmp_path: Path) -> None:
    example = (REPO / ".env.example").read_text()
    # Committed with the secrets left empty...
    assert re.search(r"^MINIO_ACCESS_KEY=$", example, re.M) and re.search(
        r"^MINIO_SECRET_KEY=$", example, re.M
    )
    filled = tmp_path / ".env"
    filled.write_text(
        example.replace("MINIO_ACCESS_KEY=\n", "MINIO_ACCESS_KEY=from-env-file\n").replace(
            "MINIO_SECRET_KEY=\n", "MINIO_SECRET_KEY=from-env-file-secret\n"
        )
    )
    result = run_compose(compose_binary, "config", "--format", "json", env={}, env_file=filled)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["minio"]["environment"]["MINIO_ROOT_USER"] == "from-env-file"
    assert services["modelserver"]["environment"]["MINIO_SECRET_KEY"] == "from-env-file-secret"


@pytest.mark.parametrize("missing", ["MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"])
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_required_variables_fail_fast(compose_binary: Path, env_file: Path, missing: str, how: str) -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != missing} | ({missing: ""} if how == "empty" else {})
    result = run_compose(compose_binary, "config", "--quiet", env=env, env_file=env_file)
    assert result.returncode != 0
    assert f"{missing} is not set; copy .env.example to .env" in result.stderr


def test_the_stack_has_every_part(config: dict) -> None:
    services = config["services"]
    assert set(services) == COMPONENTS | {"kafka", "minio", "serving-a", "serving-b"}
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["minio"]["image"] == "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    assert services["init"]["command"] == ["init"]
    assert services["datapublisher"]["command"][:3] == ["datapublisher", "publish", "--generate"]
    assert services["pipeline"]["command"] == ["pipeline", "run", "--local", "--every", "10m"]
    assert services["modelserver"]["command"] == ["modelserver"]
    assert services["client"]["command"][:2] == ["client", "load"]


def test_images_are_pinned(config: dict) -> None:
    for name, service in config["services"].items():
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)


def test_two_serving_instances_each_share_a_volume_with_their_sidecar(config: dict) -> None:
    services = config["services"]
    for instance in ("a", "b"):
        serving, sidecar = services[f"serving-{instance}"], services[f"serving-{instance}-sync"]
        assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", serving["image"])
        assert serving["entrypoint"] == ["tensorflow_model_server"]
        assert "--model_base_path=/models/recommender" in serving["command"]
        assert "--model_name=recommender" in serving["command"]
        assert sidecar["command"] == ["modelsync", "--instance", instance, "--model-base-path", "/models"]
        [serving_volume] = serving["volumes"]
        [sidecar_volume] = sidecar["volumes"]
        assert serving_volume["source"] == sidecar_volume["source"] == f"models-{instance}"
        assert serving_volume["target"] == sidecar_volume["target"] == "/models"
        assert serving_volume["read_only"] is True
        env = services["modelserver"]["environment"]
        assert env[f"SERVING_{instance.upper()}_URL"] == f"http://serving-{instance}:8501"
        assert env[f"SERVING_{instance.upper()}_GRPC"] == f"serving-{instance}:8500"


def test_every_service_has_a_healthcheck(config: dict) -> None:
    for name, service in config["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_start_order_waits_for_health_and_completion(config: dict) -> None:
    services = config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()}

    assert conditions("init") == {"kafka": "service_healthy", "minio": "service_healthy"}
    for name in ("datapublisher", "serving-a-sync", "serving-b-sync", "modelserver"):
        assert conditions(name)["init"] == "service_completed_successfully", name
    assert conditions("serving-a") == {"serving-a-sync": "service_healthy"}
    assert conditions("serving-b") == {"serving-b-sync": "service_healthy"}
    pipeline = conditions("pipeline")
    assert pipeline["datapublisher"] == "service_completed_successfully"
    assert pipeline["serving-a-sync"] == pipeline["serving-b-sync"] == "service_healthy"
    assert pipeline["serving-a"] == pipeline["serving-b"] == "service_healthy"
    assert conditions("client") == {"modelserver": "service_healthy"}
    # Every service is reachable from the two servers through this graph: nothing starts early.
    for name in COMPONENTS | {"serving-a", "serving-b"}:
        assert conditions(name), name
    # What README "docker compose" says: start order uses only health and completion.
    for name in services:
        assert set(conditions(name).values()) <= {"service_healthy", "service_completed_successfully"}, name


def test_the_client_starts_only_once_a_model_is_live(config: dict) -> None:
    check = config["services"]["modelserver"]["healthcheck"]
    # The model server's health is its readiness: a live model whose instance answers.
    assert any("http://127.0.0.1:8080/readyz" in part for part in check["test"])
    assert not any("/healthz" in part for part in check["test"])
    # "starting" until the first pipeline run has published a model, not unhealthy meanwhile.
    assert _seconds(check["start_period"]) >= 15 * 60


def _seconds(duration: str) -> float:
    """A compose duration as config renders it (e.g. 1m30s, 30m0s, 10s)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def test_a_serving_instance_that_cannot_load_its_model_is_unhealthy_within_minutes(config: dict) -> None:
    for instance in ("a", "b"):
        check = config["services"][f"serving-{instance}"]["healthcheck"]
        worst = _seconds(check["start_period"]) + _seconds(check["interval"]) * check["retries"]
        assert worst <= 5 * 60, (instance, check)


def _run_serving_check(config: dict, models: Path, port: int) -> int:
    """The serving healthcheck's own command, run by sh (as CMD-SHELL does) against `models` and `port`."""
    kind, script = config["services"]["serving-a"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert "/models/recommender/" in script and "127.0.0.1/8501" in script
    script = script.replace("/models/", f"{models}/").replace("127.0.0.1/8501", f"127.0.0.1/{port}")
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=30).returncode


def test_the_serving_check_waits_for_a_first_version_and_then_demands_it(
    config: dict, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: TF-Serving not answering
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = tmp_path / "recommender"
    base.mkdir()
    (base / f"{TMP_PREFIX}1795000123-x1y2").mkdir()  # the sidecar's download in progress: no version yet
    assert _run_serving_check(config, tmp_path, port) == 0
    (base / "1795000123").mkdir()  # a complete version the server does not serve
    assert _run_serving_check(config, tmp_path, port) != 0


def test_the_client_is_only_in_its_profile(compose_binary: Path, env_file: Path) -> None:
    result = run_compose(compose_binary, "config", "--services", env=TEST_ENV, env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert "client" not in result.stdout.split()
    assert "modelserver" in result.stdout.split()


def test_no_secret_is_committed() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for variable in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        for line in re.findall(rf"^\s*{variable}:.*$", text, re.M):
            assert "${MINIO_" in line and ":?" in line, line
    assert "minioadmin" not in text
    assert ".env" in (REPO / ".gitignore").read_text().split()


def _misplaced_variables(config: dict) -> list[str]:
    """Variables a project-image service sets that its own `recommender <command>` never reads."""
    services = config["services"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == COMPONENTS  # every component runs the project image, and only they do
    return misplaced(
        {
            name: (
                recommender_command(services[name].get("entrypoint"), services[name].get("command")),
                services[name].get("environment", {}),
            )
            for name in sorted(built)
        }
    )


def test_component_variables_are_real_settings(config: dict) -> None:
    for name in COMPONENTS:
        assert recommender_command(None, config["services"][name]["command"]), name
    problems = _misplaced_variables(config)
    assert not problems, "\n".join(problems)


def test_a_variable_on_the_wrong_service_is_caught(config: dict) -> None:
    planted = copy.deepcopy(config)
    # The model server's setting on the model-sync sidecar, which never reads it.
    planted["services"]["serving-a-sync"]["environment"]["MODELSERVER_MAX_BATCH"] = "5"
    # A Kafka property on a service that never talks to Kafka.
    planted["services"]["datapublisher"]["environment"]["KAFKA_SASL_PASSWORD"] = "x"
    assert _misplaced_variables(planted) == [
        "datapublisher (recommender datapublisher) sets variables it never reads: ['KAFKA_SASL_PASSWORD']",
        "serving-a-sync (recommender modelsync) sets variables it never reads: ['MODELSERVER_MAX_BATCH']",
    ]
