"""The Helm chart on a real single-node Kubernetes built from source (local/cluster), as a user runs it.

The cluster's images are the ones tests/containers.py builds (project image, TF-Serving stand-in),
imported into its containerd. Kafka and MinIO run as host processes on the node's address, which
pods and this test both reach. The release is installed with `helm install --wait`, then: the
bootstrap's first model, `helm test`, requests from outside the cluster, a second pipeline run that
swaps the model under load, `helm upgrade` and `helm rollback` under load, and `helm uninstall`
leaving nothing of the release. The full values file is installed too, on the same API server.
Run by `make test-cluster` (root; skipped elsewhere with the reason).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from client.core import LoadReport, recommend, run_load, snapshot_users
from common.settings import Settings
from local.cluster.cluster import NODE_IP, Cluster
from local.stack.servers import Stack
from tests.containers import project_image, standin_image
from tests.deploy.conftest import CHART, FULL_VALUES
from tests.deploy.helm import helm_binary
from tests.waiting import wait_until

RELEASE, NAMESPACE = "recs", "recs-prod"
MINIO_SECRET = "minio-credentials"
RELEASE_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


@dataclass
class Env:
    cluster: Cluster
    stack: Stack
    helm: Path
    settings: Settings
    values: list[str]
    kube: ApiClient

    def helm_run(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "HELM_CACHE_HOME": str(self.cluster.workdir / "helm"),
        }
        return subprocess.run(
            [str(self.helm), *args], capture_output=True, text=True, timeout=timeout, env=env
        )


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network devices, mounts, cgroups)"
    missing = [
        t
        for t in (
            "containerd",
            "ctr",
            "runc",
            "iptables",
            "conntrack",
            "podman",
            "buildah",
            "go",
            "gcc",
        )
        if shutil.which(t) is None
    ]
    if missing:
        return f"missing {', '.join(missing)} (scripts/install-test-extras.sh installs them)"
    if not Path(CNI := "/usr/lib/cni/bridge").exists():
        return f"{CNI} missing (apt-get install containernetworking-plugins)"
    return None


@pytest.fixture(scope="module")
def env(pytestconfig: pytest.Config, starts_servers: None) -> Iterator[Env]:
    problem = _problem()
    if problem:
        pytest.skip(f"cluster test skipped: {problem}")
    images = {"project": project_image(pytestconfig), "standin": standin_image(pytestconfig)}
    workdir = Path(f"/var/tmp/srk8s-{secrets.token_hex(3)}")
    cluster = Cluster(workdir, say=lambda line: print(line, flush=True))
    cluster.up()
    stack = Stack(workdir / "stack", host=NODE_IP)
    try:
        for image in images.values():
            cluster.save_and_import(image)
        info = stack.up()
        from kubernetes import client, config

        kube = config.new_client_from_config(str(cluster.kubeconfig))
        core = client.CoreV1Api(kube)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        core.create_namespaced_secret(
            NAMESPACE,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=MINIO_SECRET),
                string_data={"accessKey": info.minio_access_key, "secretKey": info.minio_secret_key},
            ),
        )
        repository, tag = images["project"].rsplit(":", 1)
        standin_repository, standin_tag = images["standin"].rsplit(":", 1)
        values = [
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            f"serving.image.repository={standin_repository}",
            "--set",
            f"serving.image.tag={standin_tag}",
            "--set",
            "serving.image.pullPolicy=Never",
            "--set",
            f"kafka.bootstrapServers={info.kafka_bootstrap}",
            "--set",
            f"minio.endpoint={info.minio_endpoint}",
            "--set",
            f"minio.existingSecret={MINIO_SECRET}",
            "--set",
            "topics.replicationFactor=1",
            "--set",
            "topics.partitions=2",
            # Two shared cores: requests small enough that every pod schedules.
            "--set",
            "modelserver.resources.requests.cpu=50m",
            "--set",
            "serving.resources.requests.cpu=50m",
            "--set",
            "serving.resources.requests.memory=256Mi",
            "--set",
            "bootstrap.resources.requests.cpu=100m",
        ]
        settings = Settings.load_from(info.env())
        yield Env(cluster, stack, helm_binary(), settings, values, kube)
    finally:
        stack.down()
        cluster.down()
    leftovers = [p for p in ("/sys/class/net/srk8s0", str(workdir)) if Path(p).exists()]
    assert not leftovers, leftovers


class Load:
    """Open-loop load from outside the cluster, in a thread, until stopped."""

    def __init__(self, settings: Settings, rate: float = 20) -> None:
        self.stop = threading.Event()
        self.report: LoadReport | None = None
        users = snapshot_users(settings)
        self.thread = threading.Thread(
            target=lambda: setattr(
                self,
                "report",
                run_load(
                    settings, users, duration_s=3600, rate=rate, k=5, drain_s=120, stop=self.stop, seed=7
                ),
            ),
            daemon=True,
        )

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=300)

    def assert_nothing_lost(self) -> LoadReport:
        report = self.report
        assert report is not None, "the load thread did not finish"
        print(report.summary())
        assert report.sent > 0 and report.answered == report.sent, report.summary()
        assert report.dlq == 0 and report.unanswered == [], report.summary()
        return report


def _live(env: Env) -> dict:
    from common.schemas import ServingRecord
    from common.storage import SERVING_RECORD, ObjectStore

    record = ObjectStore.from_settings(env.settings).get_model(SERVING_RECORD, ServingRecord)
    return (
        {}
        if record is None or record.pending is not None
        else {"instance": record.instance, "version": record.version}
    )


def _second_pipeline_run(env: Env) -> None:
    """`recommender pipeline run --local` in a pod, with the release's parameters: the bootstrap Job's
    pod as the chart made it, with the run's arguments instead."""
    from kubernetes import client

    batch = client.BatchV1Api(env.kube)
    [bootstrap] = batch.list_namespaced_job(
        NAMESPACE, label_selector=f"{RELEASE_SELECTOR},app.kubernetes.io/component=bootstrap"
    ).items
    template = bootstrap.spec.template
    template.metadata = client.V1ObjectMeta(labels={"test": "second-run"})
    container = template.spec.containers[0]
    params = next(m.mount_path for m in container.volume_mounts if m.name == "pipeline-parameters")
    container.args = ["pipeline", "run", "--local", "--params-from", params]
    name = f"second-run-{secrets.token_hex(2)}"
    batch.create_namespaced_job(
        NAMESPACE,
        client.V1Job(
            metadata=client.V1ObjectMeta(name=name), spec=client.V1JobSpec(template=template, backoff_limit=0)
        ),
    )

    def finished() -> str:
        status = batch.read_namespaced_job_status(name, NAMESPACE).status
        return "ok" if status.succeeded else ("failed" if status.failed else "")

    assert wait_until(finished, 900, "the second pipeline run", every=5) == "ok"
    batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Foreground")


def test_the_chart_serves_swaps_upgrades_rolls_back_and_uninstalls(env: Env) -> None:
    install = env.helm_run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--wait",
        "--wait-for-jobs",
        "--timeout",
        "20m",
        *env.values,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # 1. The bootstrap trained and published a first model.
    first = _live(env)
    assert first, "no live model after the install"
    # 2. helm test.
    tested = env.helm_run("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # 3. A request sent to Kafka from outside the cluster is answered.
    _, answer, dead, _ = recommend(env.settings, snapshot_users(env.settings)[0], 5, timeout=60)
    assert answer is not None and dead is None, dead
    assert answer.reply.model.instance == first["instance"]
    # 4. A second pipeline run swaps the model; nothing fails meanwhile.
    with Load(env.settings) as load:
        _second_pipeline_run(env)
        second = wait_until(lambda: (live := _live(env)) and live != first and live, 120, "the swap")
        wait_until(lambda: _answered_by(env, second["instance"]), 120, "a reply from the new model")
    report = load.assert_nothing_lost()
    assert {m.split("/")[0] for m in report.models} == {first["instance"], second["instance"]}
    # 5. helm upgrade with a changed value rolls the pods without losing a request.
    with Load(env.settings) as load:
        upgraded = env.helm_run(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "15m",
            *env.values,
            "--set",
            "modelserver.podAnnotations.rolled=yes",
        )
        assert upgraded.returncode == 0, upgraded.stdout[-3000:] + upgraded.stderr[-3000:]
    load.assert_nothing_lost()
    # 6. helm rollback to the first revision.
    with Load(env.settings) as load:
        rolled = env.helm_run(
            "rollback", RELEASE, "1", "--namespace", NAMESPACE, "--wait", "--timeout", "15m"
        )
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    load.assert_nothing_lost()
    history = env.helm_run("history", RELEASE, "--namespace", NAMESPACE, "--output", "json")
    latest = json.loads(history.stdout)[-1]
    assert (latest["status"], latest["description"]) == ("deployed", "Rollback to 1"), latest
    # 7. helm uninstall leaves no pod, job, ConfigMap or Secret of the release.
    removed = env.helm_run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "10m")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert (
        wait_until(lambda: not _release_objects(env), 300, "the release's objects to go", every=3) is not None
    )


def _answered_by(env: Env, instance: str) -> bool:
    _, answer, _, _ = recommend(env.settings, snapshot_users(env.settings)[0], 5, timeout=30)
    return answer is not None and answer.reply.model.instance == instance


def _release_objects(env: Env) -> list[str]:
    from kubernetes import client

    core, batch = client.CoreV1Api(env.kube), client.BatchV1Api(env.kube)
    found = []
    for kind, listing in (
        ("pod", core.list_namespaced_pod),
        ("configmap", core.list_namespaced_config_map),
        ("secret", core.list_namespaced_secret),
        ("job", batch.list_namespaced_job),
    ):
        found += [
            f"{kind}/{item.metadata.name}"
            for item in listing(NAMESPACE, label_selector=RELEASE_SELECTOR).items
        ]
    return found


def test_the_full_values_install_on_an_api_server_without_the_optional_crds(env: Env) -> None:
    """values-full.yaml (every optional part on) is accepted by the real API server; the ServiceMonitor
    is left out with a warning naming its CRD. Its pods need a secured Kafka and a storage class this
    cluster lacks, so the install does not wait for them."""
    from kubernetes import client

    # The namespaces the full values write into besides the release's: KFP's (the MinIO Secret's
    # copy) and Grafana's (the dashboard), which exist wherever those run.
    core = client.CoreV1Api(env.kube)
    for namespace in ("kubeflow", "monitoring"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    installed = env.helm_run(
        "install",
        "full",
        str(CHART),
        "--namespace",
        "full",
        "--create-namespace",
        "-f",
        str(FULL_VALUES),
        "--timeout",
        "5m",
    )
    assert installed.returncode == 0, installed.stderr
    assert "WARNING" in installed.stdout and "monitoring.coreos.com/v1" in installed.stdout, installed.stdout
    removed = env.helm_run("uninstall", "full", "--namespace", "full", "--timeout", "5m")
    assert removed.returncode == 0, removed.stderr
