"""The stand-in's --monitoring_config_file, against real stand-in processes: TF-Serving's Prometheus
endpoint at the configured path, its request metrics under TF-Serving's names, labels and unit, and
no endpoint without the flag (tensorflow_model_server's behaviour, tfserving/monitoring.py)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.observability.exposition import families, samples
from tests.serving.tiny_model import save_tiny_model
from tests.tfserving.standin import MonitoredStandIn
from tfserving.monitoring import (
    DEFAULT_PROMETHEUS_PATH,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    MonitoringConfigError,
    prometheus_path,
)

NAME = "recommender"
VERSION = 3
PATH = "/metrics/tfserving"  # not the default: the server must take it from the file
# util.cc's Exponential(10, 1.8, 33) bounds as TF-Serving prints them, then +Inf.
BOUNDS = [format(10 * 1.8**i, "g") for i in range(33)] + ["+Inf"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, starts_servers: None) -> Iterator[dict]:
    """One stand-in with a monitoring config, one without, both serving the tiny model."""
    base = tmp_path_factory.mktemp("tfserving")
    save_tiny_model(base / NAME / str(VERSION))
    config = base / "monitoring.config"
    config.write_text(f'prometheus_config {{\n  enable: true\n  path: "{PATH}"\n}}\n')
    started = {
        "monitored": MonitoredStandIn(base / "monitored", base / NAME, config),
        "plain": MonitoredStandIn(base / "plain", base / NAME, None),
    }
    try:
        # TensorFlow's import dominates each start: both at once.
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(server.start) for server in started.values()]:
                future.result()
        for server in started.values():
            server.wait_available(VERSION)
        yield started
    finally:
        for server in started.values():
            server.stop()


def scrape(server: MonitoredStandIn) -> tuple[Counter, Counter, str]:
    """The request counts by (model_name, status), the latency counts by (model_name, API,
    entrypoint), and the page."""
    response = server.get(PATH)
    assert response.status_code == 200, response.text
    page = response.text
    counts, timed = Counter(), Counter()
    for sample in samples(page):
        if sample.name == REQUEST_COUNT:
            counts[sample.labels["model_name"], sample.labels["status"]] = int(sample.value)
        elif sample.name == f"{REQUEST_LATENCY}_count":
            labels = sample.labels
            timed[labels["model_name"], labels["API"], labels["entrypoint"]] = int(sample.value)
    return counts, timed, page


def predict(channel: grpc.Channel, model: str, signature: str, users: list) -> grpc.StatusCode:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["users"].CopyFrom(tf.make_tensor_proto(users))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto([3] * len(users), tf.int32))
    try:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_without_the_flag_the_rest_port_serves_no_metrics(servers: dict) -> None:
    plain = servers["plain"]
    assert plain.get(f"/v1/models/{NAME}").status_code == 200
    for path in (DEFAULT_PROMETHEUS_PATH, PATH):
        assert plain.get(path).status_code == 404, path


def test_the_config_file_serves_the_metrics_at_its_path_only(servers: dict) -> None:
    monitored = servers["monitored"]
    response = monitored.get(PATH)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"
    # TF-Serving's exporter: a TYPE line per metric, no HELP lines.
    assert families(response.text) == {REQUEST_COUNT: "counter", REQUEST_LATENCY: "histogram"}
    assert "# HELP" not in response.text
    assert monitored.get(DEFAULT_PROMETHEUS_PATH).status_code == 404


def test_requests_are_counted_and_timed_as_tf_serving_counts_them(servers: dict) -> None:
    monitored = servers["monitored"]
    counts_before, timed_before, _ = scrape(monitored)
    with grpc.insecure_channel(monitored.grpc_target) as channel:
        assert predict(channel, NAME, "recommend", ["u1", "stranger"]) == grpc.StatusCode.OK
        assert predict(channel, NAME, "recommend_with_purchased", ["u2"]) == grpc.StatusCode.OK
        assert predict(channel, "nope", "recommend", ["u1"]) == grpc.StatusCode.NOT_FOUND
        assert predict(channel, NAME, "no-such-signature", ["u1"]) == grpc.StatusCode.INVALID_ARGUMENT
        # Status requests are not counted over gRPC...
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = NAME
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
    body = {"signature_name": "recommend", "instances": [{"users": "u1", "k": 2}]}
    assert httpx.post(f"{monitored.rest_url}/v1/models/{NAME}:predict", json=body).status_code == 200
    assert (
        httpx.post(f"{monitored.rest_url}/v1/models/{NAME}/versions/9:predict", json=body).status_code == 404
    )
    # ...but are over REST, with no API, as TF-Serving's REST dispatcher records every request.
    assert monitored.get(f"/v1/models/{NAME}").status_code == 200
    counts, timed, page = scrape(monitored)

    assert counts - counts_before == {
        (NAME, "OK"): 4,
        (NAME, "INVALID_ARGUMENT"): 1,
        (NAME, "NOT_FOUND"): 1,
        ("nope", "NOT_FOUND"): 1,
    }
    # Only successful requests are timed.
    assert timed - timed_before == {
        (NAME, "Predict", "GRPC"): 2,
        (NAME, "predict", "REST"): 1,
        (NAME, "", "REST"): 1,
    }
    grpc_labels = {"model_name": NAME, "API": "Predict", "entrypoint": "GRPC"}
    series = [
        s
        for s in samples(page)
        if s.name.startswith(REQUEST_LATENCY) and s.labels.items() >= grpc_labels.items()
    ]
    buckets = [s for s in series if s.name == f"{REQUEST_LATENCY}_bucket"]
    assert [s.labels["le"] for s in buckets] == BOUNDS
    cumulative = [s.value for s in buckets]
    assert cumulative == sorted(cumulative)
    [count] = [s.value for s in series if s.name == f"{REQUEST_LATENCY}_count"]
    [total] = [s.value for s in series if s.name == f"{REQUEST_LATENCY}_sum"]
    assert cumulative[-1] == count
    # Microseconds: a real predict call takes more than 50 us and less than a minute.
    assert 50 * count < total < 60e6 * count


def test_a_file_tf_serving_cannot_parse_stops_the_stand_in(tmp_path: Path) -> None:
    bad = tmp_path / "monitoring.config"
    bad.write_text("prometheus { enable: true }\n")
    for config, message in ((bad, f"Invalid protobuf file: '{bad}'"), (tmp_path / "missing", "cannot read")):
        result = subprocess.run(
            [sys.executable, "-m", "local", "tfserving", "--model_base_path", str(tmp_path),
             "--monitoring_config_file", str(config)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (
            'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }',
            DEFAULT_PROMETHEUS_PATH,
        ),
        ('prometheus_config {\n  enable: true\n  path: "/m"\n}', "/m"),
        ("prometheus_config { enable: true }", DEFAULT_PROMETHEUS_PATH),  # an empty path is the default
        ('prometheus_config { enable: false path: "/m" }', None),
        ("", None),
    ],
)
def test_the_file_is_read_as_tf_serving_reads_a_monitoring_config(
    tmp_path: Path, text: str, path: str | None
) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text(text)
    assert prometheus_path(str(config)) == path


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true, port: 9090 }")
    with pytest.raises(MonitoringConfigError, match='has no field named "port"'):
        prometheus_path(str(config))


def test_compose_mounts_a_config_that_enables_the_default_path() -> None:
    shared = Path(__file__).resolve().parents[2] / "deploy" / "tfserving" / "monitoring.config"
    assert prometheus_path(str(shared)) == DEFAULT_PROMETHEUS_PATH
