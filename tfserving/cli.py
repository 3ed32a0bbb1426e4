"""`recommender-local tfserving`: local mode's TF-Serving-compatible stand-in, with TF-Serving's flags."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tfserving",
        help="serve a model base path like tensorflow_model_server (local mode only)",
        description="A stand-in for tensorflow_model_server in local mode, where the real binary "
        "cannot be installed. It serves the numeric version directories under --model_base_path with "
        "the `latest` policy (a new version is loaded before the old one is unloaded), TF-Serving's "
        "REST API on --rest_api_port and its gRPC PredictionService/ModelService on --port. "
        "It implements only what this project uses; docker-compose and Helm run the real "
        "tensorflow/serving image.",
    )
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument("--rest_api_host", default="0.0.0.0", help="address to bind both ports to")
    parser.add_argument("--model_name", default="default", help="name the model is served under")
    parser.add_argument(
        "--model_base_path",
        required=True,
        help="folder holding the numeric version dirs (<base>/<model_name>)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between polls of the base path for new versions (default 1)",
    )
    parser.add_argument(
        "--tensorflow_inter_op_parallelism", type=int, default=0, help="TF inter-op threads (0: TF decides)"
    )
    parser.add_argument(
        "--tensorflow_intra_op_parallelism", type=int, default=0, help="TF intra-op threads (0: TF decides)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # TensorFlow is imported here so that `recommender --help` stays fast.
    import tensorflow as tf

    from tfserving.server import TFServingServer

    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    server = TFServingServer(
        args.model_name,
        args.model_base_path,
        grpc_port=args.port,
        rest_port=args.rest_api_port,
        poll_seconds=args.file_system_poll_wait_seconds,
        host=args.rest_api_host,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    stop.wait()
    log.info("shutting down")
    server.stop()
    return 0
