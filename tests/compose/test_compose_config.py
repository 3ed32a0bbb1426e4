"""Static checks of docker-compose.yml through the real Compose v2 `config` (no engine needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.compose.conftest import REPO, TEST_ENV, run_compose
from tests.deploy.settings_names import known_setting, setting_names

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
    assert conditions("client") == {"modelserver": "service_healthy"}
    # Every service is reachable from the two servers through this graph: nothing starts early.
    for name in COMPONENTS | {"serving-a", "serving-b"}:
        assert conditions(name), name


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


def test_component_variables_are_real_settings(config: dict) -> None:
    names = setting_names()
    for name in COMPONENTS:
        unknown = [v for v in config["services"][name]["environment"] if not known_setting(v, names)]
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"
