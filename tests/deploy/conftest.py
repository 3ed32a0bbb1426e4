"""Fixtures for the deployment tests: the cached helm binary and a chart renderer."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from local.stack.provision import ProvisionError
from tests.deploy.helm import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "streaming-recommender"
FULL_VALUES = Path(__file__).with_name("values-full.yaml")
# `helm template` assumes an old cluster unless told; the chart needs autoscaling/v2.
KUBE_VERSION = "1.33.0"
# The least a user must set (README "Deployment"): the image's repository and the MinIO credentials.
IMAGE_REPOSITORY = "registry.example.com/streaming-recommender"
REQUIRED_SET = [
    "--set",
    f"image.repository={IMAGE_REPOSITORY}",
    "--set",
    "minio.existingSecret=minio-credentials",
]

# The CRDs of the optional resources, as a cluster with the Prometheus Operator and KEDA serves them.
OPTIONAL_APIS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
]
WITH_OPTIONAL_APIS = [arg for api in OPTIONAL_APIS for arg in ("--api-versions", api)]

Renderer = Callable[..., list[dict]]


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm, built once with `go install` into the project cache (like the stack's servers)."""
    try:
        return helm_binary()
    except ProvisionError as exc:
        pytest.fail(f"cannot provision helm: {exc}")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render_release(
    helm: Path, release: str, namespace: str, *args: str, apis: list[str] = WITH_OPTIONAL_APIS
) -> list[dict]:
    """`helm template` of the chart as `release` in `namespace` on a cluster serving the optional
    resources' CRDs (`apis=[]`: one without them); the manifests as dicts."""
    result = run_helm(
        helm, "template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
        *apis, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def render(helm: Path) -> Renderer:
    """Render the chart as release `rel` in namespace `recs` with the given helm arguments."""

    def _render(*args: str) -> list[dict]:
        return render_release(helm, "rel", "recs", *args)

    return _render


@pytest.fixture(scope="module")
def default(render: Renderer) -> list[dict]:
    """The chart rendered with only the values an install must set."""
    return render(*REQUIRED_SET)


@pytest.fixture(scope="module")
def full(render: Renderer) -> list[dict]:
    """The chart rendered with every non-default value of values-full.yaml."""
    return render("-f", str(FULL_VALUES))


def render_notes(
    helm: Path, tmp_path: Path, release: str, namespace: str, *args: str, apis: list[str] = WITH_OPTIONAL_APIS
) -> str:
    """NOTES.txt as `helm install` would print it: `helm template` leaves it out, so a copy of the
    chart renders it into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "NOTES.txt") . | quote }}}\n'
    )
    result = run_helm(
        helm, "template", release, str(chart), "--namespace", namespace, "--kube-version", KUBE_VERSION,
        "--show-only", "templates/zz-notes.yaml", *apis, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["data"]["notes"]


def by_kind_name(manifests: list[dict]) -> dict[tuple[str, str], dict]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def pod_spec(manifest: dict) -> dict:
    """The pod spec of a Deployment, Job, CronJob or Pod."""
    if manifest["kind"] == "Pod":
        return manifest["spec"]
    if manifest["kind"] == "CronJob":
        return manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return manifest["spec"]["template"]["spec"]


def container(manifest: dict, name: str) -> dict:
    spec = pod_spec(manifest)
    for item in spec["containers"] + spec.get("initContainers", []):
        if item["name"] == name:
            return item
    raise AssertionError(f"{manifest['kind']}/{manifest['metadata']['name']} has no container {name}")


def env_of(item: dict) -> dict[str, dict]:
    """A container's env entries by name (value or valueFrom)."""
    return {entry["name"]: entry for entry in item.get("env", [])}


def write_configmap_volume(directory: Path, data: dict[str, str]) -> Path:
    """Lay `data` out as the kubelet mounts a ConfigMap volume: the files in a hidden timestamped
    folder, `..data` linking to it, and one link per key through `..data` (its atomic writer)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / "..2026_01_01_00_00_00.000000001"
    payload.mkdir()
    for key, value in data.items():
        (payload / key).write_text(value)
    (directory / "..data").symlink_to(payload.name)
    for key in data:
        (directory / key).symlink_to(f"..data/{key}")
    return directory
