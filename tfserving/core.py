"""The model manager of the stand-in server: TF-Serving's `latest` version policy on real TensorFlow.

A poll thread watches `<model_base_path>` for numeric version directories. The newest one is
loaded completely (SavedModel, signature defs, one warm-up call of each signature) before it
becomes the served version and the old one is unloaded, so a request never meets a gap.
Requests hold a reference to the version they resolved, so an unload never cuts one short.

A version is loaded as tensorflow_model_server loads it: the `serve` MetaGraphDef into a
session by the TF1 loader, each signature run by its SignatureDef's tensor names. The Python
object graph, which TF-Serving never reads, plays no part, so nothing served here can depend on it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from common.errors import first_line

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"

# The manager states of TF-Serving's ModelVersionStatus.State, in the order a version passes them.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class TFServingStatusError(Exception):
    """A request error carrying TF-Serving's canonical code name (NOT_FOUND, INVALID_ARGUMENT...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str) -> TFServingStatusError:
    return TFServingStatusError("NOT_FOUND", message)


def invalid(message: str) -> TFServingStatusError:
    return TFServingStatusError("INVALID_ARGUMENT", message)


@dataclass
class LoadedVersion:
    """One loaded SavedModel version: its session and the SignatureDefs that say what to run."""

    version: int
    path: Path
    session: tf.compat.v1.Session
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        key = name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        return self.signature_defs[key]

    def input_dtypes(self, signature_name: str) -> dict[str, tf.DType]:
        return {k: tf.dtypes.as_dtype(v.dtype) for k, v in self.signature(signature_name).inputs.items()}

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one signature on already-typed numpy inputs; errors become INVALID_ARGUMENT."""
        key = signature_name or DEFAULT_SIGNATURE
        signature_def = self.signature(key)
        expected = set(signature_def.inputs)
        sent = set(inputs)
        if sent != expected:
            extra, missing = sorted(sent - expected), sorted(expected - sent)
            raise invalid(
                f"Request inputs do not match required inputs for model `{key}`. "
                f"Send extra: {{{', '.join(extra)}}}. Missing but required: {{{', '.join(missing)}}}."
            )
        for name in output_filter or []:
            if name not in signature_def.outputs:
                raise invalid(f"output tensor alias not found in signature: {name}")
        for index, (name, value) in enumerate(inputs.items()):
            _check_dtype(index, np.asarray(value).dtype, tf.dtypes.as_dtype(signature_def.inputs[name].dtype))
            _check_shape(name, np.shape(value), signature_def.inputs[name].tensor_shape)
        names = output_filter or list(signature_def.outputs)
        feed = {signature_def.inputs[name].name: value for name, value in inputs.items()}
        try:
            values = self.session.run([signature_def.outputs[name].name for name in names], feed_dict=feed)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
            raise invalid(_error_text(exc)) from None
        return dict(zip(names, values, strict=True))


def _check_dtype(index: int, got: np.dtype, expected: tf.DType) -> None:
    # A session would cast a fed value to the placeholder's type; TF-Serving refuses it instead.
    actual = tf.string if got.kind in "OSU" else tf.dtypes.as_dtype(got)
    if actual != expected:
        raise invalid(f"Expects arg[{index}] to be {expected.name} but {actual.name} is provided")


def _check_shape(name: str, shape: tuple[int, ...], expected) -> None:
    if expected.unknown_rank:
        return
    dims = [d.size for d in expected.dim]
    if len(shape) != len(dims) or any(want not in (-1, got) for want, got in zip(dims, shape, strict=True)):
        want = "[" + ",".join("?" if d == -1 else str(d) for d in dims) + "]"
        got = "[" + ",".join(str(d) for d in shape) + "]"
        raise invalid(f"input {name} must have shape {want}, got {got}")


def _error_text(exc: BaseException) -> str:
    # TF's execution errors start with a generic line; the cause is the first specific one.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.endswith("execution error:")]
    return (useful or lines or [type(exc).__name__])[0]


def load_version(version_dir: Path, version: int) -> LoadedVersion:
    """The `serve` meta graph in its own session, through the TF1 loader TF-Serving's C++ mirrors."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    signature_defs = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    loaded = LoadedVersion(version, version_dir, session, signature_defs)
    _warm_up(loaded)
    return loaded


def _warm_up(loaded: LoadedVersion) -> None:
    # The first run of a signature prunes and places its subgraph; do it before serving so the
    # first real request after a swap is not the slow one.
    for name, signature_def in loaded.signature_defs.items():
        inputs = {}
        for key, info in signature_def.inputs.items():
            dims = [max(d.size, 1) for d in info.tensor_shape.dim]
            dtype = tf.dtypes.as_dtype(info.dtype)
            inputs[key] = np.full(dims, b"" if dtype == tf.string else 0, dtype=dtype.as_numpy_dtype)
        try:
            loaded.run(name, inputs)
        except Exception as exc:  # a signature that rejects dummy input is still servable
            log.debug("warm-up of %s skipped: %s", name, first_line(exc) or type(exc).__name__)


@dataclass
class VersionState:
    state: str
    error: str = ""
    since: float = field(default_factory=time.time)


class ModelManager:
    """Serves one model from `base_path` (which holds numeric version dirs) with the latest policy."""

    def __init__(self, model_name: str, base_path: Path, poll_seconds: float = 1.0) -> None:
        self.model_name = model_name
        self.base_path = base_path
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._states: dict[int, VersionState] = {}
        self._serving: LoadedVersion | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("polling %s failed", self.base_path)
            self._stop.wait(self.poll_seconds)

    def on_disk_versions(self) -> list[int]:
        try:
            return sorted(int(p.name) for p in self.base_path.iterdir() if p.name.isdigit() and p.is_dir())
        except FileNotFoundError:
            return []

    def poll_once(self) -> None:
        """Aspire the newest version on disk: load it, then unload every other one."""
        versions = self.on_disk_versions()
        if not versions:
            if not self._warned_empty:
                log.warning(
                    "no versions of servable %s found under base path %s", self.model_name, self.base_path
                )
                self._warned_empty = True
            self._unload_all_but(None)
            return
        self._warned_empty = False
        newest = versions[-1]
        with self._lock:
            current = self._serving.version if self._serving else None
            known = self._states.get(newest)
            if newest == current or (known is not None and known.state == END and known.error):
                return  # already served, or failed to load (TF-Serving does not retry it either)
            self._states[newest] = VersionState(LOADING)
        log.info("loading servable version {name: %s version: %d}", self.model_name, newest)
        try:
            loaded = load_version(self.base_path / str(newest), newest)
        except Exception as exc:
            reason = first_line(exc) or type(exc).__name__
            with self._lock:
                self._states[newest] = VersionState(END, reason)
            log.error("failed to load %s version %d: %s", self.model_name, newest, reason)
            return
        # TensorFlow and a loaded model leave ~360k objects to Python's cyclic GC, whose full
        # collections then stopped every request for ~200 ms; frozen, they are never scanned.
        gc.freeze()
        with self._lock:
            self._serving = loaded
            self._states[newest] = VersionState(AVAILABLE)
        log.info("successfully loaded servable version {name: %s version: %d}", self.model_name, newest)
        self._unload_all_but(newest)

    def _unload_all_but(self, keep: int | None) -> None:
        with self._lock:
            if keep is None:
                self._serving = None
            for version, state in self._states.items():
                if version != keep and state.state == AVAILABLE:
                    # In-flight requests keep their own reference; dropping ours is the unload.
                    self._states[version] = VersionState(END)
                    log.info("unloaded servable version {name: %s version: %d}", self.model_name, version)

    # -- request side ----------------------------------------------------------------------

    def resolve(self, model_name: str, version: int | None) -> LoadedVersion:
        """The loaded version for a request, or NOT_FOUND worded as TF-Serving words it."""
        request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
        with self._lock:
            serving = self._serving
        if model_name != self.model_name or serving is None or version not in (None, serving.version):
            raise not_found(f"Servable not found for request: {request}")
        return serving

    def status(self, model_name: str, version: int | None) -> list[tuple[int, VersionState]]:
        """Version states, newest first, as GetModelStatus reports them."""
        with self._lock:
            states = dict(self._states) if model_name == self.model_name else {}
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {model_name}")
            return [(version, states[version])]
        if not states:
            raise not_found(f"Could not find any versions of model {model_name}")
        return sorted(states.items(), reverse=True)
