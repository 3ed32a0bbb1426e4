"""The README's promise: a secured Kafka (SASL_SSL, SCRAM-SHA-512) and MinIO (HTTPS, private CA)
need no code change, only the documented variables.

One end-to-end flow over the secured servers (init, data, upload, model sync + TF-Serving
stand-in, model publisher, model server, client), the refusals of wrong credentials and
untrusted transports in bounded time, and a scan of everything the run wrote for the secrets.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from common.settings import Settings
from common.storage import ObjectStore
from local.modelserver import ModelServerProcess
from local.stack import Stack
from local.stack.servers import HOST, free_port
from local.stack.serving import ServingInstance
from tests.secure.harness import Cli, Result, Running, files_holding
from trainer.upload import upload_export

pytestmark = pytest.mark.stack

# Beat the popularity baseline, so the model publisher's quality gate passes.
METRICS = {"hr_at_10": 0.5, "ndcg_at_10": 0.3, "popularity_hr_at_10": 0.2, "popularity_ndcg_at_10": 0.1}
# The generator names users u0.. and products p0..: these are exactly the tiny model's.
DATA = ["--generate", "--users", "6", "--products", "120", "--purchases", "60", "--seed", "1"]
# A refused Kafka client fails when the component's own 30 s metadata timeout runs out.
REFUSAL_BOUND_S = 60.0
KAFKA_CLIENT_TLS = ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
                    "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_LOCATION")  # fmt: skip


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


@dataclass(frozen=True)
class Refusal:
    command: list[str]
    env: dict[str, str]
    cause: str  # what stderr must say about why
    last_line: str  # regex the last line not from librdkafka ("%...") must match


def refusal_cases(env: dict[str, str]) -> dict[str, Refusal]:
    wrong_password = env | {"KAFKA_SASL_PASSWORD": secrets.token_urlsafe(32)}
    sasl_refused = "SASL authentication error: Authentication failed"
    kafka_failed, storage_failed = r"^error: Kafka failed: ", r"^error: object storage failed: "
    return {
        "kafka-wrong-password": Refusal(["init"], wrong_password, sasl_refused, kafka_failed),
        "client-wrong-password": Refusal(
            ["client", "recommend", "--user", "u1", "--timeout", "5"],
            wrong_password,
            sasl_refused,
            kafka_failed,
        ),
        # A long-running service must stop too, not retry forever.
        "modelserver-wrong-password": Refusal(
            ["modelserver", "--port", str(free_port())],
            wrong_password | {"MODELSERVER_HTTP_HOST": HOST, "MODELSERVER_GROUP_ID": "refused"},
            sasl_refused,
            r"ERROR modelserver.loop: stopping: model-updates: ",
        ),
        # A client with no security settings at all speaks PLAINTEXT to the TLS listener.
        "kafka-plaintext": Refusal(
            ["init"], without(env, *KAFKA_CLIENT_TLS), "connection closed by peer", kafka_failed
        ),
        "kafka-untrusted-ca": Refusal(
            ["init"], without(env, "KAFKA_SSL_CA_LOCATION"), "certificate verify failed", kafka_failed
        ),
        "minio-plain-http": Refusal(
            ["init"],
            env | {"MINIO_SECURE": "false"},
            "Client sent an HTTP request to an HTTPS server",
            storage_failed,
        ),
        "minio-untrusted-ca": Refusal(
            ["init"], without(env, "MINIO_CA_FILE"), "CERTIFICATE_VERIFY_FAILED", storage_failed
        ),
    }


@pytest.fixture(scope="module")
def initialised(secure_env: dict[str, str], cli: Cli) -> Result:
    result = cli.run("init", ["init"], secure_env, timeout=60)
    assert result.returncode == 0, result.describe()
    return result


@pytest.fixture(scope="module")
def refused(secure_env: dict[str, str], cli: Cli, initialised: Result) -> dict[str, tuple[Running, Refusal]]:
    """Every refused client, started at once (after init made the bucket, so none races to create
    it); their bounded waits overlap each other and the end-to-end flow."""
    return {
        name: (cli.start(name, case.command, case.env), case)
        for name, case in refusal_cases(secure_env).items()
    }


def tiny_export(directory: Path) -> Path:
    from tests.serving.tiny_model import save_tiny_model  # TensorFlow: imported only when needed

    export = save_tiny_model(directory)
    (export / "assets.extra").mkdir()
    (export / "assets.extra" / "metadata.json").write_text(json.dumps({"metrics": METRICS}))
    return export


@dataclass
class Flow:
    steps: dict[str, Result]  # each CLI step's outcome, by name
    version: int = 0  # the uploaded model version


@pytest.fixture(scope="module")
def flow(secure_env: dict[str, str], cli: Cli, run_dir: Path, initialised: Result, refused: dict) -> Flow:
    """Data, upload, serving, publishing and requests over the secured servers."""
    flow = Flow({"init": initialised})
    serving = ServingInstance(run_dir / "serving-a", "a", env=secure_env)
    env = secure_env | serving.env() | {"PUBLISHER_LOAD_DEADLINE_SECONDS": "90"}
    modelserver = ModelServerProcess(run_dir / "modelserver", env)
    wrong_password = {
        "KAFKA_SASL_PASSWORD": secrets.token_urlsafe(32),
        "PUBLISHER_DELIVERY_TIMEOUT_SECONDS": "8",
    }
    # TensorFlow's import dominates both processes' start: start them while data and model go up.
    with ThreadPoolExecutor(2) as pool:
        try:
            starting = [pool.submit(serving.start), pool.submit(modelserver.start)]
            published = cli.run("datapublisher", ["datapublisher", "publish", *DATA], env)
            flow.steps["datapublisher"] = published
            assert published.returncode == 0, published.describe()
            store = ObjectStore.from_settings(Settings.load())  # the secure variables, as every CLI
            instance, flow.version = upload_export(store, tiny_export(run_dir / "export"))
            assert instance == "a"
            for future in starting:
                future.result(timeout=150)
            serving.wait_available(flow.version, timeout=60)
            # A wrong password shows only at the end, when the update is produced: bounded by the
            # delivery timeout (what happens to models/serving.json then is the publisher's own test).
            flow.steps["modelpublisher-wrong-password"] = cli.run(
                "modelpublisher-wrong-password", ["modelpublisher", "publish"], env | wrong_password
            )
            flow.steps["modelpublisher"] = cli.run("modelpublisher", ["modelpublisher", "publish"], env)
            flow.steps["recommend"] = cli.run(
                "recommend", ["client", "recommend", "--user", "u1", "--k", "5", "--timeout", "45"], env
            )
            flow.steps["load"] = cli.run(
                "load", ["client", "load", "--rate", "20", "--duration", "2", "--drain", "20"], env
            )
        finally:
            modelserver.stop()
            serving.stop()
    return flow


def test_the_components_work_end_to_end_over_sasl_ssl_and_https(secure_env: dict, flow: Flow) -> None:
    # Only the documented variables, and they say SASL_SSL and HTTPS with the run's own CA.
    assert secure_env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and secure_env["MINIO_SECURE"] == "true"
    assert secure_env["KAFKA_SSL_CA_LOCATION"] == secure_env["MINIO_CA_FILE"]
    steps = flow.steps
    for name in ("init", "datapublisher", "modelpublisher", "recommend", "load"):
        assert steps[name].returncode == 0, steps[name].describe()
    assert "topics created: recommendation-requests" in steps["init"].stdout
    assert ": 60 rows, 6 users" in steps["datapublisher"].stdout
    published = f"published recommender version {flow.version} on instance a"
    assert published in steps["modelpublisher"].stderr, steps["modelpublisher"].describe()
    # The reply came back over SASL_SSL from the model the publisher announced over SASL_SSL.
    assert f"user u1: 5 items from recommender instance a v{flow.version}" in steps["recommend"].stdout
    counts = re.search(r"sent (\d+)  answered (\d+)", steps["load"].stdout)
    assert counts and int(counts[1]) > 0 and counts[1] == counts[2], steps["load"].stdout


def test_the_model_publisher_with_a_wrong_password_fails_in_bounded_time(flow: Flow) -> None:
    refused = flow.steps["modelpublisher-wrong-password"]
    assert refused.returncode == 1 and refused.seconds < 40, refused.describe()
    assert "SASL authentication error" in refused.stderr, refused.describe()
    last = [line for line in refused.stderr.splitlines() if not line.startswith("%")][-1]
    assert re.match(r"error: Kafka .* the model update on model-updates", last), refused.describe()


def test_wrong_credentials_and_untrusted_transports_are_refused_in_bounded_time(refused: dict) -> None:
    problems = []
    for running, case in refused.values():
        result = running.wait(REFUSAL_BOUND_S + 30)
        own_lines = [line for line in result.stderr.splitlines() if not line.startswith("%")]
        if result.returncode != 1:
            problems.append(f"exit {result.returncode}, expected 1")
        elif result.seconds > REFUSAL_BOUND_S:
            problems.append(f"took {result.seconds:.0f}s, more than {REFUSAL_BOUND_S:.0f}s")
        elif "Traceback" in result.stderr or not own_lines or not re.search(case.last_line, own_lines[-1]):
            problems.append(f"expected no traceback and a last line matching {case.last_line!r}")
        elif case.cause not in result.stderr:
            problems.append(f"stderr does not say {case.cause!r}")
        else:
            continue
        problems[-1] = f"{result.describe()}\n  -> {problems[-1]}"
    assert not problems, "\n".join(problems)


def test_the_controller_listener_admits_only_a_client_certificate_from_the_ca(secure_stack: Stack) -> None:
    # Not a documented client endpoint, but it must not be an unauthenticated way in either.
    tls, port = secure_stack.tls, secure_stack.kafka.controller_port
    assert tls is not None
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as conn,
        pytest.raises(ssl.SSLError, match=r"BAD_CERTIFICATE|CERTIFICATE_REQUIRED"),
    ):
        conn.sendall(b"\x00\x00\x00\x00")
        conn.recv(1)  # TLS 1.3: the server's refusal of the missing certificate arrives here


@pytest.fixture(scope="module")
def pipeline_package(secure_env: dict[str, str], cli: Cli, run_dir: Path) -> Path:
    output = run_dir / "pipeline.yaml"
    result = cli.run("pipeline-compile", ["pipeline", "compile", "--output", str(output)], secure_env)
    assert result.returncode == 0 and output.is_file(), result.describe()
    return output


@pytest.fixture(scope="module")
def rendered_chart(secure_stack: Stack, run_dir: Path) -> Path:
    """`helm template` of the chart configured for this secured stack (secrets by reference)."""
    from local.stack.provision import ProvisionError
    from tests.deploy.conftest import CHART, KUBE_VERSION, run_helm
    from tests.deploy.helm import helm_binary

    try:
        helm = helm_binary()
    except ProvisionError as exc:
        pytest.fail(f"cannot provision helm: {exc}")
    info = secure_stack.info()
    kafka = {
        "bootstrapServers": info.kafka_bootstrap,
        "config": {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": info.kafka_sasl_username,
        },
        "secretConfig": [{"property": "sasl.password", "secretName": "kafka-user", "key": "password"}],
        "tls": {"caSecretName": "kafka-cluster-ca"},
    }
    minio = {"endpoint": info.minio_endpoint, "secure": True, "existingSecret": "minio-credentials"}
    values = run_dir / "values-secure.yaml"
    image = {"repository": "registry.example.com/streaming-recommender"}
    values.write_text(yaml.safe_dump({"image": image, "kafka": kafka, "minio": minio}))
    result = run_helm(
        helm, "template", "rel", str(CHART), "--namespace", "recs", "--kube-version", KUBE_VERSION,
        "-f", str(values),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = run_dir / "chart.yaml"
    output.write_text(result.stdout)
    return output


def test_no_secret_is_written_anywhere(
    secure_stack: Stack,
    run_dir: Path,
    flow: Flow,
    refused: dict,
    pipeline_package: Path,
    rendered_chart: Path,
    tmp_path: Path,
) -> None:
    for running, _ in refused.values():
        running.wait(REFUSAL_BOUND_S + 30)  # their output is complete before it is scanned
    info = secure_stack.info()
    assert info.kafka_sasl_password and len(info.kafka_sasl_password) >= 32
    assert len(info.minio_secret_key) >= 32
    broker = secure_stack.kafka.broker_user
    assert broker is not None
    watched = {"KAFKA_SASL_PASSWORD": info.kafka_sasl_password, "MINIO_SECRET_KEY": info.minio_secret_key}

    # The scan can fail: a planted secret, raw or base64 (as in a Kubernetes Secret), is found.
    planted = tmp_path / "planted"
    (planted / "deep").mkdir(parents=True)
    (planted / "deep" / "raw.log").write_text(f"connecting with {info.kafka_sasl_password} now")
    (planted / "b64.yaml").write_bytes(b"key: " + base64.b64encode(info.minio_secret_key.encode()))
    (planted / "clean.log").write_text("nothing to see")
    assert files_holding([planted], watched) == [
        f"{planted / 'b64.yaml'}: MINIO_SECRET_KEY",
        f"{planted / 'deep' / 'raw.log'}: KAFKA_SASL_PASSWORD",
    ]

    # What was scanned is what the run wrote: every component's output is there.
    written = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    for expected in ("cli/recommend.out", "cli/kafka-wrong-password.err", "modelserver/modelserver.log",
                     "serving-a/modelsync/modelsync.log", "serving-a/tfserving/tfserving.log",
                     "pipeline.yaml", "chart.yaml"):  # fmt: skip
        assert expected in written, f"{expected} missing from {sorted(written)}"
    chart = rendered_chart.read_text()
    assert "secretKeyRef" in chart and "KAFKA_SASL_PASSWORD" in chart  # the password is referenced

    roots = [secure_stack.workdir, run_dir]
    assert files_holding(roots, watched) == []
    # The broker's own inter-broker password is in its own config file (Kafka reads it there), only.
    assert files_holding(roots, {"broker SCRAM password": broker.password}) == [
        f"{secure_stack.kafka.properties}: broker SCRAM password"
    ]
