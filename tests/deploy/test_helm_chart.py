"""The Helm chart, checked offline: lint, render with default and non-default values, validate
every manifest against the Kubernetes schemas bundled with kubernetes-validate."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    CHART,
    FULL_VALUES,
    KUBE_VERSION,
    REQUIRED_SET,
    Renderer,
    by_kind_name,
    container,
    env_of,
    pod_spec,
    run_helm,
)
from tests.deploy.settings_names import known_setting, setting_names

STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "helm.sh/chart",
}


@pytest.fixture(scope="module")
def default(render: Renderer) -> list[dict]:
    return render(*REQUIRED_SET)


@pytest.fixture(scope="module")
def full(render: Renderer) -> list[dict]:
    return render("-f", str(FULL_VALUES))


@pytest.mark.parametrize("values", [REQUIRED_SET, ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_lint_strict_passes(helm: Path, values: list[str]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [REQUIRED_SET, ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_rendered_manifests_pass_strict_kubernetes_validation(
    helm: Path, values: list[str], tmp_path: Path
) -> None:
    rendered = run_helm(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *values)
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.stdout)
    validator = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run(
        [str(validator), "--strict", "-k", KUBE_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every built-in kind was checked; only the Prometheus Operator's CRD has no bundled schema.
    unchecked = [line for line in result.stdout.splitlines() if "Couldn't find schema" in line]
    assert all("ServiceMonitor" in line for line in unchecked), unchecked
    passed = result.stdout.count(" passed for resource ")
    assert passed + len(unchecked) == rendered.stdout.count("\nkind: ")


def test_default_install_renders_the_core_and_nothing_optional(default: list[dict]) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in default)
    assert kinds == sorted(
        [
            ("ServiceAccount", "rel-streaming-recommender"),
            ("ConfigMap", "rel-streaming-recommender"),
            ("Deployment", "rel-streaming-recommender-modelserver"),
            ("Service", "rel-streaming-recommender-modelserver"),
            ("Deployment", "rel-streaming-recommender-serving-a"),
            ("Service", "rel-streaming-recommender-serving-a"),
            ("Deployment", "rel-streaming-recommender-serving-b"),
            ("Service", "rel-streaming-recommender-serving-b"),
            ("Pod", "rel-streaming-recommender-test-recommend"),
        ]
    )


def test_every_resource_carries_the_standard_labels(default: list[dict], full: list[dict]) -> None:
    for manifest in default + full:
        labels = manifest["metadata"]["labels"]
        assert labels.keys() >= STANDARD_LABELS, (manifest["kind"], manifest["metadata"]["name"])
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        templates = {
            "Deployment": lambda m: m["spec"]["template"],
            "CronJob": lambda m: m["spec"]["jobTemplate"]["spec"]["template"],
        }
        if manifest["kind"] in templates:
            pod_labels = templates[manifest["kind"]](manifest)["metadata"]["labels"]
            assert pod_labels.keys() >= STANDARD_LABELS, manifest["metadata"]["name"]


def test_modelserver_has_probes_resources_and_the_init_step(default: list[dict]) -> None:
    deployment = by_kind_name(default)[("Deployment", "rel-streaming-recommender-modelserver")]
    server = container(deployment, "modelserver")
    assert server["args"] == ["modelserver"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["resources"]["requests"]["cpu"] and server["resources"]["limits"]["memory"]
    assert env_of(server)["MODELSERVER_HTTP_PORT"]["value"] == str(server["ports"][0]["containerPort"])
    assert container(deployment, "init")["args"] == ["init"]
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "rel-streaming-recommender"
    service = by_kind_name(default)[("Service", "rel-streaming-recommender-modelserver")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 2


def test_both_serving_instances_come_from_one_template(default: list[dict]) -> None:
    manifests = by_kind_name(default)
    config = manifests[("ConfigMap", "rel-streaming-recommender")]["data"]
    sources = set()
    for instance in ("a", "b"):
        name = f"rel-streaming-recommender-serving-{instance}"
        deployment = manifests[("Deployment", name)]
        serving = container(deployment, "tensorflow-serving")
        assert serving["image"] == "tensorflow/serving:2.19.0"
        assert "--model_base_path=/models/recommender" in serving["args"]
        assert "--model_name=recommender" in serving["args"]
        assert serving["readinessProbe"]["httpGet"]["path"] == "/v1/models/recommender"
        sidecar = container(deployment, "modelsync")
        assert sidecar["args"] == ["modelsync", "--instance", instance, "--model-base-path", "/models"]
        # The two containers share the model folder: written by the sidecar, read by TF-Serving.
        mounts = {c["name"]: c["volumeMounts"][0] for c in (serving, sidecar)}
        assert mounts["tensorflow-serving"]["name"] == mounts["modelsync"]["name"] == "models"
        assert mounts["tensorflow-serving"]["readOnly"] is True and not mounts["modelsync"].get("readOnly")
        assert {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}} in pod_spec(deployment)["volumes"]
        ports = {p["name"]: p["port"] for p in manifests[("Service", name)]["spec"]["ports"]}
        assert ports == {"grpc": 8500, "rest": 8501}
        assert config[f"SERVING_{instance.upper()}_URL"] == f"http://{name}:8501"
        assert config[f"SERVING_{instance.upper()}_GRPC"] == f"{name}:8500"
        sources.add(deployment["metadata"]["labels"]["app.kubernetes.io/component"])
    assert sources == {"serving-a", "serving-b"}


def test_minio_credentials_come_from_the_existing_secret(default: list[dict]) -> None:
    deployment = by_kind_name(default)[("Deployment", "rel-streaming-recommender-modelserver")]
    env = env_of(container(deployment, "modelserver"))
    assert env["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-credentials",
        "key": "accessKey",
    }
    assert env["MINIO_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-credentials",
        "key": "secretKey",
    }
    assert not [m for m in default if m["kind"] == "Secret"]


def test_helm_test_hook_sends_a_request_and_waits_for_the_reply(default: list[dict]) -> None:
    pod = by_kind_name(default)[("Pod", "rel-streaming-recommender-test-recommend")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = container(pod, "recommend")["args"]
    assert args[:2] == ["client", "recommend"]
    assert args[args.index("--user") + 1] == "helm-test"
    assert float(args[args.index("--timeout") + 1]) > 0


def test_full_values_turn_on_every_optional_part(full: list[dict]) -> None:
    manifests = by_kind_name(full)
    hpa = manifests[("HorizontalPodAutoscaler", "recsys-modelserver")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "recsys-modelserver"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 12)
    # With the HPA on, the Deployment leaves the replica count to it.
    assert "replicas" not in manifests[("Deployment", "recsys-modelserver")]["spec"]
    monitor = manifests[("ServiceMonitor", "recsys-modelserver")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    client = container(manifests[("Deployment", "recsys-client")], "client")
    assert client["args"] == ["client", "load", "--rate", "200", "--duration", "1800"]
    cron = manifests[("CronJob", "recsys-datapublisher")]
    assert cron["spec"]["schedule"] == "*/30 * * * *"
    assert container(cron, "datapublisher")["args"] == [
        "datapublisher",
        "publish",
        "--generate",
        "--preset",
        "small",
    ]
    for instance in ("a", "b"):
        claim = manifests[("PersistentVolumeClaim", f"recsys-serving-{instance}-models")]
        assert claim["spec"]["storageClassName"] == "fast-ssd"
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
        volumes = pod_spec(manifests[("Deployment", f"recsys-serving-{instance}")])["volumes"]
        assert {
            "name": "models",
            "persistentVolumeClaim": {"claimName": f"recsys-serving-{instance}-models"},
        } in volumes
        sidecar = container(manifests[("Deployment", f"recsys-serving-{instance}")], "modelsync")
        assert env_of(sidecar)["MODELSYNC_KEEP_VERSIONS"]["value"] == "3"
    server = container(manifests[("Deployment", "recsys-modelserver")], "modelserver")
    assert server["image"] == "registry.example.com/streaming-recommender:1.2.3"
    assert env_of(server)["MODELSERVER_PROTOCOL"]["value"] == "rest"


def test_kafka_tls_and_sasl_settings_pass_through(full: list[dict]) -> None:
    manifests = by_kind_name(full)
    config = manifests[("ConfigMap", "recsys")]["data"]
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == "prod-kafka-bootstrap.kafka:9093,prod-kafka-1.kafka:9093"
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["KAFKA_SASL_USERNAME"] == "recommender"
    assert config["KAFKA_SSL_CA_LOCATION"] == "/etc/recommender/kafka-ca/ca.crt"
    # The password is never in the ConfigMap: it comes from the user's Secret.
    assert "KAFKA_SASL_PASSWORD" not in config
    for deployment in ("recsys-modelserver", "recsys-client"):
        item = container(manifests[("Deployment", deployment)], deployment.removeprefix("recsys-"))
        assert env_of(item)["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "recommender-kafka-user",
            "key": "password",
        }
        assert {"name": "kafka-ca", "mountPath": "/etc/recommender/kafka-ca", "readOnly": True} in item[
            "volumeMounts"
        ]
    volumes = pod_spec(manifests[("Deployment", "recsys-modelserver")])["volumes"]
    assert volumes == [
        {
            "name": "kafka-ca",
            "secret": {"secretName": "prod-cluster-ca-cert", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        }
    ]


def test_chart_made_secret_holds_the_minio_keys_and_nothing_leaks(full: list[dict]) -> None:
    manifests = by_kind_name(full)
    secret = manifests[("Secret", "recsys-minio")]
    assert base64.b64decode(secret["data"]["accessKey"]).decode() == "test-access-key"
    assert base64.b64decode(secret["data"]["secretKey"]).decode() == "test-secret-key-placeholder"
    for manifest in full:
        if manifest["kind"] != "Secret":
            assert "test-secret-key-placeholder" not in str(manifest), manifest["metadata"]["name"]


def test_missing_minio_credentials_fail_with_a_clear_message(helm: Path) -> None:
    result = run_helm(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode != 0
    assert "MinIO credentials missing: set minio.existingSecret" in result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("minio.endpoint=http://minio:9000", "/minio/endpoint"),
        ("serving.instances={a,c}", "/serving/instances/1"),
        ("kafka.bootstrapServers=", "/kafka/bootstrapServers"),
        ("modelserver.replicaCount=two", "/modelserver/replicaCount"),
        ("modelsrever.replicaCount=2", "modelsrever"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, setting: str, complaint: str) -> None:
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED_SET, "--set", setting
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_every_variable_the_chart_sets_is_a_real_setting(default: list[dict], full: list[dict]) -> None:
    names = setting_names()
    set_by_chart: set[str] = set()
    for manifest in default + full:
        if manifest["kind"] == "ConfigMap":
            set_by_chart |= manifest["data"].keys()
        if manifest["kind"] in {"Deployment", "CronJob", "Pod"}:
            spec = pod_spec(manifest)
            for item in spec["containers"] + spec.get("initContainers", []):
                if item["name"] != "tensorflow-serving":
                    set_by_chart |= env_of(item).keys()
    unknown = sorted(name for name in set_by_chart if not known_setting(name, names))
    assert not unknown, f"not read by any settings class: {unknown}"
