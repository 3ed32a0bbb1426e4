"""The client's reusable core: send requests, collect their replies and dead letters, make load.

Benchmarks and the demo import `ReplyCollector` and `run_load` directly; the CLI is a thin shell.
Replies are matched by `request_id`; a second reply for the same id counts as a duplicate
(delivery is at-least-once), never as a new answer.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import ValidationError
from pydantic_core import from_json

from common.kafka import make_consumer, make_producer
from common.schemas import DeadLetterHeaders, RecommendationReply, RecommendationRequest
from common.settings import Settings
from common.snapshots import current_pointer, read_purchases
from common.storage import ObjectStore


class ClientError(RuntimeError):
    """A one-line reason the client cannot go on (no snapshot, missing topic)."""


def snapshot_users(settings: Settings) -> list[str]:
    """The distinct users of the current snapshot, as the ids the model holds (text)."""
    store = ObjectStore.from_settings(settings)
    pointer = current_pointer(store)
    if pointer is None:
        raise ClientError("no current snapshot: run `recommender datapublisher publish` first")
    purchases = read_purchases(store, pointer.path, columns=["user"])
    if purchases is None:
        raise ClientError(f"the current snapshot's file {pointer.path} is missing")
    return sorted(pd.unique(purchases["user"].astype(str)).tolist())


@dataclass
class Answer:
    raw: bytes  # the reply as received; `reply` validates it against the schema when first read
    received: float  # time.monotonic() when read

    @cached_property
    def reply(self) -> RecommendationReply:
        return RecommendationReply.model_validate_json(self.raw)


class ReplyCollector(threading.Thread):
    """Reads the replies and DLQ topics from their current ends, in a background thread.

    The start positions are fixed (explicit watermarks, not OFFSET_END) before `start()` returns,
    so a reply to a request sent afterwards cannot be missed.
    """

    def __init__(self, settings: Settings, dlq: bool = True) -> None:
        super().__init__(name="reply-collector", daemon=True)
        self.settings = settings
        self._consumer: Consumer = make_consumer(
            settings, f"client-{uuid.uuid4().hex[:12]}", **{"enable.auto.commit": False}
        )
        self._lock = threading.Condition()
        self._halt = threading.Event()
        self.answers: dict[str, Answer] = {}
        self.duplicates: Counter[str] = Counter()
        self.dead_letters: dict[str, str] = {}
        self.unparsable_replies = 0
        topics = [settings.topic_replies] + ([settings.topic_dlq] if dlq else [])
        self._assign(topics)

    def _assign(self, topics: Iterable[str]) -> None:
        metadata = self._consumer.list_topics(timeout=30)
        assignment = []
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise ClientError(f"topic {topic} does not exist; run `recommender init`")
            for partition in metadata.topics[topic].partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                # Wait for one message, then take what has already arrived: consume(n, timeout)
                # would hold a partial batch until the timeout, and that wait would be counted
                # as reply latency.
                messages = self._consumer.consume(1, timeout=0.1)
                if messages:
                    messages += self._consumer.consume(499, timeout=0)
                for message in messages:
                    if message.error() is None:
                        self._take(message)
        finally:
            self._consumer.close()

    def _take(self, message) -> None:
        now = time.monotonic()
        if message.topic() == self.settings.topic_dlq:
            try:
                request_id = json.loads(message.value())["request_id"]
            except (ValueError, TypeError, KeyError):
                return  # not one of ours: a malformed message has no id to match
            headers = {k: (v or b"").decode(errors="replace") for k, v in message.headers() or []}
            kind, error = (
                headers.get(DeadLetterHeaders.ERROR_KIND, "?"),
                headers.get(DeadLetterHeaders.ERROR, ""),
            )
            with self._lock:
                self.dead_letters[str(request_id)] = f"{kind}: {error}"
                self._lock.notify_all()
            return
        # Only the id is read here: validating every reply under load cost as much CPU as
        # producing the requests. `Answer.reply` validates the ones that are looked at. Keeping
        # the bytes rather than parsed objects keeps Python's cyclic GC, and its pauses, small.
        raw = message.value() or b""
        try:
            request_id = from_json(raw)["request_id"]
        except (ValueError, TypeError, KeyError):
            request_id = None
        if not isinstance(request_id, str):
            with self._lock:
                self.unparsable_replies += 1
            return
        with self._lock:
            if request_id in self.answers:
                self.duplicates[request_id] += 1
            else:
                self.answers[request_id] = Answer(raw, now)
            self._lock.notify_all()

    def wait_for(self, request_id: str, timeout: float) -> Answer | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while request_id not in self.answers and request_id not in self.dead_letters:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            return self.answers.get(request_id)

    def settled(self, request_ids: Iterable[str]) -> bool:
        """Whether every id has a reply or a dead letter."""
        with self._lock:
            return all(rid in self.answers or rid in self.dead_letters for rid in request_ids)

    def close(self) -> None:
        self._halt.set()
        self.join(10)


def send(producer: Producer, settings: Settings, request: RecommendationRequest) -> None:
    while True:
        try:
            producer.produce(
                settings.topic_requests, key=str(request.user).encode(), value=request.to_bytes()
            )
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


def recommend(
    settings: Settings, user: str, k: int, timeout: float
) -> tuple[RecommendationRequest, Answer | None, str | None, float]:
    """Send one request and wait for its reply: (request, answer or None, DLQ reason, sent at)."""
    collector = ReplyCollector(settings)
    collector.start()
    producer = make_producer(settings)
    try:
        request = RecommendationRequest(request_id=str(uuid.uuid4()), user=user, k=k)
        sent = time.monotonic()
        send(producer, settings, request)
        if producer.flush(timeout) != 0:
            raise ClientError(f"the request was not acknowledged by Kafka within {timeout:g}s")
        answer = collector.wait_for(request.request_id, max(0.0, timeout - (time.monotonic() - sent)))
        return request, answer, collector.dead_letters.get(request.request_id), sent
    finally:
        collector.close()


@dataclass
class LoadReport:
    sent: int = 0
    answered: int = 0
    duplicates: int = 0
    dlq: int = 0
    unanswered: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    models: Counter[str] = field(default_factory=Counter)  # "instance/vN" -> replies
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def percentiles(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50": None, "p95": None, "p99": None}
        values = np.array(self.latencies_ms)
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}

    def summary(self) -> str:
        pct = self.percentiles()
        latency = (
            "  ".join(f"{name} {value:.1f} ms" for name, value in pct.items())
            if pct["p50"] is not None
            else "no replies"
        )
        models = ", ".join(f"{name}: {count}" for name, count in sorted(self.models.items())) or "none"
        lines = [
            f"sent {self.sent}  answered {self.answered}  duplicates {self.duplicates}  dlq {self.dlq}  "
            f"unanswered {len(self.unanswered)}  in {self.elapsed_s:.1f}s",
            f"latency  {latency}",
            f"replies by model  {models}",
        ]
        lines += [f"dlq  {count} x {reason}" for reason, count in self.dlq_reasons.most_common(5)]
        return "\n".join(lines)


@dataclass
class Progress:
    sent: int
    answered: int
    dlq: int
    duplicates: int
    elapsed_s: float
    draining: bool


def run_load(
    settings: Settings,
    users: Sequence[str],
    duration_s: float,
    rate: float | None,
    k: int = 10,
    drain_s: float = 30.0,
    progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 0.5,
    stop: threading.Event | None = None,
    seed: int | None = None,
) -> LoadReport:
    """Send requests for `duration_s` at `rate` per second (None: as fast as possible), or until
    `stop` is set, then wait up to `drain_s` for the outstanding replies. Users are drawn
    uniformly from `users`."""
    if not users:
        raise ClientError("no users to draw requests from")
    stop = stop or threading.Event()
    rng = np.random.default_rng(seed)
    collector = ReplyCollector(settings)
    collector.start()
    producer = make_producer(settings)
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    next_progress = start

    def report_progress(draining: bool) -> None:
        nonlocal next_progress
        now = time.monotonic()
        if progress is not None and now >= next_progress:
            next_progress = now + progress_every_s
            progress(
                Progress(
                    len(sent_at),
                    len(collector.answers),
                    len(collector.dead_letters),
                    sum(collector.duplicates.values()),
                    now - start,
                    draining,
                )
            )

    try:
        picks = iter(())
        while not stop.is_set():
            now = time.monotonic()
            if now - start >= duration_s:
                break
            if rate is not None:
                due = start + len(sent_at) / rate
                if due > now:
                    time.sleep(min(due - now, 0.05))
                    report_progress(False)
                    continue
            user = next(picks, None)
            if user is None:  # draw users in blocks: one numpy call per 1,000 requests
                picks = iter(rng.choice(len(users), size=1000))
                user = next(picks)
            request = RecommendationRequest(request_id=str(uuid.uuid4()), user=users[int(user)], k=k)
            sent_at[request.request_id] = time.monotonic()
            send(producer, settings, request)
            report_progress(False)
        if producer.flush(60) != 0:
            raise ClientError("requests were not acknowledged by Kafka within 60s")
        drain_until = time.monotonic() + drain_s
        # Draining goes on after `stop`: it ends the sending, and the replies still count.
        while time.monotonic() < drain_until:
            if collector.settled(sent_at):
                break
            report_progress(True)
            time.sleep(0.1)
        elapsed = time.monotonic() - start
    finally:
        collector.close()

    report = LoadReport(sent=len(sent_at), elapsed_s=elapsed)
    for request_id, sent in sent_at.items():
        answer = collector.answers.get(request_id)
        if answer is None:
            report.unanswered.append(request_id)
            if request_id in collector.dead_letters:
                report.dlq += 1
                report.dlq_reasons[collector.dead_letters[request_id][:120]] += 1
            continue
        try:
            model = answer.reply.model
        except ValidationError:  # our id on a reply that breaks the schema: not an answer
            report.unanswered.append(request_id)
            continue
        report.answered += 1
        report.latencies_ms.append((answer.received - sent) * 1000)
        report.models[f"{model.instance}/v{model.version}"] += 1
    report.duplicates = sum(count for rid, count in collector.duplicates.items() if rid in sent_at)
    return report
