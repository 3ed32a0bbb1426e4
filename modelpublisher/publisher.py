"""Publish a model version only after it is loaded, answers a canary and passes the quality gate.

Order: gate (no network), wait for AVAILABLE (bounded, with backoff), canary, then
`models/serving.json` and the message on the compacted `model-updates` topic with confirmed
delivery. Any failure raises `PublishError` with a one-line reason and leaves both unchanged
(a failed Kafka delivery puts the old serving record back).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable

import httpx
import pyarrow.parquet as pq
from pydantic import Field

from common.kafka import delivery_error, make_producer
from common.schemas import (
    Instance,
    ModelMetrics,
    ModelUpdate,
    ServingRecord,
    SnapshotPointer,
    now_ms,
)
from common.settings import ServingSettings
from common.storage import (
    CURRENT_SNAPSHOT,
    EXPORT_METADATA,
    PURCHASES_FILE,
    SERVING_RECORD,
    ObjectStore,
    completion_marker,
    model_version_prefix,
    snapshot_prefix,
)
from modelpublisher.gate import check_quality

log = logging.getLogger(__name__)

CANARY_SIGNATURE = "recommend"
CANARY_CHECKED_ITEMS = 10


class PublishError(Exception):
    """Publishing stopped; the message is one line saying why. Nothing was changed."""


class ModelPublisherSettings(ServingSettings):
    publisher_margin: float = Field(
        0.0, ge=0, le=1, description="How much the model must beat popularity by."
    )
    publisher_tolerance: float = Field(
        0.02, ge=0, le=1, description="How far below the live model's figures a new one may fall."
    )
    publisher_load_deadline_seconds: float = Field(
        180.0, gt=0, description="How long to wait for the instance to report the version AVAILABLE."
    )
    publisher_request_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one call.")
    publisher_canary_users: int = Field(3, ge=1, le=100, description="Known users the canary asks for.")
    publisher_delivery_timeout_seconds: float = Field(
        30.0, gt=0, description="How long Kafka may take to confirm the model update."
    )


def read_export_metrics(store: ObjectStore, instance: Instance, version: int) -> ModelMetrics:
    if not store.exists(completion_marker(instance, version)):
        raise PublishError(
            f"{model_version_prefix(instance, version)} is not a complete export (no _COMPLETE)"
        )
    metadata = store.get_json(model_version_prefix(instance, version) + EXPORT_METADATA)
    if not isinstance(metadata, dict) or "metrics" not in metadata:
        raise PublishError(f"{model_version_prefix(instance, version)}{EXPORT_METADATA} has no metrics")
    try:
        return ModelMetrics.model_validate(metadata["metrics"])
    except ValueError as exc:
        raise PublishError(f"invalid metrics in the export's metadata: {_one_line(exc)}") from None


def newest_complete_version(store: ObjectStore, instance: Instance) -> int:
    versions = store.model_versions(instance)
    if not versions:
        raise PublishError(f"instance {instance} has no complete model version in storage")
    return versions[-1]


def wait_available(client: httpx.Client, url: str, model: str, version: int, deadline_seconds: float) -> None:
    """Poll `GET /v1/models/<model>/versions/<version>` until it is AVAILABLE.

    Refused connections, timeouts, 404s (not loaded yet) and 5xx are retried with backoff
    until the deadline; the error then says what the instance last answered.
    """
    endpoint = f"{url}/v1/models/{model}/versions/{version}"
    deadline = time.monotonic() + deadline_seconds
    delay, last = 0.2, "no answer yet"
    while True:
        try:
            response = client.get(endpoint)
            if response.status_code == 200:
                states = response.json().get("model_version_status", [])
                state = states[0].get("state") if states else "unknown"
                if state == "AVAILABLE":
                    return
                last = f"state {state}"
            elif response.status_code == 404 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {_error_of(response)}"
            else:
                raise PublishError(f"{endpoint} answered HTTP {response.status_code}: {_error_of(response)}")
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {_one_line(exc) or 'no detail'}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishError(
                f"{model} version {version} not AVAILABLE at {url} within {deadline_seconds:.0f}s "
                f"(last: {last})"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


def canary_users(store: ObjectStore, metrics: ModelMetrics, count: int) -> list[str]:
    """The most active users of the snapshot the export was trained on (else the current one)."""
    snapshot_id = getattr(metrics, "snapshot_id", None)
    if not snapshot_id:
        pointer = store.get_model(CURRENT_SNAPSHOT, SnapshotPointer)
        if pointer is None:
            raise PublishError("no snapshot to take canary users from (no snapshot_id, no data/current.json)")
        snapshot_id = pointer.snapshot_id
    data = store.get_bytes(snapshot_prefix(snapshot_id) + PURCHASES_FILE)
    if data is None:
        raise PublishError(f"snapshot {snapshot_id} is gone; cannot pick canary users")
    users = pq.read_table(io.BytesIO(data), columns=["user"]).column("user").to_pandas()
    return [str(u) for u in users.value_counts().index[:count]]


def run_canary(client: httpx.Client, url: str, model: str, version: int, users: list[str]) -> None:
    """`recommend` for known users must give well-formed, personal, non-empty rankings."""
    endpoint = f"{url}/v1/models/{model}/versions/{version}:predict"
    try:
        response = client.post(
            endpoint,
            json={
                "signature_name": CANARY_SIGNATURE,
                "inputs": {"users": users, "k": [CANARY_CHECKED_ITEMS] * len(users)},
            },
        )
    except httpx.TransportError as exc:
        raise PublishError(f"canary call to {url} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if response.status_code != 200:
        raise PublishError(f"canary got HTTP {response.status_code} from {url}: {_error_of(response)}")
    outputs = response.json().get("outputs")
    problem = _canary_problem(outputs, users)
    if problem:
        raise PublishError(f"canary failed on {model} version {version} at {url}: {problem}")


def _canary_problem(outputs: object, users: list[str]) -> str | None:
    if not isinstance(outputs, dict) or not {"products", "scores", "fallback"} <= set(outputs):
        return "the answer lacks products, scores or fallback"
    products, scores, fallback = outputs["products"], outputs["scores"], outputs["fallback"]
    if not (len(products) == len(scores) == len(fallback) == len(users)):
        return f"expected {len(users)} rows, got {len(products)}/{len(scores)}/{len(fallback)}"
    for user, items, values, is_fallback in zip(users, products, scores, fallback, strict=True):
        head, head_scores = items[:CANARY_CHECKED_ITEMS], values[:CANARY_CHECKED_ITEMS]
        if is_fallback:
            return f"known user {user!r} got the popularity fallback"
        if len(head) < CANARY_CHECKED_ITEMS or any(not isinstance(p, str) or not p for p in head):
            return f"user {user!r} got empty or missing products"
        if len(set(head)) != len(head):
            return f"user {user!r} got duplicate products"
        if any(not isinstance(s, int | float) or not math.isfinite(s) for s in head_scores):
            return f"user {user!r} got non-finite scores"
        if head_scores != sorted(head_scores, reverse=True):
            return f"user {user!r} got products not in score order"
    return None


def publish(settings: ModelPublisherSettings, instance: Instance, version: int) -> ModelUpdate:
    """Gate, wait for the load, canary, then record and announce the model. Raises PublishError."""
    store = ObjectStore.from_settings(settings)
    candidate = read_export_metrics(store, instance, version)
    live = store.get_model(SERVING_RECORD, ServingRecord)
    decision = check_quality(
        candidate,
        live.metrics if live else None,
        settings.publisher_margin,
        settings.publisher_tolerance,
    )
    if not decision.passed:
        raise PublishError(f"quality gate: {decision.reason}")
    log.info("quality gate %s", decision.reason)
    _check_serving(settings, store, instance, version, candidate)
    previous = live.model_copy(update={"previous": None}) if live else None
    return _record_and_announce(settings, store, instance, version, candidate, live, previous)


def rollback(settings: ModelPublisherSettings) -> ModelUpdate:
    """Re-publish the record that the live one replaced, after checking it is still served."""
    store = ObjectStore.from_settings(settings)
    live = store.get_model(SERVING_RECORD, ServingRecord)
    if live is None or live.previous is None:
        raise PublishError("nothing to roll back to: models/serving.json has no previous model")
    target = live.previous
    _check_serving(settings, store, target.instance, target.version, target.metrics)
    current = live.model_copy(update={"previous": None})
    return _record_and_announce(
        settings, store, target.instance, target.version, target.metrics, live, current
    )


def _check_serving(
    settings: ModelPublisherSettings,
    store: ObjectStore,
    instance: Instance,
    version: int,
    metrics: ModelMetrics,
) -> None:
    url = settings.rest_url(instance)
    with httpx.Client(timeout=settings.publisher_request_timeout_seconds) as client:
        log.info("waiting up to %.0fs for %s version %d at %s", settings.publisher_load_deadline_seconds,
                 settings.model_name, version, url)  # fmt: skip
        wait_available(client, url, settings.model_name, version, settings.publisher_load_deadline_seconds)
        users = canary_users(store, metrics, settings.publisher_canary_users)
        run_canary(client, url, settings.model_name, version, users)
    log.info("canary passed for %d users on instance %s", len(users), instance)


def _record_and_announce(
    settings: ModelPublisherSettings,
    store: ObjectStore,
    instance: Instance,
    version: int,
    metrics: ModelMetrics,
    live: ServingRecord | None,
    previous: ServingRecord | None,
) -> ModelUpdate:
    published_at = now_ms()
    record = ServingRecord(
        model=settings.model_name, instance=instance, version=version,
        published_at=published_at, metrics=metrics, previous=previous,
    )  # fmt: skip
    update = ModelUpdate(
        model=settings.model_name, instance=instance, url=settings.rest_url(instance),
        grpc=settings.grpc_target(instance), version=version, published_at=published_at, metrics=metrics,
    )  # fmt: skip
    store.put_model(SERVING_RECORD, record)
    try:
        _produce(settings, update)
    except PublishError:
        _restore(store, live)
        raise
    log.info("published %s version %d on instance %s", settings.model_name, version, instance)
    return update


def _produce(settings: ModelPublisherSettings, update: ModelUpdate) -> None:
    timeout_ms = int(settings.publisher_delivery_timeout_seconds * 1000)
    producer = make_producer(settings, **{"message.timeout.ms": timeout_ms})
    outcome: list[str | None] = []
    producer.produce(
        settings.topic_model_updates,
        key=update.model.encode("utf-8"),
        value=update.to_bytes(),
        on_delivery=_collect(outcome),
    )
    unsent = producer.flush(settings.publisher_delivery_timeout_seconds + 5)
    if unsent or not outcome:
        raise PublishError(
            f"Kafka did not confirm the model update on {settings.topic_model_updates} in time"
        )
    if outcome[0] is not None:
        raise PublishError(f"Kafka rejected the model update on {settings.topic_model_updates}: {outcome[0]}")


def _collect(outcome: list[str | None]) -> Callable:
    def on_delivery(err, _msg) -> None:
        outcome.append(delivery_error(err))

    return on_delivery


def _restore(store: ObjectStore, live: ServingRecord | None) -> None:
    if live is None:
        store.client.remove_object(store.bucket, SERVING_RECORD)
    else:
        store.put_model(SERVING_RECORD, live)


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
