"""Every metric the chart's Grafana dashboard and alerts query is one the code serves.

The PromQL of the dashboard (dashboards/recommender.json, as the chart renders it into its
ConfigMap) and of the PrometheusRule (rendered with every alert on) is read for its series names,
which are checked against what real processes serve: a model server's /metrics, routed to a live
model on the TF-Serving stand-in, and the stand-in's monitoring endpoint as docker-compose's
monitoring config (deploy/tfserving/monitoring.config) enables it. A series counts as served when
a family declares it in the exposition, with the suffixes its type gives it (_bucket only for a
histogram...), so a typo, a gauge queried as a histogram or a counter without its _total is caught.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from common.kafka import ensure_topics
from common.schemas import ModelUpdate
from common.settings import Settings
from local.modelserver import ModelServerProcess
from local.stack import StackInfo
from local.world import announce, fresh_topics
from tests.deploy.conftest import CHART, FULL_VALUES, render_release
from tests.observability.exposition import families, family_of, samples, unserved
from tests.observability.promql import PromQLError, dashboard_expressions, series_names
from tests.serving.tiny_model import save_tiny_model
from tests.serving_world import answer_sentinels
from tests.tfserving.standin import MonitoredStandIn
from tests.waiting import wait_until
from tfserving.monitoring import DEFAULT_PROMETHEUS_PATH

REPO = Path(__file__).resolve().parents[2]
MODEL, VERSION = "recommender", 3
METRICS = {"hr_at_10": 0.2, "ndcg_at_10": 0.1, "popularity_hr_at_10": 0.1, "popularity_ndcg_at_10": 0.05}
MODELSERVER, STANDIN = "model server /metrics", "stand-in monitoring endpoint"


@pytest.fixture(scope="module")
def expressions(helm: Path) -> list[str]:
    """Every PromQL expression of the dashboard and the alerts, as the chart renders them."""
    manifests = render_release(helm, "rel", "recs", "-f", str(FULL_VALUES))
    [dashboard] = [
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")
    ]
    [text] = dashboard["data"].values()
    assert json.loads(text) == json.loads((CHART / "dashboards" / "recommender.json").read_text())
    [rule] = [m for m in manifests if m["kind"] == "PrometheusRule"]
    alerts = [alert["expr"] for group in rule["spec"]["groups"] for alert in group["rules"]]
    return dashboard_expressions(json.loads(text)) + alerts


@pytest.fixture(scope="module")
def served(stack_info: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The expositions of a model server that has answered requests through the stand-in, and of
    that stand-in, by source."""
    workdir = tmp_path_factory.mktemp("observability")
    save_tiny_model(workdir / MODEL / str(VERSION))
    standin = MonitoredStandIn(
        workdir / "standin", workdir / MODEL, REPO / "deploy" / "tfserving" / "monitoring.config"
    )
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        | stack_info.env()
        | fresh_topics()
        | {"MINIO_BUCKET": f"test-obs-{uuid.uuid4().hex[:8]}", "MODEL_NAME": MODEL}
        | {"SERVING_A_URL": standin.rest_url, "SERVING_A_GRPC": standin.grpc_target}
    )
    modelserver = ModelServerProcess(workdir / "modelserver", env)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            settings = Settings.load()
            ensure_topics(settings, partitions=2)
            with ThreadPoolExecutor(2) as pool:  # TensorFlow's import dominates both starts
                for future in [pool.submit(standin.start), pool.submit(modelserver.start)]:
                    future.result()
            standin.wait_available(VERSION)
            update = ModelUpdate(
                model=MODEL, instance="a", url=standin.rest_url, grpc=standin.grpc_target,
                version=VERSION, metrics=METRICS,
            )  # fmt: skip
            announce(settings, update)
            assert modelserver.wait_route(90) is not None, modelserver.log_tail()
            answer_sentinels(settings, "u1")  # a request through Kafka into every partition
            assert httpx.post(f"{modelserver.url}/recommend", json={"user": "u2", "k": 3}).status_code == 200

        def lag_of_both_partitions() -> str | None:
            # The lag is measured every 2 s: the sentinels may be answered before the next look.
            exposition = modelserver.get("/metrics")
            assert exposition is not None and exposition[0] == 200
            text = exposition[1].decode()
            lags = [s for s in samples(text) if s.name == "recommender_consumer_lag"]
            return text if {s.labels.get("partition") for s in lags} == {"0", "1"} else None

        text = wait_until(lag_of_both_partitions, 15, "the lag of both partitions on /metrics")
        yield {MODELSERVER: text, STANDIN: standin.get(DEFAULT_PROMETHEUS_PATH).text}
    finally:
        modelserver.stop()
        standin.stop()


def declared(served: dict[str, str]) -> dict[str, str]:
    return families(served[MODELSERVER]) | families(served[STANDIN])


def queried(expressions: list[str]) -> set[str]:
    return set().union(*(series_names(expr) for expr in expressions))


def test_every_metric_the_dashboard_and_the_alerts_query_is_served(
    expressions: list[str], served: dict[str, str]
) -> None:
    names = queried(expressions)
    assert not unserved(names, declared(served)), sorted(unserved(names, declared(served)))
    # Each source is queried, so the check compares something with both.
    used = {family_of(name, declared(served)) for name in names}
    for source, text in served.items():
        assert used & families(text).keys(), source
    assert {":tensorflow:serving:request_count", ":tensorflow:serving:request_latency"} <= used


@pytest.mark.parametrize(
    "planted",
    [
        "sum(rate(recommender_replys_total[5m]))",  # a typo
        "histogram_quantile(0.99, sum by (le) (rate(recommender_ready_bucket[5m])))",  # a gauge
        "rate(recommender_requests[5m])",  # prometheus_client serves the counter as ..._total
        "rate(:tensorflow:serving:request_count_total[5m])",  # TF-Serving's has no _total
        ":tensorflow:serving:request_latency > 0",  # a histogram is only its _bucket/_sum/_count
    ],
)
def test_a_metric_nothing_serves_is_caught(
    expressions: list[str], served: dict[str, str], planted: str
) -> None:
    assert unserved(queried([*expressions, planted]), declared(served)) == series_names(planted)


def test_the_series_the_panels_select_have_the_labels_they_filter_on(served: dict[str, str]) -> None:
    def value(source: str, name: str, **labels: str) -> float:
        found = [
            s.value for s in samples(served[source]) if s.name == name and s.labels.items() >= labels.items()
        ]
        assert found, (source, name, labels)
        return sum(found)

    # The model server's predict calls, as TF-Serving's request_latency labels them (API=~"(?i)predict").
    grpc_predicts = {"model_name": MODEL, "API": "Predict", "entrypoint": "GRPC"}
    assert value(STANDIN, ":tensorflow:serving:request_latency_count", **grpc_predicts) >= 2
    assert value(STANDIN, ":tensorflow:serving:request_count", model_name=MODEL, status="OK") >= 2
    assert value(MODELSERVER, "recommender_replies_total", instance="a") >= 2
    assert value(MODELSERVER, "recommender_predict_latency_seconds_count", signature="recommend") >= 2
    assert value(MODELSERVER, "recommender_request_latency_seconds_count") >= 2
    assert value(MODELSERVER, "recommender_ready") == 1
    assert value(MODELSERVER, "recommender_live_model_version", instance="a") == VERSION
    for partition in ("0", "1"):  # the topic's two, both assigned to the one replica
        assert value(MODELSERVER, "recommender_consumer_lag", partition=partition) >= 0


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantil(0.5, rate(x_bucket[5m]))",  # not a function
        "sum(rate(x[5m])",  # unbalanced
        "rate(x[5 minutes])",  # not a range
        '{__name__=~"recommender_.*"}',  # names nothing that can be checked
        "rate(x[$window])",  # a Grafana variable outside a label value
    ],
)
def test_an_expression_that_cannot_be_read_is_refused(expr: str) -> None:
    with pytest.raises(PromQLError):
        series_names(expr)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le, job) (rate(a_bucket{job=~"$serving", le!="x"}[$__rate_interval])) / 1e6', {"a_bucket"}),
        ("a / on (job) group_left (pod) b offset 5m", {"a", "b"}),
        (
            'max(rate(c[5m:1m])) > bool 1 or absent({__name__="d"}) and count_values("v", e @ end())',
            {"c", "d", "e"},
        ),
        ('label_replace(:f:g, "dst", "$1", "src", "(.*)") unless SUM(h) BY (i)', {":f:g", "h"}),
    ],
)
def test_metric_names_are_told_from_functions_labels_and_keywords(expr: str, names: set[str]) -> None:
    assert series_names(expr) == names
