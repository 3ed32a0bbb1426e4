"""`recommender-local tfserving`: local mode's TF-Serving-compatible stand-in, with TF-Serving's flags."""

from __future__ import annotations

import logging
import signal
import threading

import click

from tfserving.monitoring import MonitoringConfigError, prometheus_path

log = logging.getLogger(__name__)


@click.command(
    "tfserving",
    short_help="serve a model base path like tensorflow_model_server (local mode only)",
    help="A stand-in for tensorflow_model_server in local mode, where the real binary cannot be installed. "
    "It serves the numeric version directories under --model_base_path with the `latest` policy (a new "
    "version is loaded before the old one is unloaded), TF-Serving's REST API on --rest_api_port and its "
    "gRPC PredictionService/ModelService on --port, and with --monitoring_config_file TF-Serving's request "
    "metrics for Prometheus. It implements only what this project uses; docker-compose and Helm run the "
    "real tensorflow/serving image.",
)
@click.option("--port", type=int, default=8500, help="gRPC port (default 8500)")
@click.option("--rest_api_port", type=int, default=8501, help="REST port (default 8501)")
@click.option("--rest_api_host", default="0.0.0.0", help="address to bind both ports to")
@click.option("--model_name", default="default", help="name the model is served under")
@click.option(
    "--model_base_path", required=True, help="folder holding the numeric version dirs (<base>/<model_name>)"
)
@click.option(
    "--file_system_poll_wait_seconds",
    type=float,
    default=1.0,
    help="seconds between polls of the base path for new versions (default 1)",
)
@click.option(
    "--monitoring_config_file",
    default="",
    help="text-format MonitoringConfig; with prometheus_config { enable: true } the REST port serves "
    "TF-Serving's request count and latency at its path (default /monitoring/prometheus/metrics)",
)
@click.option(
    "--tensorflow_inter_op_parallelism", type=int, default=0, help="TF inter-op threads (0: TF decides)"
)
@click.option(
    "--tensorflow_intra_op_parallelism", type=int, default=0, help="TF intra-op threads (0: TF decides)"
)
def command(
    port: int,
    rest_api_port: int,
    rest_api_host: str,
    model_name: str,
    model_base_path: str,
    file_system_poll_wait_seconds: float,
    monitoring_config_file: str,
    tensorflow_inter_op_parallelism: int,
    tensorflow_intra_op_parallelism: int,
) -> int:
    # A bad file stops the server before it serves anything, as it stops tensorflow_model_server.
    try:
        metrics_path = prometheus_path(monitoring_config_file) if monitoring_config_file else None
    except MonitoringConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--monitoring_config_file") from None
    # TensorFlow is imported here so that `recommender --help` stays fast.
    import tensorflow as tf

    from tfserving.server import TFServingServer

    if tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(tensorflow_inter_op_parallelism)
    if tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(tensorflow_intra_op_parallelism)
    server = TFServingServer(
        model_name,
        model_base_path,
        grpc_port=port,
        rest_port=rest_api_port,
        poll_seconds=file_system_poll_wait_seconds,
        host=rest_api_host,
        metrics_path=metrics_path,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    stop.wait()
    log.info("shutting down")
    server.stop()
    return 0
