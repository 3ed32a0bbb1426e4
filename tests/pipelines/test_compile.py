"""The compiled package: loads back with the kfp SDK, has the steps, parameters and secret env."""

from pathlib import Path

import pytest
import yaml
from kfp import components

from pipelines.cli import compile_package

STEPS = ["prepare-data", "train-model", "evaluate-model", "export-model", "publish-model"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_package(
        tmp_path_factory.mktemp("kfp") / "pipeline.yaml", "registry.example/recommender:1.2.3"
    )


@pytest.fixture(scope="module")
def documents(package: Path) -> list[dict]:
    return list(yaml.safe_load_all(package.read_text()))


def test_package_loads_back_with_the_sdk(package: Path):
    pipeline = components.load_component_from_file(str(package))
    assert pipeline.name == "streaming-recommender-training"
    inputs = pipeline.component_spec.inputs
    assert inputs["epochs"].type == "Integer" and inputs["epochs"].default == 8
    assert inputs["learning_rate"].type == "Float"
    assert inputs["publish_new_data"].type == "Boolean" and inputs["publish_new_data"].default is False
    for name in ("minio_endpoint", "minio_bucket", "kafka_bootstrap_servers", "topic_model_updates",
                 "serving_a_url", "serving_a_grpc", "serving_b_url", "serving_b_grpc", "model_name",
                 "gate_margin", "gate_tolerance", "embedding_dim", "batch_size", "minio_secret"):  # fmt: skip
        assert name in inputs and inputs[name].default is not None, name


def test_steps_and_the_gate_condition(documents: list[dict]):
    spec = documents[0]
    tasks = spec["root"]["dag"]["tasks"]
    assert {"prepare-data", "train-model", "evaluate-model"} <= set(tasks)
    assert tasks["train-model"]["dependentTasks"] == ["prepare-data"]
    condition = next(task for name, task in tasks.items() if name.startswith("condition"))
    assert "evaluate-model" in condition["dependentTasks"]
    assert "evaluate-model-Output" in condition["triggerPolicy"]["condition"]
    gated = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gated) == {"export-model", "publish-model"}
    assert gated["publish-model"]["dependentTasks"] == ["export-model"]
    outputs = spec["components"]["comp-evaluate-model"]["outputDefinitions"]
    assert outputs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"
    assert outputs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.Markdown"


def test_every_step_runs_the_project_image_without_installing(documents: list[dict], package: Path):
    executors = documents[0]["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{step}" for step in STEPS)
    for executor in executors.values():
        assert executor["container"]["image"] == "registry.example/recommender:1.2.3"
    assert "pip install" not in package.read_text()


def test_credentials_come_from_the_secret_only(documents: list[dict], package: Path):
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(platform) == sorted(f"exec-{step}" for step in STEPS)
    for config in platform.values():
        (secret,) = config["secretAsEnv"]
        assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
            ("accessKey", "MINIO_ACCESS_KEY"),
            ("secretKey", "MINIO_SECRET_KEY"),
        }
        assert "secretNameParameter" in secret  # the Secret's name is a pipeline parameter
    text = package.read_text()
    for literal in ("minioadmin", "MINIO_SECRET_KEY=", "access_key", "secret_key:"):
        assert literal not in text
