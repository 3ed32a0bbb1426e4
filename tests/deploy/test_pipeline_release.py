"""The chart drives the pipeline: the parameters it renders for a release name real resources of
that release, and the CLI's mapping turns them into the pipeline's typed arguments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.cli import pipeline_signature
from pipelines.release import COMPONENT_LABEL, PART_OF_LABEL, ReleaseError, release_config
from tests.deploy.conftest import (
    IMAGE_REPOSITORY,
    by_kind_name,
    render_notes,
    render_release,
)

RELEASE, NAMESPACE = "my-recs", "recs-prod"
FULLNAME = "my-recs-streaming-recommender"
# The chart makes the MinIO Secret and copies it to KFP's namespace.
CHART_SECRET = [
    "--set", f"image.repository={IMAGE_REPOSITORY}", "--set", "image.tag=2.0.0",
    "--set", "minio.accessKey=test-access", "--set", "minio.secretKey=test-secret-placeholder",
    "--set", "pipeline.namespace=kubeflow", "--set", "minio.endpoint=minio.storage:9000",
    "--set", "kafka.bootstrapServers=prod-kafka-bootstrap.kafka:9092",
]  # fmt: skip


@pytest.fixture(scope="module")
def manifests(helm: Path) -> list[dict]:
    return render_release(helm, RELEASE, NAMESPACE, *CHART_SECRET)


@pytest.fixture(scope="module")
def pipeline_configmap(manifests: list[dict]) -> dict:
    return by_kind_name(manifests)[("ConfigMap", f"{FULLNAME}-pipeline")]


def _service_port(manifests: list[dict], address: str) -> tuple[dict, int]:
    """The rendered Service an in-cluster `name.namespace.svc:port` address reaches, and the port."""
    match = re.fullmatch(r"(?:http://)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", address)
    assert match, f"{address} is not a namespace-qualified Service address"
    name, namespace, port = match.group(1), match.group(2), int(match.group(3))
    assert namespace == NAMESPACE, address
    service = by_kind_name(manifests)[("Service", name)]
    return service, port


def test_the_release_configmap_is_found_by_its_labels(pipeline_configmap: dict) -> None:
    labels = pipeline_configmap["metadata"]["labels"]
    for selector in (f"app.kubernetes.io/instance={RELEASE}", COMPONENT_LABEL, PART_OF_LABEL):
        key, value = selector.split("=")
        assert labels[key] == value


def test_every_serving_address_is_a_port_of_the_instances_service(
    manifests: list[dict], pipeline_configmap: dict
) -> None:
    data = pipeline_configmap["data"]
    for instance in ("a", "b"):
        for key, port_name in ((f"serving_{instance}_url", "rest"), (f"serving_{instance}_grpc", "grpc")):
            service, port = _service_port(manifests, data[key])
            assert service["metadata"]["name"] == f"{FULLNAME}-serving-{instance}"
            ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
            assert ports[port_name] == port, key
            # ... and the Service selects that instance's pods, which listen there.
            deployment = by_kind_name(manifests)[("Deployment", f"{FULLNAME}-serving-{instance}")]
            assert (
                service["spec"]["selector"].items()
                <= deployment["spec"]["template"]["metadata"]["labels"].items()
            )
    assert data["serving_a_url"].startswith("http://")


def test_the_model_server_and_the_pipeline_publish_the_same_addresses(
    manifests: list[dict], pipeline_configmap: dict
) -> None:
    settings = by_kind_name(manifests)[("ConfigMap", FULLNAME)]["data"]
    pipeline = pipeline_configmap["data"]
    for instance in ("a", "b"):
        assert settings[f"SERVING_{instance.upper()}_URL"] == pipeline[f"serving_{instance}_url"]
        assert settings[f"SERVING_{instance.upper()}_GRPC"] == pipeline[f"serving_{instance}_grpc"]


def test_the_named_secret_exists_in_the_release_and_in_kfps_namespace(
    manifests: list[dict], pipeline_configmap: dict
) -> None:
    name = pipeline_configmap["data"]["minio_secret"]
    secrets = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m for m in manifests if m["kind"] == "Secret"
    }
    assert set(secrets) == {(NAMESPACE, name), ("kubeflow", name)}
    for secret in secrets.values():
        # The keys the pipeline reads (pipelines/recommender_pipeline.py SECRET_KEYS).
        assert set(secret["data"]) == {"accessKey", "secretKey"}


def test_an_existing_secret_is_named_as_it_is(helm: Path) -> None:
    rendered = render_release(
        helm, RELEASE, NAMESPACE, "--set", f"image.repository={IMAGE_REPOSITORY}",
        "--set", "minio.existingSecret=minio-credentials",
    )  # fmt: skip
    data = by_kind_name(rendered)[("ConfigMap", f"{FULLNAME}-pipeline")]["data"]
    assert data["minio_secret"] == "minio-credentials"
    assert not [m for m in rendered if m["kind"] == "Secret"]


def test_the_configmap_maps_to_the_pipelines_typed_parameters(pipeline_configmap: dict) -> None:
    config = release_config(pipeline_configmap["data"], pipeline_signature(), "the rendered ConfigMap")
    assert config.image == f"{IMAGE_REPOSITORY}:2.0.0"
    host = f"{FULLNAME}-serving-%s.{NAMESPACE}.svc"
    assert config.parameters == {
        "minio_endpoint": "minio.storage:9000",
        "minio_bucket": "recommender",
        "minio_secure": False,
        "minio_secret": f"{FULLNAME}-minio",
        "kafka_bootstrap_servers": "prod-kafka-bootstrap.kafka:9092",
        "topic_model_updates": "model-updates",
        "model_name": "recommender",
        "serving_a_url": f"http://{host % 'a'}:8501",
        "serving_a_grpc": f"{host % 'a'}:8500",
        "serving_b_url": f"http://{host % 'b'}:8501",
        "serving_b_grpc": f"{host % 'b'}:8500",
    }


def test_a_key_the_pipeline_does_not_take_is_refused(pipeline_configmap: dict) -> None:
    data = pipeline_configmap["data"] | {"serving_c_url": "http://c:8501"}
    with pytest.raises(ReleaseError, match="keys the pipeline does not take: serving_c_url"):
        release_config(data, pipeline_signature(), "ConfigMap x")
    with pytest.raises(ReleaseError, match="minio_secure: 'yes' is not a valid boolean"):
        release_config(pipeline_configmap["data"] | {"minio_secure": "yes"}, pipeline_signature(), "x")


def test_notes_print_the_pipeline_commands_for_this_release(helm: Path, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, RELEASE, NAMESPACE, *CHART_SECRET)
    for action in ("upload", "schedule"):
        assert re.search(
            rf"recommender pipeline {action} +--release {RELEASE} --namespace {NAMESPACE} --host", notes
        ), notes
    assert f"ConfigMap {FULLNAME}-pipeline" in notes
