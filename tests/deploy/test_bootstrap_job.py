"""The bootstrap Job: `recommender pipeline bootstrap` with the release's settings and its pipeline
parameters mounted, a plain Job (not a hook, which --wait would never reach), on by default."""

from __future__ import annotations

import json
from pathlib import Path

from datapublisher.generate import PRESETS
from pipelines.cli import PipelineArgs, command, pipeline_signature, release_parameters
from pipelines.release import release_config
from tests.deploy.conftest import (
    CHART,
    KUBE_VERSION,
    REQUIRED_SET,
    Renderer,
    by_kind_name,
    container,
    env_of,
    pod_spec,
    render_notes,
    run_helm,
    write_configmap_volume,
)

JOB = ("Job", "rel-streaming-recommender-bootstrap-1")


def _jobs(manifests: list[dict]) -> list[dict]:
    return [
        m
        for m in manifests
        if m["kind"] == "Job" and m["metadata"]["labels"]["app.kubernetes.io/component"] == "bootstrap"
    ]


def _parse(argv: list[str]) -> PipelineArgs:
    """`recommender pipeline ACTION ...` parsed, not run: an action returns its command line."""
    assert argv[0] == "pipeline"
    return command.commands[argv[1]].main(argv[2:], standalone_mode=False)


def _no_kubernetes_api(release: str, namespace: str) -> tuple[dict[str, str], str]:
    raise AssertionError("--params-from must not call the Kubernetes API")


def _parameters_mount(job: dict) -> tuple[str, dict]:
    """Where the Job mounts a ConfigMap volume, and that volume."""
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    [(path, volume)] = [
        (mount["mountPath"], volumes[mount["name"]])
        for mount in container(job, "bootstrap")["volumeMounts"]
        if "configMap" in volumes[mount["name"]]
    ]
    return path, volume


def test_the_job_runs_bootstrap_on_the_mounted_release_parameters(default: list[dict]) -> None:
    manifests = by_kind_name(default)
    job = manifests[JOB]
    # Not a hook: Helm runs hooks only after --wait, which needs the model this Job makes.
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (2, 1200)
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "rel-streaming-recommender"
    assert spec["automountServiceAccountToken"] is False  # the ConfigMap is a volume: no API access
    assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsNonRoot"]
    bootstrap = container(job, "bootstrap")
    path, volume = _parameters_mount(job)
    assert bootstrap["args"] == ["pipeline", "bootstrap", "--params-from", path, "--data-preset", "small"]
    # The arguments are the CLI's own: they parse, and name the mounted folder.
    args = _parse(bootstrap["args"])
    assert (args.action, args.params_from, args.data_preset) == ("bootstrap", Path(path), "small")
    # The volume is the release's pipeline ConfigMap.
    configmap = manifests[("ConfigMap", volume["configMap"]["name"])]
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "pipeline-parameters"
    assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]


def test_the_job_has_the_settings_every_component_has(default: list[dict], full: list[dict]) -> None:
    for manifests, modelserver, fullname in (
        (default, "rel-streaming-recommender-modelserver", "rel-streaming-recommender"),
        (full, "recsys-modelserver", "recsys"),
    ):
        named = by_kind_name(manifests)
        [job] = _jobs(manifests)
        bootstrap = container(job, "bootstrap")
        server = container(named[("Deployment", modelserver)], "modelserver")
        assert bootstrap["image"] == server["image"]
        assert bootstrap["envFrom"] == server["envFrom"] == [{"configMapRef": {"name": fullname}}]
        # The shared env (MinIO keys, Kafka secrets) is the model server's, from the same helper.
        shared = {name: entry for name, entry in env_of(server).items() if "valueFrom" in entry}
        assert shared.items() <= env_of(bootstrap).items()
        assert {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} <= shared.keys()
        for mount in server.get("volumeMounts", []):
            assert mount in bootstrap["volumeMounts"]
    # The full values' secured Kafka: the SASL password and the cluster CA reach the Job too.
    [job] = _jobs(full)
    env = env_of(container(job, "bootstrap"))
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "recommender-kafka-user"
    assert any(
        v.get("secret", {}).get("secretName") == "prod-cluster-ca-cert" for v in pod_spec(job)["volumes"]
    )


def test_the_bootstrap_values_reach_the_job(default: list[dict], full: list[dict]) -> None:
    [job] = _jobs(default)
    bootstrap = container(job, "bootstrap")
    # The first publish may wait for TF-Serving's image pull: longer than the publisher's default.
    assert env_of(bootstrap)["PUBLISHER_LOAD_DEADLINE_SECONDS"]["value"] == "600"
    assert bootstrap["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "4Gi"},
    }
    [job] = _jobs(full)
    assert job["metadata"]["name"] == "recsys-bootstrap-1"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 3600)
    bootstrap = container(job, "bootstrap")
    assert bootstrap["args"][-2:] == ["--data-preset", "default"]
    assert env_of(bootstrap)["PUBLISHER_LOAD_DEADLINE_SECONDS"]["value"] == "900"
    assert bootstrap["resources"]["limits"] == {"memory": "8Gi"}
    assert bootstrap["image"] == "registry.example.com/streaming-recommender:1.2.3"
    assert pod_spec(job)["imagePullSecrets"] == [{"name": "registry-pull"}]


def test_the_mounted_configmap_reads_back_as_the_release_parameters(
    default: list[dict], tmp_path: Path
) -> None:
    manifests = by_kind_name(default)
    job = manifests[JOB]
    path, volume = _parameters_mount(job)
    data = manifests[("ConfigMap", volume["configMap"]["name"])]["data"]
    # The kubelet's layout, at the Job's mount path moved under tmp_path.
    mounted = write_configmap_volume(tmp_path / path.lstrip("/"), data)
    args = _parse([*container(job, "bootstrap")["args"][:2], "--params-from", str(mounted)])
    signature = pipeline_signature()
    read = release_parameters(args, signature, reader=_no_kubernetes_api)
    assert read == release_config(data, signature, "the rendered ConfigMap")
    assert read.parameters["serving_b_url"] == "http://rel-streaming-recommender-serving-b.recs.svc:8501"


def test_bootstrap_disabled_renders_no_job(render: Renderer, helm: Path, tmp_path: Path) -> None:
    manifests = render(*REQUIRED_SET, "--set", "bootstrap.enabled=false")
    assert not _jobs(manifests)
    assert not [m for m in manifests if m["kind"] == "Job"]
    notes = render_notes(helm, tmp_path, "rel", "recs", *REQUIRED_SET, "--set", "bootstrap.enabled=false")
    assert "bootstrap-1" not in notes and "install without --wait" in notes


def test_notes_say_how_to_follow_the_first_model_and_that_upgrades_skip_it(
    helm: Path, tmp_path: Path
) -> None:
    notes = render_notes(helm, tmp_path, "rel", "recs", *REQUIRED_SET)
    assert "kubectl -n recs logs -f job/rel-streaming-recommender-bootstrap-1" in notes
    assert "about a minute" in notes and "small preset" in notes
    assert "with a model live it exits at once and trains nothing" in notes
    assert "--wait-for-jobs" in notes


def test_a_long_release_name_still_gives_a_valid_job_name(render: Renderer) -> None:
    # A Job's name goes into its pods' job-name label: at most 63 characters.
    [job] = _jobs(render(*REQUIRED_SET, "--set", f"fullnameOverride={'r' * 63}"))
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["name"].endswith("-bootstrap-1")


def test_the_preset_values_are_the_generators_presets(helm: Path) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert sorted(schema["properties"]["bootstrap"]["properties"]["dataPreset"]["enum"]) == sorted(PRESETS)
    result = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED_SET,
        "--set", "bootstrap.dataPreset=huge",
    )  # fmt: skip
    assert result.returncode != 0 and "/bootstrap/dataPreset" in result.stderr
