"""Follows the compacted `model-updates` topic and installs a route once its instance answers."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from common.errors import describe_exception, describe_validation_error
from common.kafka import make_consumer
from common.schemas import ModelUpdate
from modelserver.metrics import Metrics
from modelserver.routing import Route, Router, check_answers
from modelserver.serving import client_for
from modelserver.settings import ModelServerSettings

log = logging.getLogger(__name__)

RECHECK_EVERY_S = 2.0
MAX_UPDATE_BYTES = 64 * 1024  # a model update is ~400 bytes; anything near this is not one


class ModelWatcher(threading.Thread):
    """Reads every model update from the start (a non-group assign: the topic is compacted).

    At start-up it reads to the end before installing anything, so it routes to the live model
    rather than to the first one it meets. A newer update is installed only after its instance
    reports the version AVAILABLE; until then the old route keeps serving.
    """

    def __init__(
        self, settings: ModelServerSettings, router: Router, metrics: Metrics, stop: threading.Event
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.settings, self.router, self.metrics, self.stop = settings, router, metrics, stop
        self.caught_up = threading.Event()
        self.latest: ModelUpdate | None = None
        self.error: str | None = None

    def run(self) -> None:
        # A private group id that commits nothing: every start re-reads the compacted topic.
        consumer = make_consumer(
            self.settings,
            f"{self.settings.modelserver_group_id}-updates-{uuid.uuid4().hex[:8]}",
            **{"enable.auto.commit": False},
        )
        try:
            self._catch_up(consumer)
            self.caught_up.set()
            self._follow(consumer)
        except Exception as exc:  # the server cannot serve without it: stop the process
            self.error = f"model-updates: {exc}"
            log.error("%s", self.error)
            self.stop.set()
        finally:
            consumer.close()

    def _catch_up(self, consumer: Consumer) -> None:
        topic = self.settings.topic_model_updates
        metadata = consumer.list_topics(topic, timeout=30)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic} does not exist; run `recommender init`")
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions]
        consumer.assign(partitions)
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
        log.info("reading %s to the end (%d messages at most)", topic, sum(ends.values()))
        while not self.stop.is_set():
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
            self._take(consumer.poll(0.5))
        log.info(
            "model-updates read: %s",
            f"live model {self.latest.instance} v{self.latest.version}" if self.latest else "no model yet",
        )

    def _follow(self, consumer: Consumer) -> None:
        next_check = 0.0
        warned_for: ModelUpdate | None = None
        while not self.stop.is_set():
            self._take(consumer.poll(0.5))
            pending = self.latest
            current = self.router.current
            if pending is None or (current is not None and current.same_target(pending)):
                continue
            if time.monotonic() < next_check:
                continue
            if self._try_install(pending):
                continue
            next_check = time.monotonic() + RECHECK_EVERY_S
            if warned_for != pending:
                warned_for = pending
                self.metrics.rejected_updates.labels("not-available").inc()
                log.warning(
                    "instance %s (%s) does not report %s v%d AVAILABLE; keeping the current route",
                    pending.instance,
                    pending.grpc if self.settings.modelserver_protocol == "grpc" else pending.url,
                    pending.model,
                    pending.version,
                )

    def _try_install(self, update: ModelUpdate) -> bool:
        """Route to the update's instance if it answers; an unreachable or odd target only says no."""
        try:
            client = client_for(
                update, self.settings.modelserver_protocol, self.settings.modelserver_call_timeout_s
            )
        except Exception as exc:
            log.warning("cannot make a client for %s: %s", update.grpc, describe_exception(exc))
            return False
        try:
            answers = check_answers(client, self.settings.modelserver_switch_check_s, stop=self.stop)
        except Exception as exc:
            log.warning("checking instance %s failed: %s", update.instance, describe_exception(exc))
            answers = False
        if not answers:
            client.close()
            return False
        if self.router.install(Route(update, client)) is not None:
            self.metrics.switches.inc()
        self.metrics.set_live_model(update.instance, update.version)
        self.metrics.ready.set(1)
        return True

    def _take(self, message) -> None:
        if message is None:
            return
        if message.error() is not None:
            if message.error().fatal():
                raise KafkaException(message.error())
            return
        value = message.value()
        if value is None:
            return  # a tombstone
        if len(value) > MAX_UPDATE_BYTES:
            self._reject(message.offset(), "too-large", f"{len(value)} bytes, over {MAX_UPDATE_BYTES}")
            return
        try:
            update = ModelUpdate.model_validate_json(value)
        except ValidationError as exc:
            self._reject(message.offset(), "invalid", describe_validation_error(exc, "request"))
            return
        if update.model == self.settings.model_name:
            self.latest = update

    def _reject(self, offset: int, reason: str, detail: str) -> None:
        self.metrics.rejected_updates.labels(reason).inc()
        log.warning("ignoring a model update at offset %d (%s): %s", offset, reason, detail[:500])
