"""Contract tests: the stand-in server called the way a TF-Serving client calls it.

REST with plain HTTP + JSON, gRPC with the official tensorflow_serving.apis stubs and
tf.make_tensor_proto. The expected shapes and error wording are TF-Serving's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.serving.tiny_model import PRODUCTS, TOP, save_tiny_model
from tfserving.protocol import tensor_proto
from tfserving.server import TFServingServer

NAME = "recommender"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("base") / NAME
    save_tiny_model(model_dir / "3")
    server = TFServingServer(
        NAME, str(model_dir), grpc_port=0, rest_port=0, poll_seconds=0.2, host="127.0.0.1"
    )
    server.start()
    server.manager.poll_once()  # load now rather than on the thread's schedule
    yield server
    server.stop()


def rest(server, path: str, body: dict | bytes | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}", data=data, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def test_rest_model_status(server):
    assert rest(server, f"/v1/models/{NAME}") == (
        200,
        {
            "model_version_status": [
                {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    status, body = rest(server, f"/v1/models/{NAME}/versions/3")
    assert status == 200 and body["model_version_status"][0]["version"] == "3"
    assert rest(server, f"/v1/models/{NAME}/versions/9") == (
        404,
        {"error": f"Could not find version 9 of model {NAME}"},
    )
    assert rest(server, "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})


def test_rest_metadata(server):
    status, body = rest(server, f"/v1/models/{NAME}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": NAME, "version": "3", "signature_name": ""}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "recommend", "recommend_with_purchased"}
    recommend = signatures["recommend"]
    assert recommend["inputs"]["users"]["dtype"] == "DT_STRING"
    assert recommend["inputs"]["k"]["dtype"] == "DT_INT32"
    assert {k: v["dtype"] for k, v in recommend["outputs"].items()} == {
        "products": "DT_STRING",
        "scores": "DT_FLOAT",
        "fallback": "DT_BOOL",
    }
    assert [d["size"] for d in recommend["outputs"]["products"]["tensor_shape"]["dim"]] == ["-1", "-1"]


def test_rest_predict_row_and_columnar_agree(server):
    row = rest(
        server,
        f"/v1/models/{NAME}:predict",
        {"instances": [{"users": "u1", "products": "p5"}, {"users": "u2", "products": "p7"}]},
    )
    columnar = rest(
        server,
        f"/v1/models/{NAME}/versions/3:predict",
        {"inputs": {"users": ["u1", "u2"], "products": ["p5", "p7"]}},
    )
    assert row[0] == columnar[0] == 200
    assert len(row[1]["predictions"]) == 2
    assert row[1]["predictions"] == columnar[1]["outputs"]  # one output: a plain list in both formats


def test_rest_recommend_signatures(server):
    status, body = rest(
        server,
        f"/v1/models/{NAME}:predict",
        {
            "signature_name": "recommend",
            "instances": [{"users": "u0", "k": TOP}, {"users": "stranger", "k": 3}],
        },
    )
    assert status == 200
    known, unknown = body["predictions"]
    assert set(known) == {"products", "scores", "fallback"}
    assert len(known["products"]) == TOP and known["fallback"] is False
    assert {"p0", "p1"}.isdisjoint(known["products"])  # u0's purchases are excluded
    assert unknown["fallback"] is True and unknown["products"][:3] == PRODUCTS[:3]  # popularity order
    assert known["scores"] == sorted(known["scores"], reverse=True)

    status, body = rest(
        server,
        f"/v1/models/{NAME}:predict",
        {"signature_name": "recommend_with_purchased", "inputs": {"users": ["u0"], "k": [7]}},
    )
    assert status == 200 and set(body["outputs"]) == {"products", "scores", "fallback"}
    assert np.array(body["outputs"]["products"]).shape == (1, 7)

    # recommend's scores equal serving_default's for the same pairs.
    pairs = {"users": ["u0"] * 5, "products": known["products"][:5]}
    status, scored = rest(server, f"/v1/models/{NAME}:predict", {"inputs": pairs})
    assert status == 200
    assert np.allclose(scored["outputs"], known["scores"][:5])


@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        (
            "/v1/models/nope:predict",
            {"instances": ["u0"]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            f"/v1/models/{NAME}/versions/4:predict",
            {"instances": ["u0"]},
            404,
            f"Servable not found for request: Specific({NAME}, 4)",
        ),
        (f"/v1/models/{NAME}:predict", b"{not json", 400, "JSON Parse error"),
        (f"/v1/models/{NAME}:predict", b"", 400, "JSON Parse error: The document is empty"),
        (
            f"/v1/models/{NAME}:predict",
            {"signature_name": "recommend"},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"inputs": {"users": ["u0"]}},
            400,
            "Missing named input: products in 'inputs' object.",
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"signature_name": "nope", "instances": ["u0"]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"signature_name": "recommend", "instances": [{"users": 1.5, "k": 1}]},
            400,
            "is not of expected type: string",
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"signature_name": "recommend", "instances": []},
            400,
            "No values in 'instances' array",
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"signature_name": "recommend", "inputs": {"users": [["u0"]], "k": [1]}},
            400,
            "must have shape",
        ),
        (
            f"/v1/models/{NAME}:predict",
            {"instances": ["u0"], "inputs": ["u0"]},
            400,
            "expecting only one of 'inputs' or 'instances'",
        ),
    ],
)
def test_rest_errors(server, path, body, code, message):
    status, payload = rest(server, path, body)
    assert status == code
    assert set(payload) == {"error"} and message in payload["error"]


def test_grpc_predict_with_official_stubs(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "recommend"
    request.inputs["users"].CopyFrom(tf.make_tensor_proto(["u3", "nobody"]))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto([TOP, TOP], tf.int32))
    response = stub.Predict(request, timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 3
    products = tf.make_ndarray(response.outputs["products"])
    fallback = tf.make_ndarray(response.outputs["fallback"])
    assert products.shape == (2, TOP) and products[0, 0].decode() in PRODUCTS
    assert fallback.tolist() == [False, True]

    request.output_filter.append("scores")
    assert set(stub.Predict(request, timeout=30).outputs) == {"scores"}


def test_grpc_errors(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    request.inputs["users"].CopyFrom(tf.make_tensor_proto(["u0"]))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Servable not found for request: Latest(nope)"

    request.model_spec.name = NAME
    request.model_spec.signature_name = "recommend"
    request.inputs["users"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto([1, 1], tf.int32))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    del request.inputs["users"]
    request.inputs["user"].CopyFrom(tf.make_tensor_proto(["u0"]))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Missing but required: {users}" in error.value.details()


def test_grpc_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "recommend", "recommend_with_purchased"}
    assert set(signatures.signature_def["serving_default"].inputs) == {"users", "products"}

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = NAME
    status = models.GetModelStatus(status_request, timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (3, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    status_request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as error:
        models.GetModelStatus(status_request, timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Could not find any versions of model nope"


@pytest.mark.parametrize(
    "array",
    [
        np.array([[b"p1", b""], [b"p3", "p\u00e9".encode()]], dtype=object),
        np.array([[0.5, -1e30]], dtype=np.float32),
        np.array([True, False]),
        np.array([[7, 8, 9]], dtype=np.int32),
        np.zeros((0, 10), dtype=np.float32),
    ],
)
def test_output_encoding_reads_back_as_make_tensor_proto_would_write_it(array):
    encoded = tensor_proto(array)
    reference = tf.make_tensor_proto(array)
    assert encoded.dtype == reference.dtype and encoded.tensor_shape == reference.tensor_shape
    decoded = tf.make_ndarray(encoded)
    assert decoded.shape == array.shape and decoded.dtype == tf.make_ndarray(reference).dtype
    np.testing.assert_array_equal(decoded, array)
