"""TF-Serving's wire formats: REST JSON <-> tensors, and the status/metadata protos of both APIs.

The JSON rules follow TF-Serving's REST API: `instances` (row format, answered with
`predictions`) or `inputs` (columnar, answered with `outputs`), strings as JSON strings or
`{"b64": ...}`, and outputs whose alias ends in `_bytes` written as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from tfserving.core import LoadedVersion, VersionState, invalid

ROW, COLUMNAR = "row", "columnar"
_STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """An output as a TensorProto: numbers as packed `tensor_content`, strings as `string_val`.

    The same encoding as `tf.make_tensor_proto`, without its per-element Python checks, which
    cost more than running the model for string outputs.
    """
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
    )
    if array.dtype == object or array.dtype.kind in "SU":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    dtype = tf.dtypes.as_dtype(array.dtype)
    return tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum, tensor_shape=shape, tensor_content=np.ascontiguousarray(array).tobytes()
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _to_bytes_leaves(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_bytes_leaves(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise invalid("Unable to base64 decode") from None
    raise invalid(
        f"JSON Value: {json.dumps(value)} Type: {_json_type(value)} is not of expected type: string"
    )


def _json_type(value: Any) -> str:
    return {bool: "Boolean", int: "Number", float: "Number", dict: "Object", list: "Array"}.get(
        type(value), "Null" if value is None else "String"
    )


def json_to_array(value: Any, dtype: tf.DType, name: str) -> np.ndarray:
    """One JSON value (a nested list or scalar) as a numpy array of the signature's dtype."""
    try:
        if dtype == tf.string:
            array = np.array(_to_bytes_leaves(value), dtype=object)
        else:
            if any(isinstance(v, str) for v in _leaves(value)):
                raise invalid(f"JSON Value: {json.dumps(value)[:200]} is not of expected type: {dtype.name}")
            array = np.array(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError) as exc:
        raise invalid(f"Failed to process input: {name}. Error: {exc}") from None
    return array


def _leaves(value: Any):
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def parse_predict_body(body: bytes, loaded_dtypes) -> tuple[str, dict[str, np.ndarray], str]:
    """Parse a REST predict body; `loaded_dtypes(signature_name)` gives the signature's input dtypes.

    Returns (signature_name, inputs, format).
    """
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(f"JSON Parse error: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    if not isinstance(doc, dict):
        raise invalid("JSON Value: is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid("'signature_name' key must be a string value.")
    dtypes: dict[str, tf.DType] = loaded_dtypes(signature_name)
    if not dtypes:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if has_instances:
        return signature_name, _from_instances(doc["instances"], dtypes), ROW
    if has_inputs:
        return signature_name, _from_inputs(doc["inputs"], dtypes), COLUMNAR
    raise invalid("Missing 'inputs' or 'instances' key")


def _from_instances(instances: Any, dtypes: Mapping[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid("No values in 'instances' array")
    as_objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not as_objects and len(dtypes) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    columns: dict[str, list[Any]] = {name: [] for name in dtypes}
    for index, item in enumerate(instances):
        if as_objects:
            if not isinstance(item, dict) or _is_b64(item):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            if set(item) != set(dtypes):
                raise invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json.dumps(item)[:200]} must only have keys: {','.join(sorted(dtypes))}"
                )
            for name in dtypes:
                columns[name].append(item[name])
        else:
            if isinstance(item, dict) and not _is_b64(item):
                raise invalid(f"Expecting value/list but got object at item {index} of input list")
            columns[next(iter(dtypes))].append(item)
    return {name: json_to_array(values, dtypes[name], name) for name, values in columns.items()}


def _from_inputs(inputs: Any, dtypes: Mapping[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(dtypes) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(dtypes))
        return {name: json_to_array(inputs, dtypes[name], name)}
    arrays = {}
    for name, dtype in dtypes.items():
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = json_to_array(inputs[name], dtype, name)
    return arrays


def _jsonable(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        if name.endswith("_bytes"):
            encode = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])
        else:
            encode = np.vectorize(lambda b: b.decode("utf-8", errors="replace"), otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_response_json(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """`{"predictions": ...}` for the row format, `{"outputs": ...}` for the columnar one."""
    if fmt == COLUMNAR:
        if len(outputs) == 1:
            name, array = next(iter(outputs.items()))
            return {"outputs": _jsonable(array, name)}
        return {"outputs": {name: _jsonable(array, name) for name, array in outputs.items()}}
    batch = None
    for name, array in outputs.items():
        size = array.shape[0] if array.ndim else None
        if size is None or (batch is not None and size != batch):
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
        batch = size
    columns = {name: _jsonable(array, name) for name, array in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(batch or 0)]}


def status_response(states: list[tuple[int, VersionState]]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in states:
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = _STATE_ENUM.Value(state.state)
        entry.status.SetInParent()  # TF-Serving always prints the status, {"error_code": "OK"} too
        if state.error:
            entry.status.error_code = 2  # UNKNOWN: TF-Serving reports the load error's own code
            entry.status.error_message = state.error
    return response


def metadata_response(
    model_name: str, loaded: LoadedVersion
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = loaded.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in loaded.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def proto_json(message) -> dict[str, Any]:
    """A proto as TF-Serving's REST API prints it (default-valued fields included)."""
    return json.loads(
        json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )
    )
