"""The model server process: poll a batch, answer it, produce, wait for acks, then store offsets.

At-least-once: an offset is stored only after every reply and dead letter of its batch has
been acknowledged by Kafka; if any delivery fails, the batch is re-read from its first offsets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from common.errors import describe_exception
from common.kafka import delivery_error, make_consumer, make_producer, refuses_record
from modelserver.history import History, Sampler
from modelserver.http import HttpServer, build_app
from modelserver.metrics import Metrics
from modelserver.processing import (
    DeadLetter,
    ErrorKind,
    Incoming,
    Record,
    Reply,
    Valid,
    first_offsets,
    next_offsets,
    parse,
    plan,
    replies,
)
from modelserver.routing import Route, Router
from modelserver.serving import ServingError, with_retries
from modelserver.settings import ModelServerSettings
from modelserver.watcher import ModelWatcher

log = logging.getLogger(__name__)

LAG_EVERY_S = 2.0
IDLE_POLL_S = 0.1  # how often an idle loop looks at the stop flag and the model


def answer(
    batch: list[Valid], route: Route, deadline_s: float, metrics: Metrics
) -> tuple[list[tuple[Valid, Reply]], list[DeadLetter]]:
    """Serve a batch on one route: at most three predict calls, retried until the deadline."""
    answered: list[tuple[Valid, Reply]] = []
    dead: list[DeadLetter] = []
    for call in plan(batch):
        started = time.monotonic()
        try:
            outputs = with_retries(
                lambda call=call: route.client.predict(call.signature, call.inputs),
                deadline_s,
                on_retry=lambda error: metrics.retries.inc(),
            )
            answered.extend(replies(call, outputs, route.model))
        except (ServingError, KeyError, ValueError, IndexError) as exc:
            reason = (
                f"{call.signature} on instance {route.update.instance} v{route.update.version} "
                f"failed after retries until {deadline_s:g}s: {exc}"
            )
            log.warning("%d requests to the DLQ: %s", len(call.requests), reason)
            dead.extend(DeadLetter(valid.source, ErrorKind.SERVING_FAILED, reason) for valid in call.requests)
        except Exception as exc:
            # A bug met by one request must not fail its batch, nor meet it again after a restart:
            # each request is served alone, and the ones that still fail are dead-lettered.
            log.exception("unexpected error serving %d requests", len(call.requests))
            if len(call.requests) > 1:
                for valid in call.requests:
                    alone = answer([valid], route, deadline_s, metrics)
                    answered.extend(alone[0])
                    dead.extend(alone[1])
            else:
                dead.append(
                    DeadLetter(call.requests[0].source, ErrorKind.INTERNAL_ERROR, describe_exception(exc))
                )
        finally:
            metrics.observe_predict(route.update.instance, call.signature.value, time.monotonic() - started)
    return answered, dead


@dataclass(frozen=True, eq=False)
class Outgoing:
    """A record to produce, with what it answers: a reply to a request, or a dead letter."""

    topic: str
    record: Record
    source: Incoming
    reply: tuple[Valid, Reply] | None = None
    letter: DeadLetter | None = None


def _incoming(message: Message) -> Incoming:
    return Incoming(message.value(), message.key(), message.topic(), message.partition(), message.offset())


class ModelServer:
    def __init__(self, settings: ModelServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.router = Router(retire_after_s=settings.modelserver_serving_deadline_s + 30)
        self.stop = threading.Event()
        self.watcher = ModelWatcher(settings, self.router, self.metrics, self.stop)
        self.history = History()
        self._paused = False
        self._next_lag = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop.set())
        http = HttpServer(
            build_app(self), self.settings.modelserver_http_host, self.settings.modelserver_http_port
        )
        http.start()
        self.watcher.start()
        Sampler(self.metrics.reading, self.history, self.stop).start()
        # A crashed replica's partitions wait for its session to expire: 10 s rather than
        # librdkafka's 45 s, unless KAFKA_SESSION_TIMEOUT_MS says otherwise.
        session = {} if "session.timeout.ms" in self.settings.kafka else {"session.timeout.ms": 10_000}
        consumer = make_consumer(self.settings, self.settings.modelserver_group_id, **session)
        producer = make_producer(self.settings)
        try:
            consumer.subscribe(
                [self.settings.topic_requests], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            log.info(
                "consuming %s in group %s; batches of up to %d within %d ms; %s to TF-Serving",
                self.settings.topic_requests,
                self.settings.modelserver_group_id,
                self.settings.modelserver_max_batch,
                self.settings.modelserver_max_wait_ms,
                self.settings.modelserver_protocol,
            )
            while not self.stop.is_set():
                self.step(consumer, producer)
        finally:
            # Everything polled has been answered or re-queued by now: flush, commit, close.
            producer.flush(30)
            with contextlib.suppress(KafkaException):
                consumer.commit(asynchronous=False)
            consumer.close()
            http.stop()
            self.watcher.join(5)
            log.info("stopped")
        if self.watcher.error:
            log.error("stopping: %s", self.watcher.error)
            return 1
        return 0

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        if self.router.current is None:
            # Hold requests while no model is known; polling goes on so the membership survives.
            consumer.pause(partitions)
            self._paused = True
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Also called for partitions lost (no on_lost callback): their lag is another replica's now.
        self.metrics.forget_partitions(tp.partition for tp in partitions)
        # Each batch is finished before the next poll, so the stored offsets are complete here.
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)

    # -- one batch ---------------------------------------------------------------------------

    def step(self, consumer: Consumer, producer: Producer) -> None:
        # Natural batching: wait for one request, then take what has arrived meanwhile (plus up to
        # MODELSERVER_MAX_WAIT_MS more). Batches grow with the load while the previous one is
        # served, and a lone request does not wait for company.
        messages = consumer.consume(1, timeout=IDLE_POLL_S)
        if messages and self.settings.modelserver_max_batch > 1:
            messages += consumer.consume(
                self.settings.modelserver_max_batch - 1, timeout=self.settings.modelserver_max_wait_ms / 1000
            )
        self._measure_lag(consumer)
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(_incoming(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error: %s", error)
        route = self.router.current
        if route is None:
            if batch:
                self._rewind(consumer, batch)
            self._hold(consumer)
            return
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False
            # Everything imported so far (TensorFlow's protos among it) is frozen out of Python's
            # cyclic GC, whose full collections otherwise held up a batch for ~200 ms.
            gc.freeze()
            log.info("a model is known: serving requests")
        if batch:
            self.process(batch, route, consumer, producer)

    def _hold(self, consumer: Consumer) -> None:
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
            self._paused = True

    def _rewind(self, consumer: Consumer, batch: list[Incoming]) -> None:
        for (topic, partition), offset in first_offsets(batch).items():
            consumer.seek(TopicPartition(topic, partition, offset))

    def answer(self, batch: list[Valid], route: Route) -> tuple[list[tuple[Valid, Reply]], list[DeadLetter]]:
        """`answer` with this server's deadline and metrics: for the Kafka batches and /recommend alike."""
        return answer(batch, route, self.settings.modelserver_serving_deadline_s, self.metrics)

    def process(self, batch: list[Incoming], route: Route, consumer: Consumer, producer: Producer) -> None:
        self.metrics.observe_batch(len(batch))
        limit = self.settings.modelserver_max_request_bytes
        valid: list[Valid] = []
        dead: list[DeadLetter] = []
        for item in (parse(message, limit) for message in batch):
            (valid if isinstance(item, Valid) else dead).append(item)
        answered, failed = self.answer(valid, route)
        dead.extend(failed)
        pending = [
            Outgoing(
                self.settings.topic_replies,
                Record(reply.request_id.encode(), reply.to_bytes(), []),
                valid_request.source,
                reply=(valid_request, reply),
            )
            for valid_request, reply in answered
        ] + [
            Outgoing(self.settings.topic_dlq, letter.record(limit), letter.source, letter=letter)
            for letter in dead
        ]
        delivered: list[Outgoing] = []
        # A record Kafka refuses is replaced by a smaller one (a reply by a dead letter, a dead
        # letter by its headers alone), so no message can be re-read and refused forever.
        while pending:
            refused = self._deliver(producer, pending)
            if refused is None:
                self._rewind(consumer, batch)
                return
            refused_ids = {id(item) for item, _ in refused}
            delivered.extend(item for item in pending if id(item) not in refused_ids)
            pending = [
                replacement for item, reason in refused if (replacement := self._replace(item, reason))
            ]
        consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets(batch).items()])
        self._observe(route, delivered)

    def _deliver(self, producer: Producer, records: list[Outgoing]) -> list[tuple[Outgoing, str]] | None:
        """Produce and wait for every ack: the refused records with why, or None to re-read the batch."""
        errors: dict[int, KafkaError] = {}

        def on_delivery(index: int, err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors[index] = err

        for index, item in enumerate(records):
            error = self._produce(producer, item, partial(on_delivery, index))
            if error is not None:
                errors[index] = error
        undelivered = producer.flush(60)
        retry = [err for err in errors.values() if not refuses_record(err)]
        if undelivered or retry:
            self.metrics.produce_failures.labels("failed").inc(undelivered + len(retry))
            log.error(
                "%d records not acknowledged (%s); re-reading the batch",
                undelivered + len(retry),
                delivery_error(retry[0]) if retry else "flush timed out",
            )
            if any(err.fatal() for err in retry):
                raise KafkaException(next(err for err in retry if err.fatal()))
            return None
        self.metrics.produce_failures.labels("refused").inc(len(errors))
        return [(records[index], delivery_error(err) or "refused") for index, err in errors.items()]

    @staticmethod
    def _produce(producer: Producer, item: Outgoing, on_delivery: Any) -> KafkaError | None:
        """Hand one record to the producer; the error when it refuses it at once."""
        record = item.record
        while True:
            try:
                producer.produce(
                    item.topic, key=record.key, value=record.value, headers=record.headers or None,
                    on_delivery=on_delivery,
                )  # fmt: skip
                return None
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                producer.poll(0.1)
            except KafkaException as exc:
                return exc.args[0]
            except Exception as exc:  # e.g. a header librdkafka cannot take: the record is at fault
                return KafkaError(KafkaError._INVALID_ARG, describe_exception(exc))

    def _replace(self, item: Outgoing, reason: str) -> Outgoing | None:
        topic = self.settings.topic_dlq
        if item.letter is None:
            letter = DeadLetter(
                item.source, ErrorKind.REPLY_UNDELIVERABLE, f"Kafka refused the reply: {reason}"
            )
            log.warning(
                "reply to %s:%d@%d refused (%s): dead-lettered",
                item.source.topic,
                item.source.partition,
                item.source.offset,
                reason,
            )
            return Outgoing(
                topic, letter.record(self.settings.modelserver_max_request_bytes), item.source, letter=letter
            )
        if item.record.value:
            letter = DeadLetter(
                item.source, item.letter.kind, f"{item.letter.error}; value dropped: {reason}"
            )
            return Outgoing(topic, letter.record(0), item.source, letter=letter)
        log.error(
            "dropping the dead letter of %s:%d@%d: Kafka refused even its headers (%s)",
            item.source.topic, item.source.partition, item.source.offset, reason,
        )  # fmt: skip
        return None

    def _observe(self, route: Route, delivered: list[Outgoing]) -> None:
        answered = [item.reply for item in delivered if item.reply is not None]
        if answered:
            now = time.time()
            self.metrics.observe_replies(
                route.update.instance,
                [now - valid_request.request.sent_at / 1000 for valid_request, _ in answered],
                [
                    {
                        "request_id": reply.request_id,
                        "user": reply.user,
                        "items": [product for product, _ in reply.items],
                        "model": f"{reply.model.instance}/v{reply.model.version}",
                        "fallback": reply.fallback,
                        "served_at": reply.served_at,
                    }
                    for _, reply in answered[-self.metrics.recent :]
                ],
            )
        for item in delivered:
            if item.letter is not None:
                self.metrics.observe_dead_letter(
                    item.letter.kind.value,
                    {
                        "dlq": item.letter.kind.value,
                        "error": item.letter.error[:200],
                        "offset": item.source.offset,
                    },
                )

    def _measure_lag(self, consumer: Consumer) -> None:
        if time.monotonic() < self._next_lag:
            return
        self._next_lag = time.monotonic() + LAG_EVERY_S
        assignment = consumer.assignment()
        if not assignment:
            self.metrics.set_lag(None)
            return
        lags = {}
        for tp in consumer.position(assignment):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # no watermark fetched yet: no figure rather than a made-up one
            start = tp.offset if tp.offset >= 0 else self._committed(consumer, tp, low)
            lags[tp.partition] = max(0, high - start)
        self.metrics.set_lag(lags)

    @staticmethod
    def _committed(consumer: Consumer, tp: TopicPartition, low: int) -> int:
        with contextlib.suppress(KafkaException):
            committed = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=1)
            if committed and committed[0].offset >= 0:
                return committed[0].offset
        return max(low, 0)

    def state(self) -> dict[str, Any]:
        route = self.router.current
        model = None
        if route is not None:
            model = route.update.model_dump(mode="json") | {
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(route.since)),
                "since_epoch_s": route.since,
            }
        previous = self.router.previous
        return {
            "ready": route is not None,
            "model": model,
            "previous_model": previous.model_dump(mode="json") if previous is not None else None,
            "switches": self.router.switches,
            "protocol": self.settings.modelserver_protocol,
            "max_batch": self.settings.modelserver_max_batch,
            "max_wait_ms": self.settings.modelserver_max_wait_ms,
        } | self.metrics.snapshot()
