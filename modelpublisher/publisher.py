"""Publish a model version only after it passes the quality gate, is loaded and answers a canary.

Order: gate (no network), wait for AVAILABLE (bounded, with backoff), canary; then announce in
three writes, so that a crash between any two never lets the next upload target the instance the
model servers route to (they follow the latest update on the compacted `model-updates` topic):

1. `models/serving.json` becomes the new record with `pending` = the exact model update and
   `previous` = the whole record it replaces. From here on `idle_instance` refuses to answer:
   the live instance is whichever one `model-updates` names.
2. The update is produced and its delivery confirmed.
3. `serving.json` becomes the final record (`pending` cleared, `previous` trimmed to one level).

A crash before 1 changes nothing. After 1, and after 2, the next upload or publish first calls
`settle_pending`, which reads the latest update on `model-updates` (what the model servers
read): if it is the pending update, step 3 is done; if it is still the previous record's model
(or there is none), the previous record is put back. Either way the record then names the
instance the model servers route to, and the idle instance is the other one. Reading the topic,
rather than re-producing the pending update, leaves the model servers where they are when the
update never went out. A delivery that Kafka does not confirm may still have landed, so
it leaves the publish pending too, for the next run to settle. Any other failure raises
`PublishError` with a one-line reason before step 1 and changes nothing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable

import httpx
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from pydantic import Field

from common.errors import first_line
from common.kafka import delivery_error, make_consumer, make_producer
from common.retry import Backoff, poll
from common.schemas import (
    Instance,
    ModelMetrics,
    ModelUpdate,
    ServingRecord,
    now_ms,
    other_instance,
)
from common.settings import ServingSettings, Settings
from common.snapshots import current_pointer, read_purchases
from common.storage import (
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
TOPIC_READ_TIMEOUT_SECONDS = 30.0
# Test-only (tests/faults/test_publisher_crash.py): the publisher stops at this step boundary
# until it is killed. Unset, as everywhere but in that test, it does nothing.
PAUSE_AT_VARIABLE = "PUBLISHER_TEST_PAUSE_AT"


class PublishError(Exception):
    """Publishing stopped; the message is one line saying why. Nothing was announced, except after
    an unconfirmed delivery, which stays pending in `models/serving.json` (see `settle_pending`)."""


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
        raise PublishError(f"invalid metrics in the export's metadata: {first_line(exc, 300)}") from None


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
    last = "no answer yet"

    def available() -> bool:
        nonlocal last
        try:
            response = client.get(endpoint)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {first_line(exc, 300) or 'no detail'}"
            return False
        if response.status_code == 200:
            states = response.json().get("model_version_status", [])
            state = states[0].get("state") if states else "unknown"
            last = f"state {state}"
            return state == "AVAILABLE"
        if response.status_code == 404 or response.status_code >= 500:
            last = f"HTTP {response.status_code}: {_error_of(response)}"
            return False
        raise PublishError(f"{endpoint} answered HTTP {response.status_code}: {_error_of(response)}")

    if not poll(available, Backoff(0.2, cap=5.0), deadline_seconds):
        raise PublishError(
            f"{model} version {version} not AVAILABLE at {url} within {deadline_seconds:.0f}s (last: {last})"
        )


def canary_users(store: ObjectStore, metrics: ModelMetrics, count: int) -> list[str]:
    """The most active users of the snapshot the export was trained on (else the current one)."""
    snapshot_id = getattr(metrics, "snapshot_id", None)
    if not snapshot_id:
        pointer = current_pointer(store)
        if pointer is None:
            raise PublishError("no snapshot to take canary users from (no snapshot_id, no data/current.json)")
        snapshot_id = pointer.snapshot_id
    purchases = read_purchases(store, snapshot_prefix(snapshot_id) + PURCHASES_FILE, columns=["user"])
    if purchases is None:
        raise PublishError(f"snapshot {snapshot_id} is gone; cannot pick canary users")
    return [str(u) for u in purchases["user"].value_counts().index[:count]]


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
        raise PublishError(
            f"canary call to {url} failed: {type(exc).__name__}: {first_line(exc, 300)}"
        ) from None
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
    live = settle_pending(settings, store)
    _refuse_live_instance(live, instance, version)
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
    return _record_and_announce(settings, store, instance, version, candidate, live)


def rollback(settings: ModelPublisherSettings) -> ModelUpdate:
    """Re-publish the record that the live one replaced, after checking it is still served."""
    store = ObjectStore.from_settings(settings)
    live = settle_pending(settings, store)
    if live is None or live.previous is None:
        raise PublishError("nothing to roll back to: models/serving.json has no previous model")
    target = live.previous
    _refuse_live_instance(live, target.instance, target.version)
    _check_serving(settings, store, target.instance, target.version, target.metrics)
    return _record_and_announce(settings, store, target.instance, target.version, target.metrics, live)


def latest_update(settings: Settings, model: str) -> ModelUpdate | None:
    """The last update for `model` on the compacted `model-updates` topic: what model servers route by.

    Read from the beginning to the end offsets taken at the start, with a private group that
    commits nothing, as the model servers' watcher does.
    """
    topic = settings.topic_model_updates
    consumer = make_consumer(
        settings, f"modelpublisher-settle-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=TOPIC_READ_TIMEOUT_SECONDS)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise PublishError(f"cannot read topic {topic}: it does not exist (run `recommender init`)")
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions]
        watermarks = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=TOPIC_READ_TIMEOUT_SECONDS)
            for tp in partitions
        }
        ends = {partition: high for partition, (low, high) in watermarks.items() if high > low}
        unread = [TopicPartition(topic, partition) for partition in ends]
        consumer.assign(partitions)
        latest = None
        deadline = time.monotonic() + TOPIC_READ_TIMEOUT_SECONDS
        while any(tp.offset < ends[tp.partition] for tp in consumer.position(unread)):
            if time.monotonic() > deadline:
                raise PublishError(
                    f"could not read {topic} to its end within {TOPIC_READ_TIMEOUT_SECONDS:.0f}s"
                )
            message = consumer.poll(0.5)
            if message is None or message.error() or message.key() != model.encode("utf-8"):
                continue
            # A tombstone (no value) deletes the model's update.
            value = message.value()
            latest = None if value is None else ModelUpdate.model_validate_json(value)
        return latest
    finally:
        consumer.close()


def settle_pending(settings: Settings, store: ObjectStore) -> ServingRecord | None:
    """`models/serving.json` with any pending publish settled by what `model-updates` says.

    The pending update is on the topic: the publish happened, the final record is written.
    The topic still names the previous record's model, or no model at all: the publish did not
    happen, the previous record is put back (or serving.json removed, when there was none).
    Anything else is refused: the record and the topic disagree in a way no crash of this
    publisher leaves behind, and neither instance is known to be idle.
    """
    record = store.get_model(SERVING_RECORD, ServingRecord)
    if record is None or record.pending is None:
        return record
    pending, previous = record.pending, record.previous
    latest = latest_update(settings, pending.model)
    if latest is not None and (latest.instance, latest.version, latest.published_at) == (
        pending.instance, pending.version, pending.published_at,
    ):  # fmt: skip
        settled = _final(record)
        store.put_model(SERVING_RECORD, settled)
        log.info("settled the pending publish of instance %s version %d: it was announced",
                 pending.instance, pending.version)  # fmt: skip
        return settled
    if latest is None or (
        previous is not None and (latest.instance, latest.version) == (previous.instance, previous.version)
    ):
        if previous is None:
            store.client.remove_object(store.bucket, SERVING_RECORD)
        else:
            store.put_model(SERVING_RECORD, previous)
        log.info("settled the pending publish of instance %s version %d: it was never announced, "
                 "the previous record is back", pending.instance, pending.version)  # fmt: skip
        return previous
    named = f"instance {latest.instance} version {latest.version}" if latest else "no model"
    raise PublishError(
        f"{SERVING_RECORD} has a pending publish of instance {pending.instance} version {pending.version}, "
        f"but {settings.topic_model_updates} names {named}, which is neither it nor the previous record"
    )


def _final(record: ServingRecord) -> ServingRecord:
    """The record once its update is confirmed: no pending, and `previous` one level deep."""
    previous = record.previous.model_copy(update={"previous": None}) if record.previous else None
    return record.model_copy(update={"pending": None, "previous": previous})


def _refuse_live_instance(live: ServingRecord | None, instance: Instance, version: int) -> None:
    # A new version on the live instance would have been loaded there ungated (TF-Serving's
    # latest policy), unloading the version every request is pinned to.
    if live is not None and live.instance == instance and live.version != version:
        raise PublishError(
            f"instance {instance} is live (version {live.version}); a new version is published "
            f"on the idle instance {other_instance(instance)}"
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
) -> ModelUpdate:
    """The three writes of the module docstring, each crash point between them settled later."""
    _pause_at("checked")
    published_at = now_ms()
    update = ModelUpdate(
        model=settings.model_name, instance=instance, url=settings.rest_url(instance),
        grpc=settings.grpc_target(instance), version=version, published_at=published_at, metrics=metrics,
    )  # fmt: skip
    record = ServingRecord(
        model=settings.model_name, instance=instance, version=version,
        published_at=published_at, metrics=metrics, previous=live, pending=update,
    )  # fmt: skip
    store.put_model(SERVING_RECORD, record)
    _pause_at("recorded")
    try:
        _produce(settings, update)
    except PublishError as exc:
        # The update may still have landed: only the topic can tell, so the record stays pending.
        raise PublishError(
            f"{exc}; {SERVING_RECORD} keeps the publish pending until the next upload or publish "
            f"settles it from {settings.topic_model_updates}"
        ) from None
    _pause_at("announced")
    store.put_model(SERVING_RECORD, _final(record))
    log.info("published %s version %d on instance %s", settings.model_name, version, instance)
    return update


def _pause_at(boundary: str) -> None:
    """Test-only hook: block at `boundary` when PUBLISHER_TEST_PAUSE_AT names it, so a test can SIGKILL."""
    if os.environ.get(PAUSE_AT_VARIABLE) == boundary:
        log.warning("paused at %s (%s); waiting to be killed", boundary, PAUSE_AT_VARIABLE)
        threading.Event().wait()


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


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]
