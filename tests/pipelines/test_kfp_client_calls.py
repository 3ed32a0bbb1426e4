"""upload/schedule: the arguments given to kfp.Client (there is no KFP server on these machines)."""

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipelines import cli
from pipelines.release import read_release_data
from tests.deploy.conftest import IMAGE_REPOSITORY, by_kind_name, render_release
from tests.deploy.helm import helm_binary


class RecordingClient:
    """Stands in for kfp.Client only: records the calls the commands make."""

    def __init__(self, existing_pipeline_id: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.existing_pipeline_id = existing_pipeline_id

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", {"name": name}))
        return self.existing_pipeline_id

    def upload_pipeline(self, path, **kwargs):
        self.calls.append(("upload_pipeline", {"path": path, **kwargs, "package": _package(path)}))
        return SimpleNamespace(pipeline_id="p-1")

    def upload_pipeline_version(self, path, **kwargs):
        self.calls.append(("upload_pipeline_version", {"path": path, **kwargs}))

    def create_experiment(self, name):
        self.calls.append(("create_experiment", {"name": name}))
        return SimpleNamespace(experiment_id="e-1")

    def create_recurring_run(self, **kwargs):
        with open(kwargs["pipeline_package_path"]) as handle:
            kwargs["package_head"] = handle.read(200)
        kwargs["package"] = _package(kwargs["pipeline_package_path"])
        self.calls.append(("create_recurring_run", kwargs))
        return SimpleNamespace(recurring_run_id="r-1")


class RecordingCoreV1Api:
    """Stands in for kubernetes' CoreV1Api only: records the ConfigMap look-ups and answers with
    the ConfigMaps it was given (rendered by `helm template`)."""

    def __init__(self, configmaps: list[dict]) -> None:
        self.configmaps = configmaps
        self.calls: list[tuple[str, str]] = []

    def list_namespaced_config_map(self, namespace, label_selector):
        self.calls.append((namespace, label_selector))
        items = [
            SimpleNamespace(data=c["data"], metadata=SimpleNamespace(name=c["metadata"]["name"]))
            for c in self.configmaps
        ]
        return SimpleNamespace(items=items)


def _package(path: str) -> dict:
    """The compiled package's parameter defaults and component images."""
    spec = next(yaml.safe_load_all(Path(path).read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    executors = spec["deploymentSpec"]["executors"].values()
    return {
        "defaults": {name: p.get("defaultValue") for name, p in parameters.items()},
        "images": {e["container"]["image"] for e in executors},
    }


def _args(argv: list[str]) -> cli.PipelineArgs:
    """`recommender pipeline ACTION ...` parsed, not run: an action returns its command line."""
    assert argv[0] == "pipeline"
    return cli.command.commands[argv[1]].main(argv[2:], standalone_mode=False)


def test_schedule_with_cron_never_overlaps_and_never_catches_up(capsys):
    client = RecordingClient()
    args = _args(
        ["pipeline", "schedule", "--cron", "0 0 * * * *", "--host", "http://kfp", "--param", "epochs=3"]
    )
    assert cli.run(args, client_factory=lambda host: client) == 0
    (name, call) = client.calls[-1]
    assert name == "create_recurring_run"
    assert call["cron_expression"] == "0 0 * * * *"
    assert call["interval_second"] is None
    assert call["max_concurrency"] == 1
    assert call["no_catchup"] is True
    assert call["experiment_id"] == "e-1"
    assert call["params"] == {"epochs": 3}
    assert "PIPELINE DEFINITION" in call["package_head"]
    assert "recurring run" in capsys.readouterr().out


def test_schedule_every_hour_uses_an_interval():
    client = RecordingClient()
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", "http://kfp"])
    assert cli.run(args, client_factory=lambda host: client) == 0
    call = client.calls[-1][1]
    assert call["interval_second"] == 3600
    assert call["cron_expression"] is None
    assert call["max_concurrency"] == 1 and call["no_catchup"] is True


def test_upload_creates_then_adds_versions():
    new = RecordingClient()
    assert cli.run(_args(["pipeline", "upload", "--host", "http://kfp"]), client_factory=lambda h: new) == 0
    assert [c[0] for c in new.calls] == ["get_pipeline_id", "upload_pipeline"]
    assert new.calls[1][1]["pipeline_name"] == "streaming-recommender-training"

    existing = RecordingClient(existing_pipeline_id="p-9")
    argv = ["pipeline", "upload", "--host", "http://kfp", "--version", "v2"]
    assert cli.run(_args(argv), client_factory=lambda h: existing) == 0
    assert existing.calls[1] == (
        "upload_pipeline_version",
        {"path": existing.calls[1][1]["path"], "pipeline_version_name": "v2", "pipeline_id": "p-9"},
    )


@pytest.mark.parametrize("bad", ["epochs=three", "nonsense=1", "publish_new_data=maybe"])
def test_bad_parameters_are_one_line_errors(bad, capsys):
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", "--param", bad])
    assert cli.run(args, client_factory=lambda host: RecordingClient()) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_an_unreachable_endpoint_is_a_clear_error(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", f"http://127.0.0.1:{port}"])
    assert cli.run(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot reach the KFP API at http://127.0.0.1:{port}")
    assert "\n" not in err


def test_no_endpoint_at_all(monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert cli.run(_args(["pipeline", "upload"])) == 1
    assert "no KFP endpoint: pass --host or set KFP_HOST" in capsys.readouterr().err


def test_intervals():
    assert cli.parse_interval("10m") == 600
    assert cli.parse_interval("90s") == 90
    assert cli.parse_interval("1d") == 86400
    for bad in ("0m", "10", "1w", "m"):
        with pytest.raises(ValueError):
            cli.parse_interval(bad)


RELEASE = ["--release", "my-recs", "--namespace", "recs-prod"]


@pytest.fixture(scope="module")
def release_configmap() -> dict:
    """The pipeline ConfigMap of release my-recs in recs-prod, as the chart renders it."""
    manifests = render_release(
        helm_binary(), "my-recs", "recs-prod", "--set", f"image.repository={IMAGE_REPOSITORY}",
        "--set", "image.tag=2.0.0", "--set", "minio.existingSecret=minio-credentials",
    )  # fmt: skip
    return by_kind_name(manifests)[("ConfigMap", "my-recs-streaming-recommender-pipeline")]


def _reader(api: RecordingCoreV1Api):
    return lambda release, namespace: read_release_data(release, namespace, api=api)


def test_schedule_from_a_release_uses_its_parameters_and_image(release_configmap, capsys):
    client, api = RecordingClient(), RecordingCoreV1Api([release_configmap])
    argv = ["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", *RELEASE, "--param", "epochs=3"]
    assert cli.run(_args(argv), client_factory=lambda host: client, release_reader=_reader(api)) == 0
    namespace, selector = api.calls[0]
    assert namespace == "recs-prod"
    assert "app.kubernetes.io/instance=my-recs" in selector.split(",")
    call = client.calls[-1][1]
    host = "my-recs-streaming-recommender-serving-%s.recs-prod.svc"
    expected = {
        "minio_endpoint": "minio.minio:9000",
        "minio_bucket": "recommender",
        "minio_secure": False,
        "minio_secret": "minio-credentials",
        "kafka_bootstrap_servers": "my-cluster-kafka-bootstrap.kafka:9092",
        "topic_model_updates": "model-updates",
        "model_name": "recommender",
        "serving_a_url": f"http://{host % 'a'}:8501",
        "serving_a_grpc": f"{host % 'a'}:8500",
        "serving_b_url": f"http://{host % 'b'}:8501",
        "serving_b_grpc": f"{host % 'b'}:8500",
        "epochs": 3,
    }
    assert call["params"] == expected
    # The package carries them as defaults too, and runs in the release's image.
    assert call["package"]["defaults"].items() >= expected.items()
    assert call["package"]["images"] == {f"{IMAGE_REPOSITORY}:2.0.0"}
    assert "recurring run" in capsys.readouterr().out


def test_an_explicit_param_wins_over_the_release(release_configmap):
    client, api = RecordingClient(), RecordingCoreV1Api([release_configmap])
    overrides = ["--param", "minio_bucket=other", "--param", "minio_secure=true", "--image", "reg/override:1"]
    argv = ["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", *RELEASE, *overrides]
    assert cli.run(_args(argv), client_factory=lambda host: client, release_reader=_reader(api)) == 0
    call = client.calls[-1][1]
    assert call["params"]["minio_bucket"] == "other" and call["params"]["minio_secure"] is True
    assert call["params"]["model_name"] == "recommender"
    assert call["package"]["images"] == {"reg/override:1"}


def test_upload_from_a_release_bakes_its_parameters_into_the_package(release_configmap):
    client, api = RecordingClient(), RecordingCoreV1Api([release_configmap])
    argv = ["pipeline", "upload", "--host", "http://kfp", *RELEASE]
    assert cli.run(_args(argv), client_factory=lambda host: client, release_reader=_reader(api)) == 0
    package = client.calls[1][1]["package"]
    assert (
        package["defaults"]["serving_b_grpc"] == "my-recs-streaming-recommender-serving-b.recs-prod.svc:8500"
    )
    assert package["defaults"]["minio_secret"] == "minio-credentials"
    assert package["images"] == {f"{IMAGE_REPOSITORY}:2.0.0"}


@pytest.mark.parametrize(
    ("options", "configmaps", "message"),
    [
        (["--release", "my-recs"], 1, "--release needs --namespace"),
        (["--namespace", "recs-prod"], 1, "--namespace only goes with --release"),
        (RELEASE, 0, "no pipeline ConfigMap for release 'my-recs' in namespace recs-prod"),
        (RELEASE, 2, "2 pipeline ConfigMap for release 'my-recs'"),
    ],
    ids=["no-namespace", "no-release", "not-installed", "ambiguous"],
)
def test_release_problems_are_one_line_errors(release_configmap, capsys, options, configmaps, message):
    client, api = RecordingClient(), RecordingCoreV1Api([release_configmap] * configmaps)
    argv = ["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", *options]
    assert cli.run(_args(argv), client_factory=lambda host: client, release_reader=_reader(api)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not [c for c in client.calls if c[0] == "create_recurring_run"]


def test_without_a_kubernetes_configuration_the_error_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    argv = ["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", *RELEASE]
    assert cli.run(_args(argv), client_factory=lambda host: RecordingClient()) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Kubernetes configuration (kubeconfig or in-cluster)") and "\n" not in err


def test_a_local_run_from_a_release_points_at_its_services(release_configmap, monkeypatch):
    recorded: list[dict] = []
    monkeypatch.setattr(cli, "run_local", lambda settings, arguments: recorded.append(arguments) or {})
    api = RecordingCoreV1Api([release_configmap])
    argv = ["pipeline", "run", "--local", "--publish-new-data", *RELEASE, "--param", "model_name=recs"]
    assert cli.run(_args(argv), release_reader=_reader(api)) == 0
    [arguments] = recorded
    assert arguments["serving_a_grpc"] == "my-recs-streaming-recommender-serving-a.recs-prod.svc:8500"
    assert arguments["kafka_bootstrap_servers"] == "my-cluster-kafka-bootstrap.kafka:9092"
    assert arguments["model_name"] == "recs" and arguments["publish_new_data"] is True
