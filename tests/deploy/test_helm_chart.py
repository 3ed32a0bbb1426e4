"""The Helm chart, checked offline: lint, render with default and non-default values, validate
every manifest against the Kubernetes schemas bundled with kubernetes-validate."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    FULL_VALUES,
    IMAGE_REPOSITORY,
    KUBE_VERSION,
    REQUIRED_SET,
    Renderer,
    by_kind_name,
    container,
    env_of,
    pod_spec,
    render_notes,
    render_release,
    run_helm,
)
from tests.deploy.settings_names import misplaced, recommender_command, unread

STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "helm.sh/chart",
}
# The full values with KEDA instead of the HPA (the two are exclusive).
KEDA_VALUES = [
    "-f",
    str(FULL_VALUES),
    "--set",
    "modelserver.autoscaling.enabled=false",
    "--set",
    "modelserver.autoscaling.keda.enabled=true",
]
VALUE_SETS = pytest.mark.parametrize(
    "values", [REQUIRED_SET, ["-f", str(FULL_VALUES)], KEDA_VALUES], ids=["default", "full", "keda"]
)
# Custom resources kubernetes-validate has no schema for; ScaledObject's fields are checked below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}


@VALUE_SETS
def test_lint_strict_passes(helm: Path, values: list[str]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@VALUE_SETS
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
    # Every built-in kind was checked; only the Prometheus Operator's and KEDA's CRDs have no bundled schema.
    unchecked = [line for line in result.stdout.splitlines() if "Couldn't find schema" in line]
    assert all(any(kind in line for kind in CUSTOM_KINDS) for line in unchecked), unchecked
    passed = result.stdout.count(" passed for resource ")
    assert passed + len(unchecked) == rendered.stdout.count("\nkind: ")


def test_default_install_renders_the_core_and_nothing_optional(default: list[dict]) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in default)
    assert kinds == sorted(
        [
            # On by default: the first model with no manual step (test_bootstrap_job.py).
            ("Job", "rel-streaming-recommender-bootstrap-1"),
            ("ServiceAccount", "rel-streaming-recommender"),
            ("ConfigMap", "rel-streaming-recommender"),
            ("ConfigMap", "rel-streaming-recommender-pipeline"),
            ("Deployment", "rel-streaming-recommender-modelserver"),
            ("PodDisruptionBudget", "rel-streaming-recommender-modelserver"),
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
            "Job": lambda m: m["spec"]["template"],
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
        tag = yaml.safe_load((CHART / "values.yaml").read_text())["serving"]["image"]["tag"]
        assert serving["image"] == f"tensorflow/serving:{tag}"  # tests/unit/test_runtime_pins.py pins it
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
        # Namespace-qualified: the pipeline's pods in KFP's namespace use the same addresses.
        assert config[f"SERVING_{instance.upper()}_URL"] == f"http://{name}.recs.svc:8501"
        assert config[f"SERVING_{instance.upper()}_GRPC"] == f"{name}.recs.svc:8500"
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
    assert not [m for m in full if m["kind"] == "Deployment" and "client" in m["metadata"]["name"]]
    job = manifests[("Job", "recsys-client-1")]
    assert job["spec"]["backoffLimit"] == 1
    assert pod_spec(job)["restartPolicy"] == "Never"
    client = container(job, "client")
    assert client["args"] == ["client", "load", "--rate", "200", "--duration", "1800"]
    # The load starts only once the model server's /readyz answers (a live model).
    wait = container(job, "wait-for-model")
    assert wait["command"][:2] == ["python", "-c"]
    assert "http://recsys-modelserver.recs.svc:8080/readyz" in wait["command"][2]
    assert manifests[("Service", "recsys-modelserver")]["spec"]["ports"][0]["port"] == 8080
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
    assert server["startupProbe"]["failureThreshold"] == 60
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    budget = manifests[("PodDisruptionBudget", "recsys-modelserver")]["spec"]
    assert budget["minAvailable"] == 1 and "maxUnavailable" not in budget
    # KFP's namespace gets its own copy of the chart-made MinIO Secret.
    copies = [
        m["metadata"]["namespace"]
        for m in full
        if m["kind"] == "Secret" and m["metadata"]["name"] == "recsys-minio"
    ]
    assert sorted(copies) == ["kubeflow", "recs"]


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
    for workload, name in (
        (("Deployment", "recsys-modelserver"), "modelserver"),
        (("Job", "recsys-client-1"), "client"),
    ):
        item = container(manifests[workload], name)
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
    # Every missing required value is named at once.
    assert "image.repository is not set" in result.stderr


def test_missing_image_repository_fails_naming_the_value(helm: Path) -> None:
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "minio.existingSecret=minio-credentials",
    )  # fmt: skip
    assert result.returncode != 0
    assert "image.repository is not set" in result.stderr
    assert "--set image.repository=" in result.stderr
    assert "MinIO" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("minio.endpoint=http://minio:9000", "/minio/endpoint"),
        ("serving.instances={a,c}", "/serving/instances/1"),
        ("kafka.bootstrapServers=", "/kafka/bootstrapServers"),
        ("modelserver.replicaCount=two", "/modelserver/replicaCount"),
        ("modelsrever.replicaCount=2", "modelsrever"),
        ("serving.metrics.path=monitoring/metrics", "/serving/metrics/path"),
        (
            "monitoring.prometheusRule.consumerLag.for=10 minutes",
            "/monitoring/prometheusRule/consumerLag/for",
        ),
        ("monitoring.prometheusRule.servingErrors.ratio=5", "/monitoring/prometheusRule/servingErrors/ratio"),
        ("monitoring.dashboard.labels.grafana_dashboard=1", "/monitoring/dashboard/labels/grafana_dashboard"),
        ("monitoring.prometheusRule.deadLetter.for=5m", "deadLetter"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, setting: str, complaint: str) -> None:
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED_SET, "--set", setting
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


WORKLOADS = {"Deployment", "Job", "CronJob", "Pod"}


def _misplaced_variables(manifests: list[dict]) -> tuple[list[str], set[str]]:
    """Variables set where no command that gets them reads them, and the ConfigMaps checked.

    A container's own `env` is checked against its `recommender <command>`; a ConfigMap loaded with
    `envFrom` against the commands of all the containers that load it (each key must be read by
    one of them). Containers that do not run `recommender` (TF-Serving, the client's wait) are not.
    """
    environments: dict[str, tuple[str | None, list[str]]] = {}
    consumers: dict[str, set[str]] = {}
    for manifest in manifests:
        if manifest["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(manifest)
        for item in spec["containers"] + spec.get("initContainers", []):
            command = recommender_command(item.get("command"), item.get("args"))
            where = f"{manifest['kind']}/{manifest['metadata']['name']}/{item['name']}"
            environments[where] = (command, list(env_of(item)))
            for source in item.get("envFrom", []):
                assert "configMapRef" in source, (where, source)  # no Secret loaded whole
                if command is not None:
                    consumers.setdefault(source["configMapRef"]["name"], set()).add(command)
    problems = misplaced(environments)
    configmaps = {m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"}
    for name, commands in sorted(consumers.items()):
        if wrong := unread(configmaps[name], commands):
            problems.append(
                f"ConfigMap/{name} (loaded by {sorted(commands)}) holds variables none reads: {wrong}"
            )
    return problems, set(consumers)


@pytest.mark.parametrize("values", ["default", "full", "keda"])
def test_every_variable_the_chart_sets_is_a_real_setting(
    request: pytest.FixtureRequest, values: str, render: Renderer
) -> None:
    manifests = render(*KEDA_VALUES) if values == "keda" else request.getfixturevalue(values)
    problems, checked = _misplaced_variables(manifests)
    assert not problems, "\n".join(problems)
    # The shared settings ConfigMap is checked; the pipeline's (parameters, mounted as files) is not.
    fullname = "recsys" if values != "default" else "rel-streaming-recommender"
    assert checked == {fullname}


def test_a_variable_on_the_wrong_container_is_caught(render: Renderer) -> None:
    manifests = render(*REQUIRED_SET, "--set", "serving.modelsync.env.MODELSERVER_MAX_BATCH=5")
    problems, _ = _misplaced_variables(manifests)
    assert problems == [
        f"Deployment/rel-streaming-recommender-serving-{instance}/modelsync (recommender modelsync) "
        "sets variables it never reads: ['MODELSERVER_MAX_BATCH']"
        for instance in ("a", "b")
    ]


def test_a_shared_setting_needs_a_consumer_that_reads_it(render: Renderer) -> None:
    # SNAPSHOTS_KEEP is the data publisher's: unread while its CronJob is off, fine once it is on.
    planted = ["--set", "extraConfig.SNAPSHOTS_KEEP=5"]
    problems, _ = _misplaced_variables(render(*REQUIRED_SET, *planted))
    [problem] = problems
    assert problem.startswith(
        "ConfigMap/rel-streaming-recommender (loaded by ['client', 'init', 'modelserver', "
    )
    assert problem.endswith("holds variables none reads: ['SNAPSHOTS_KEEP']")
    enabled = render(*REQUIRED_SET, *planted, "--set", "datapublisher.enabled=true")
    assert _misplaced_variables(enabled) == ([], {"rel-streaming-recommender"})


def test_the_image_is_the_repository_set_at_the_app_version(default: list[dict]) -> None:
    for manifest in default:
        if manifest["kind"] in {"Deployment", "Job", "CronJob", "Pod"}:
            spec = pod_spec(manifest)
            for item in spec["containers"] + spec.get("initContainers", []):
                if item["name"] != "tensorflow-serving":
                    assert item["image"] == f"{IMAGE_REPOSITORY}:0.1.0", manifest["metadata"]["name"]


def test_topics_default_to_three_replicas_for_an_external_cluster(default: list[dict]) -> None:
    config = by_kind_name(default)[("ConfigMap", "rel-streaming-recommender")]["data"]
    assert config["TOPIC_REPLICATION_FACTOR"] == "3"
    assert config["TOPIC_PARTITIONS"] == "4"


def test_modelserver_probes_are_overridable(render: Renderer) -> None:
    manifests = render(
        *REQUIRED_SET,
        "--set", "modelserver.readinessProbe.periodSeconds=20",
        # Helm merges maps: replacing the handler needs the default one set to null.
        "--set-json",
        'modelserver.livenessProbe={"httpGet": null, "tcpSocket": {"port": "http"}, "periodSeconds": 30}',
        "--set", "modelserver.startupProbe.failureThreshold=120",
    )  # fmt: skip
    server = container(
        by_kind_name(manifests)[("Deployment", "rel-streaming-recommender-modelserver")], "modelserver"
    )
    assert server["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 20,
        "timeoutSeconds": 3,
        "failureThreshold": 2,
    }
    assert server["livenessProbe"] == {
        "tcpSocket": {"port": "http"},
        "periodSeconds": 30,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    assert server["startupProbe"]["failureThreshold"] == 120


def test_a_disruption_budget_keeps_model_servers_through_a_drain(
    default: list[dict], render: Renderer
) -> None:
    manifests = by_kind_name(default)
    budget = manifests[("PodDisruptionBudget", "rel-streaming-recommender-modelserver")]
    deployment = manifests[("Deployment", "rel-streaming-recommender-modelserver")]
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    floor = by_kind_name(render(*REQUIRED_SET, "--set", "modelserver.podDisruptionBudget.minAvailable=50%"))
    spec = floor[("PodDisruptionBudget", "rel-streaming-recommender-modelserver")]["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec
    off = render(*REQUIRED_SET, "--set", "modelserver.podDisruptionBudget.enabled=false")
    assert not [m for m in off if m["kind"] == "PodDisruptionBudget"]


@pytest.fixture(scope="module")
def keda(render: Renderer) -> list[dict]:
    return render(*KEDA_VALUES)


def test_keda_scaled_object_targets_the_model_server_on_request_lag(keda: list[dict]) -> None:
    from modelserver.settings import ModelServerSettings

    manifests = by_kind_name(keda)
    scaled = manifests[("ScaledObject", "recsys-modelserver")]
    deployment = manifests[("Deployment", "recsys-modelserver")]
    config = manifests[("ConfigMap", "recsys")]["data"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 12)
    assert (scaled["spec"]["pollingInterval"], scaled["spec"]["cooldownPeriod"]) == (10, 120)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert set(metadata) == {
        "bootstrapServers",
        "consumerGroup",
        "topic",
        "lagThreshold",
        "activationLagThreshold",
        "offsetResetPolicy",
    }
    # KEDA takes trigger metadata as strings only.
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["topic"] == config["TOPIC_REQUESTS"]
    assert metadata["consumerGroup"] == ModelServerSettings.model_fields["modelserver_group_id"].default
    assert (metadata["lagThreshold"], metadata["activationLagThreshold"]) == ("500", "5")
    assert metadata["offsetResetPolicy"] == "earliest"
    # KEDA makes the HPA and owns the replica count.
    assert "replicas" not in deployment["spec"]
    assert not [m for m in keda if m["kind"] == "HorizontalPodAutoscaler"]


def test_keda_authenticates_to_a_secured_kafka_like_the_pods(keda: list[dict]) -> None:
    manifests = by_kind_name(keda)
    [trigger] = manifests[("ScaledObject", "recsys-modelserver")]["spec"]["triggers"]
    auth = manifests[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "tls", "username", "password", "ca"}
    # The password and CA come from the same Secrets as the pods'; the rest from the chart's Secret.
    assert (refs["password"]["name"], refs["password"]["key"]) == ("recommender-kafka-user", "password")
    assert (refs["ca"]["name"], refs["ca"]["key"]) == ("prod-cluster-ca-cert", "ca.crt")
    plain = {"sasl": "scram_sha512", "tls": "enable", "username": "recommender"}
    for parameter, value in plain.items():
        secret = manifests[("Secret", refs[parameter]["name"])]
        assert base64.b64decode(secret["data"][refs[parameter]["key"]]).decode() == value


def test_keda_on_a_plain_kafka_needs_no_authentication(render: Renderer) -> None:
    manifests = render(
        *REQUIRED_SET, "--set", "modelserver.autoscaling.keda.enabled=true",
        "--set", "modelserver.env.MODELSERVER_GROUP_ID=recs-green",
    )  # fmt: skip
    [trigger] = by_kind_name(manifests)[("ScaledObject", "rel-streaming-recommender-modelserver")]["spec"][
        "triggers"
    ]
    assert "authenticationRef" not in trigger
    assert trigger["metadata"]["consumerGroup"] == "recs-green"
    assert not [m for m in manifests if m["kind"] == "TriggerAuthentication"]


def test_keda_refuses_a_sasl_mechanism_it_cannot_be_given(helm: Path) -> None:
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *KEDA_VALUES,
        "--set", "kafka.config.sasl\\.mechanism=GSSAPI",
    )  # fmt: skip
    assert result.returncode != 0
    assert "sasl.mechanism GSSAPI" in result.stderr


def _template_error(helm: Path, *args: str) -> str:
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED_SET, *args
    )
    assert result.returncode != 0, "rendered although it should not"
    return result.stderr


def test_hpa_and_keda_are_exclusive(helm: Path) -> None:
    error = _template_error(
        helm,
        "--set",
        "modelserver.autoscaling.enabled=true",
        "--set",
        "modelserver.autoscaling.keda.enabled=true",
    )
    assert "modelserver.autoscaling.enabled (HPA) and modelserver.autoscaling.keda.enabled (KEDA)" in error


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (
            ["modelserver.autoscaling.enabled=true", "modelserver.autoscaling.maxReplicas=5"],
            "maxReplicas (5)",
        ),
        (
            ["modelserver.autoscaling.keda.enabled=true", "modelserver.autoscaling.keda.maxReplicaCount=5"],
            "keda.maxReplicaCount (5)",
        ),
        (["modelserver.replicaCount=5"], "modelserver.replicaCount (5)"),
    ],
    ids=["hpa", "keda", "fixed"],
)
def test_replicas_are_capped_at_the_request_partitions(
    helm: Path, render: Renderer, settings: list[str], named: str
) -> None:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    error = _template_error(helm, *sets)
    assert named in error and "topics.partitions (4)" in error
    # At the partition count it renders.
    render(*REQUIRED_SET, *[arg.replace("=5", "=4") for arg in sets])
    render(*REQUIRED_SET, *sets, "--set", "topics.partitions=5")


def test_optional_resources_are_left_out_with_a_warning_where_their_crds_are_missing(
    helm: Path, tmp_path: Path
) -> None:
    """A cluster without the Prometheus Operator or KEDA still installs the full values: the
    ServiceMonitor and the ScaledObject (with its TriggerAuthentication) are left out and the
    install's notes name the missing CRD (a real API server refuses a kind it does not serve)."""
    for values, kinds, crd in (
        (["-f", str(FULL_VALUES)], {"ServiceMonitor"}, "monitoring.coreos.com/v1"),
        (KEDA_VALUES, {"ScaledObject", "TriggerAuthentication"}, "keda.sh/v1alpha1"),
    ):
        served = {m["kind"] for m in render_release(helm, "rel", "recs", *values)}
        assert kinds <= served
        bare = {m["kind"] for m in render_release(helm, "rel", "recs", *values, apis=[])}
        assert not kinds & bare, bare
        assert served - CUSTOM_KINDS - {"Secret"} <= bare  # the rest of the release is all there
        notes = render_notes(helm, tmp_path / crd.replace("/", "-"), "rel", "recs", *values, apis=[])
        assert "WARNING" in notes and crd in notes, notes
        assert "WARNING" not in render_notes(
            helm, tmp_path / f"{crd.replace('/', '-')}-ok", "rel", "recs", *values
        )


def test_serving_pods_get_tf_servings_monitoring_flag_and_config_map(
    full: list[dict], default: list[dict], tmp_path: Path
) -> None:
    from tfserving.monitoring import prometheus_path

    manifests = by_kind_name(full)
    config = manifests[("ConfigMap", "recsys-serving-monitoring")]["data"]["monitoring.config"]
    # The text TF-Serving parses, read by the stand-in's parser of the same MonitoringConfig proto.
    (tmp_path / "monitoring.config").write_text(config)
    assert prometheus_path(str(tmp_path / "monitoring.config")) == "/monitoring/tfserving/metrics"
    for instance in ("a", "b"):
        deployment = manifests[("Deployment", f"recsys-serving-{instance}")]
        serving = container(deployment, "tensorflow-serving")
        assert "--monitoring_config_file=/etc/tfserving/monitoring.config" in serving["args"]
        assert {"name": "monitoring", "mountPath": "/etc/tfserving", "readOnly": True} in serving[
            "volumeMounts"
        ]
        volumes = pod_spec(deployment)["volumes"]
        assert {"name": "monitoring", "configMap": {"name": "recsys-serving-monitoring"}} in volumes
        # A changed file restarts the pods: TF-Serving reads it only at start-up.
        assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/monitoring"]
    # Off by default: TF-Serving runs exactly as before.
    plain = by_kind_name(default)
    serving = container(plain[("Deployment", "rel-streaming-recommender-serving-a")], "tensorflow-serving")
    assert not [arg for arg in serving["args"] if arg.startswith("--monitoring_config_file")]
    assert ("ConfigMap", "rel-streaming-recommender-serving-monitoring") not in plain


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and In expressions) selects `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_a_service_monitor_scrapes_tf_serving_on_every_instances_rest_port(full: list[dict]) -> None:
    manifests = by_kind_name(full)
    monitor = manifests[("ServiceMonitor", "recsys-serving")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "rest", "path": "/monitoring/tfserving/metrics", "interval": "15s"}
    ]
    selected = {
        m["metadata"]["name"]
        for m in full
        if m["kind"] == "Service" and _selects(monitor["spec"]["selector"], m["metadata"]["labels"])
    }
    assert selected == {"recsys-serving-a", "recsys-serving-b"}
    for name in selected:
        assert "rest" in {port["name"] for port in manifests[("Service", name)]["spec"]["ports"]}


def test_the_dashboard_is_a_config_map_with_the_sidecars_label_and_the_charts_json(
    full: list[dict], default: list[dict], render: Renderer
) -> None:
    dashboard = by_kind_name(full)[("ConfigMap", "recsys-dashboard")]
    metadata = dashboard["metadata"]
    assert metadata["labels"]["grafana_dashboard"] == "1" and metadata["labels"]["team"] == "recs"
    assert metadata["namespace"] == "monitoring"
    assert metadata["annotations"] == {"grafana_folder": "Recommender"}
    [(key, text)] = dashboard["data"].items()
    assert key.endswith(".json")
    loaded = json.loads(text)
    assert loaded == json.loads((CHART / "dashboards" / "recommender.json").read_text())
    assert loaded["uid"] == "streaming-recommender" and loaded["panels"]
    for panel in loaded["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
    assert not [m for m in default if m["metadata"]["name"].endswith("-dashboard")]
    # The default label, in the release's namespace.
    [own] = [
        m
        for m in render(*REQUIRED_SET, "--set", "monitoring.dashboard.enabled=true")
        if m["metadata"]["name"].endswith("-dashboard")
    ]
    assert own["metadata"]["labels"]["grafana_dashboard"] == "1" and "namespace" not in own["metadata"]


def _alerts(manifests: list[dict]) -> dict[str, dict]:
    [rule] = [m for m in manifests if m["kind"] == "PrometheusRule"]
    return {alert["alert"]: alert for group in rule["spec"]["groups"] for alert in group["rules"]}


def test_the_prometheus_rule_alerts_with_the_values_thresholds(full: list[dict], render: Renderer) -> None:
    from tests.observability.promql import series_names

    [rule] = [m for m in full if m["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = _alerts(full)
    assert {name: (alert["for"], alert["labels"]["severity"]) for name, alert in alerts.items()} == {
        "RecommenderNoLiveModel": ("2m", "critical"),
        "RecommenderModelServerNotReady": ("15m", "warning"),
        "RecommenderConsumerLagGrowing": ("15m", "warning"),
        "RecommenderDeadLetters": ("10m", "warning"),
        "RecommenderPredictRetries": ("10m", "warning"),
        "RecommenderServingErrors": ("10m", "warning"),
    }
    assert "> 5000" in alerts["RecommenderConsumerLagGrowing"]["expr"]
    assert "deriv(" in alerts["RecommenderConsumerLagGrowing"]["expr"]
    assert alerts["RecommenderDeadLetters"]["expr"].endswith("> 0.5")
    assert alerts["RecommenderPredictRetries"]["expr"].endswith("> 1")
    assert alerts["RecommenderServingErrors"]["expr"].endswith("> 0.01")
    for name, alert in alerts.items():
        expr = alert["expr"]
        assert series_names(expr), name  # parses, and selects something
        # Only this release's series, by the labels its ServiceMonitors give them.
        if name == "RecommenderServingErrors":
            assert 'namespace="recs", job=~"recsys-serving-a|recsys-serving-b"' in expr
        else:
            assert expr.count('{namespace="recs", job="recsys-modelserver"}') == expr.count("{"), expr
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    # TF-Serving's error ratio only where its metrics are scraped.
    unscraped = render("-f", str(FULL_VALUES), "--set", "serving.metrics.serviceMonitor.enabled=false")
    assert "RecommenderServingErrors" not in _alerts(unscraped)


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (
            ["monitoring.prometheusRule.enabled=true"],
            "monitoring.prometheusRule.enabled needs modelserver.serviceMonitor.enabled",
        ),
        (
            ["serving.metrics.serviceMonitor.enabled=true"],
            "serving.metrics.serviceMonitor.enabled needs serving.metrics.enabled",
        ),
    ],
)
def test_monitoring_that_could_not_work_is_refused(helm: Path, settings: list[str], complaint: str) -> None:
    assert complaint in _template_error(helm, *[arg for setting in settings for arg in ("--set", setting)])


def test_the_alerts_and_tf_servings_service_monitor_need_the_prometheus_operators_crds(
    helm: Path, tmp_path: Path
) -> None:
    full = ["-f", str(FULL_VALUES)]
    service_monitors_only = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]
    kinds = {m["kind"] for m in render_release(helm, "rel", "recs", *full, apis=service_monitors_only)}
    assert "ServiceMonitor" in kinds and "PrometheusRule" not in kinds
    notes = render_notes(helm, tmp_path / "rules", "rel", "recs", *full, apis=service_monitors_only)
    assert "monitoring.prometheusRule.enabled is true, but this cluster serves no PrometheusRule" in notes
    assert "serving.metrics.serviceMonitor.enabled is true" not in notes
    bare = render_notes(helm, tmp_path / "bare", "rel", "recs", *full, apis=[])
    assert "serving.metrics.serviceMonitor.enabled is true, but this cluster serves no ServiceMonitor" in bare
    # The dashboard is a plain ConfigMap: there on any cluster, and the notes say where.
    assert "the ConfigMap recsys-dashboard in monitoring holds the dashboard" in bare
