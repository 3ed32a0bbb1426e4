"""Clients of one TF-Serving instance: gRPC (default) or REST, with the same small interface.

Both speak only what real TensorFlow Serving offers: Predict with a signature name and a pinned
version, and the model-status call used to check that an instance answers before a switch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import httpx
import numpy as np

from common.retry import Backoff, retry
from common.schemas import ModelUpdate

T = TypeVar("T")

# Output names of each signature (docs/contracts.md); REST returns a bare list for a single output.
OUTPUTS = {
    "recommend": ("products", "scores", "fallback"),
    "recommend_with_purchased": ("products", "scores", "fallback"),
    "serving_default": ("scores",),
}
# Inputs that are int32 in every signature (docs/contracts.md); the others are strings.
INT32_INPUTS = frozenset({"k"})


class ServingError(Exception):
    """A failed call; `retryable` is true for outages, timeouts and server-side errors."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ServingClient(Protocol):
    def predict(self, signature: str, inputs: dict[str, list[str] | list[int]]) -> dict[str, np.ndarray]: ...

    def available(self) -> bool: ...

    def close(self) -> None: ...


class GrpcServingClient:
    """PredictionService / ModelService over gRPC with the official tensorflow-serving-api stubs."""

    def __init__(self, target: str, model: str, version: int, timeout: float) -> None:
        # Imported here: the protos pull in TensorFlow, which a REST-only server does not need.
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        self.model, self.version, self.timeout = model, version, timeout
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _error(self, exc: Exception) -> ServingError:
        code = exc.code() if isinstance(exc, self._grpc.RpcError) else None
        final = {
            self._grpc.StatusCode.INVALID_ARGUMENT,
            self._grpc.StatusCode.UNIMPLEMENTED,
            self._grpc.StatusCode.FAILED_PRECONDITION,
            self._grpc.StatusCode.OUT_OF_RANGE,
            self._grpc.StatusCode.PERMISSION_DENIED,
            self._grpc.StatusCode.UNAUTHENTICATED,
        }
        name = code.name if code is not None else type(exc).__name__
        details = exc.details() if isinstance(exc, self._grpc.RpcError) else str(exc)
        return ServingError(f"gRPC {name}: {details}", retryable=code not in final)

    def predict(self, signature: str, inputs: dict[str, list[str] | list[int]]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.version.value = self.version
        request.model_spec.signature_name = signature
        for name, values in inputs.items():
            # Built directly rather than with tf.make_tensor_proto: it is the hot path.
            shape = tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
            )
            if name in INT32_INPUTS:
                proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=shape, int_val=values)
            else:
                proto = tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_STRING,
                    tensor_shape=shape,
                    string_val=[str(v).encode() for v in values],
                )
            request.inputs[name].CopyFrom(proto)
        try:
            response = self._predict.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as exc:
            raise self._error(exc) from None
        return {name: tf.make_ndarray(response.outputs[name]) for name in OUTPUTS[signature]}

    def available(self) -> bool:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model
        request.model_spec.version.value = self.version
        try:
            response = self._status.GetModelStatus(request, timeout=self.timeout)
        except self._grpc.RpcError:
            return False
        return any(
            status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
            for status in response.model_version_status
        )

    def close(self) -> None:
        self._channel.close()


class RestServingClient:
    """TF-Serving's REST API with the columnar `inputs` format."""

    def __init__(self, url: str, model: str, version: int, timeout: float) -> None:
        self.model, self.version = model, version
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._path = f"/v1/models/{model}/versions/{version}"

    def predict(self, signature: str, inputs: dict[str, list[str]]) -> dict[str, np.ndarray]:
        try:
            response = self._http.post(
                f"{self._path}:predict", json={"signature_name": signature, "inputs": inputs}
            )
        except httpx.HTTPError as exc:
            raise ServingError(f"REST {type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code in (404, 408, 429)
            raise ServingError(f"REST {response.status_code}: {response.text[:300]}", retryable)
        outputs = response.json()["outputs"]
        names = OUTPUTS[signature]
        if not isinstance(outputs, dict):
            outputs = {names[0]: outputs}
        return {
            name: np.asarray(outputs[name], dtype=object if name == "products" else None) for name in names
        }

    def available(self) -> bool:
        try:
            response = self._http.get(self._path)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        return any(s.get("state") == "AVAILABLE" for s in response.json().get("model_version_status", []))

    def close(self) -> None:
        self._http.close()


def client_for(update: ModelUpdate, protocol: str, timeout: float) -> ServingClient:
    """A client of the instance a model update names (its `grpc` or `url`, per the contract)."""
    if protocol == "rest":
        return RestServingClient(update.url, update.model, update.version, timeout)
    return GrpcServingClient(update.grpc, update.model, update.version, timeout)


def with_retries(
    call: Callable[[], T],
    deadline_s: float,
    on_retry: Callable[[BaseException], None] = lambda error: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `call`, retrying retryable failures with jittered exponential backoff until the deadline."""
    return retry(
        call,
        Backoff(0.05, cap=2.0, jitter=True),  # jitter: replicas that failed together spread out
        deadline_s,
        retryable=lambda error: isinstance(error, ServingError) and error.retryable,
        on_retry=on_retry,
        sleep=sleep,
        clock=clock,
    )
