"""REST and gRPC front ends of the stand-in server, both backed by one ModelManager.

REST follows TF-Serving's paths, JSON shapes, `{"error": ...}` bodies and HTTP codes; gRPC
implements the official PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus) from tensorflow_serving.apis. Both serve requests concurrently on threads, and
both count and time requests as TF-Serving does (tfserving.monitoring); the REST port serves those
metrics only when a monitoring config enables them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.errors import first_line
from tfserving.core import ModelManager, TFServingStatusError, invalid
from tfserving.monitoring import RequestMetrics
from tfserving.protocol import (
    metadata_response,
    parse_predict_body,
    predict_response_json,
    proto_json,
    status_response,
    tensor_proto,
)

log = logging.getLogger(__name__)

# TF-Serving's mapping of canonical codes to HTTP statuses (http_server.cc).
HTTP_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
}

# The path grammar of http_rest_api_handler.cc (version labels are not supported here).
PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)", re.I)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?(?:/(metadata))?", re.I)


def _metric_labels(method: str, path: str) -> tuple[str, str]:
    """The model name and API a REST request is counted under: what TF-Serving's path parsing
    captured, so "" for a path that names no model and for every GET (status, metadata)."""
    if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
        return match.group(1), match.group(3)
    if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
        return match.group(1) or "", ""
    return "", ""


class RestApi:
    """Request handling independent of the HTTP plumbing: (method, path, body) -> (status, JSON body)."""

    def __init__(self, manager: ModelManager, metrics: RequestMetrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        path = path.split("?", 1)[0]
        try:
            status, code, payload = 200, "OK", self._dispatch(method, path, body)
        except TFServingStatusError as exc:
            status, code, payload = HTTP_CODES.get(exc.code, 500), exc.code, {"error": exc.message}
        except Exception as exc:  # an unexpected failure is INTERNAL, as in TF-Serving
            log.exception("request %s %s failed", method, path)
            status, code, payload = 500, "INTERNAL", {"error": first_line(exc) or type(exc).__name__}
        data = json.dumps(payload).encode("utf-8")
        # Counted and timed with the body made, as TF-Serving's REST dispatcher does once it wrote it.
        model_name, api = _metric_labels(method, path)
        self.metrics.record(model_name, api, "REST", code, started)
        return status, data

    def _dispatch(self, method: str, path: str, body: bytes) -> dict:
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, verb = match.group(1), match.group(2), match.group(3).lower()
            if verb != "predict":
                raise TFServingStatusError(
                    "UNIMPLEMENTED", f"{verb} is not supported by this stand-in server"
                )
            return self._predict(name, int(version) if version else None, body)
        if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            if metadata:
                loaded = self.manager.resolve(name, int(version) if version else None)
                return proto_json(metadata_response(name, loaded))
            states = self.manager.status(name, int(version) if version else None)
            return proto_json(status_response(states))
        raise invalid(f"Malformed request: {method} {path}")

    def _predict(self, name: str, version: int | None, body: bytes) -> dict:
        loaded = self.manager.resolve(name, version)
        signature_name, inputs, fmt = parse_predict_body(body, loaded.input_dtypes)
        outputs = loaded.run(signature_name, inputs)
        return predict_response_json(outputs, fmt)


def make_http_server(
    api: RestApi, host: str, port: int, metrics_path: str | None = None
) -> ThreadingHTTPServer:
    """The REST port; with `metrics_path`, it also serves the Prometheus metrics there."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as TF-Serving's server does

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            content_type = "application/json"
            # TF-Serving registers the metrics path as a handler of its own, ahead of the REST API.
            if metrics_path is not None and self.path.split("?", 1)[0] == metrics_path:
                status, data, content_type = 200, api.metrics.exposition().encode(), "text/plain"
            elif not self.path.lower().startswith("/v1/"):
                status, data = 404, json.dumps({"error": f"Not found: {self.path}"}).encode()
            else:
                status, data = api.handle(method, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: object) -> None:
            log.debug("rest: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, metrics: RequestMetrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def Predict(self, request, context):
        started = time.perf_counter()
        spec = request.model_spec
        try:
            response = self._predict(request)
        except TFServingStatusError as exc:
            self.metrics.record(spec.name, "Predict", "GRPC", exc.code, started)
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        except Exception:
            self.metrics.record(spec.name, "Predict", "GRPC", "UNKNOWN", started)  # grpc answers UNKNOWN
            raise
        self.metrics.record(spec.name, "Predict", "GRPC", "OK", started)
        return response

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        loaded = self.manager.resolve(spec.name, spec.version.value if spec.HasField("version") else None)
        signature_name = spec.signature_name or "serving_default"
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        outputs = loaded.run(signature_name, inputs, list(request.output_filter) or None)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature_name
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tensor_proto(array))
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid("Metadata field signature_def must be the only one requested")
            loaded = self.manager.resolve(spec.name, spec.version.value if spec.HasField("version") else None)
        except TFServingStatusError as exc:
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        return metadata_response(spec.name, loaded)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise invalid("Missing ModelSpec")
            spec = request.model_spec
            states = self.manager.status(spec.name, spec.version.value if spec.HasField("version") else None)
        except TFServingStatusError as exc:
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        return status_response(states)


class TFServingServer:
    """The whole stand-in: the model manager, the REST port and the gRPC port."""

    def __init__(
        self,
        model_name: str,
        model_base_path: str,
        grpc_port: int,
        rest_port: int,
        poll_seconds: float = 1.0,
        host: str = "0.0.0.0",
        threads: int = 8,
        metrics_path: str | None = None,
    ) -> None:
        self.manager = ModelManager(model_name, Path(model_base_path), poll_seconds)
        self.metrics = RequestMetrics()
        self.metrics_path = metrics_path
        self.http = make_http_server(RestApi(self.manager, self.metrics), host, rest_port, metrics_path)
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.manager, self.metrics), self.grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.manager), self.grpc)
        bound = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind the gRPC port {host}:{grpc_port}")
        self.grpc_port = bound
        self.rest_port = self.http.server_address[1]
        self._http_thread: threading.Thread | None = None

    def start(self) -> None:
        self.manager.start()
        self.grpc.start()
        self._http_thread = threading.Thread(target=self.http.serve_forever, name="rest", daemon=True)
        self._http_thread.start()
        log.info("serving gRPC on port %d and REST on port %d", self.grpc_port, self.rest_port)
        if self.metrics_path is not None:
            log.info("Prometheus metrics on the REST port at %s", self.metrics_path)

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(grace=2).wait()
        self.manager.stop()
