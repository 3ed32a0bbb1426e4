"""The export loads and answers the way tensorflow_model_server loads it.

TF-Serving's C++ loader reads the `serve` MetaGraphDef and runs signatures by their SignatureDef
tensor names; it never touches the Python object graph. This loads the export with the TF1 loader
in a session, runs every signature that way, and compares with the TF-Serving stand-in and with
the object graph: anything only the object graph could answer would show up here.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfserving.core import load_version

from .conftest import Exported

USERS = np.array([b"u0", b"u1", b"u17", b"nobody", b""], dtype=object)
PRODUCTS = np.array([b"p0", b"p3", b"p299", b"unknown", b""], dtype=object)


def inputs_for(signature: str) -> dict[str, np.ndarray]:
    if signature == "serving_default":
        return {"users": USERS, "products": PRODUCTS}
    return {"users": USERS, "k": np.array([10, 3, 100, 5, 1], dtype=np.int32)}


def run_by_tensor_names(export_dir) -> dict[str, dict[str, np.ndarray]]:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export_dir))
        signatures = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
        assert set(signatures) == {"serving_default", "recommend", "recommend_with_purchased"}
        results = {}
        for name, signature_def in signatures.items():
            feed = {signature_def.inputs[key].name: value for key, value in inputs_for(name).items()}
            aliases = sorted(signature_def.outputs)
            values = session.run([signature_def.outputs[alias].name for alias in aliases], feed_dict=feed)
            results[name] = dict(zip(aliases, values, strict=True))
        return results


def test_every_signature_answers_through_the_tf1_loader_as_the_stand_in_and_the_object_graph_do(
    exported: Exported,
):
    by_names = run_by_tensor_names(exported.export_dir)
    stand_in = load_version(exported.export_dir, 1)
    for name, outputs in by_names.items():
        served = stand_in.run(name, inputs_for(name))
        assert set(served) == set(outputs), name
        objects = exported.loaded.signatures[name](
            **{key: tf.constant(value) for key, value in inputs_for(name).items()}
        )
        for alias, value in outputs.items():
            where = f"{name}/{alias}"
            assert value.dtype == served[alias].dtype, where
            np.testing.assert_array_equal(value, served[alias], err_msg=f"{where}: stand-in")
            if value.dtype == object:
                np.testing.assert_array_equal(value, objects[alias].numpy(), err_msg=where)
            else:
                np.testing.assert_allclose(value, objects[alias].numpy(), rtol=1e-6, err_msg=where)
    assert by_names["recommend"]["products"].shape == (len(USERS), 100)
    assert by_names["recommend"]["fallback"].tolist() == [False, False, False, True, True]
