"""The client's reusable core: send requests, collect their replies and dead letters, make load.

The demo imports `run_load` and the benchmarks `OpenLoop` (the load both run) directly; the CLI is
a thin shell.
Replies are matched by `request_id`; a second reply for the same id counts as a duplicate
(delivery is at-least-once), never as a new answer.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
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


class OpenLoop:
    """Requests sent on a fixed schedule whatever the replies do, their replies collected meanwhile.

    The load of `client load`, the demo and the bench (bench/load.py): each caller builds its own
    report from `ids`, `sent_at` and `collector` (`close()` first, or use it as a context manager).
    """

    def __init__(self, settings: Settings, **producer_overrides: str | int | bool) -> None:
        self.settings = settings
        self.collector = ReplyCollector(settings)
        self.collector.start()
        self.producer = make_producer(settings, **producer_overrides)
        self.ids: list[str] = []
        self.sent_at: list[float] = []  # time.monotonic() of each send, in the order of `ids`
        self.start = time.monotonic()

    def __enter__(self) -> OpenLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self, user: str, k: int, timeout: float = 30.0) -> str:
        """One request answered before the schedule starts, so that the collector's first fetch and
        the producer's connections are not counted as the first requests' latency; returns its id."""
        request = RecommendationRequest(request_id=f"probe-{uuid.uuid4()}", user=user, k=k)
        send(self.producer, self.settings, request)
        self.producer.flush(timeout)
        self.collector.wait_for(request.request_id, timeout)
        return request.request_id

    def send(
        self,
        users: Sequence[str],
        rate: float | None,
        k: int = 10,
        duration_s: float = math.inf,
        count: float = math.inf,
        seed: int | None = None,
        stop: threading.Event | None = None,
        tick: Callable[[], None] | None = None,
        max_sleep_s: float = 0.05,
    ) -> None:
        """Send `rate` requests per second (None: as fast as possible) until `duration_s` has passed,
        `count` are sent or `stop` is set. Request i is due `i / rate` seconds after the start and
        every request due goes out at once; ahead of the schedule the sender sleeps until the next
        one is due, at most `max_sleep_s`. `tick` is called after every send and every sleep."""
        rng = np.random.default_rng(seed)
        picks: Iterator[int] = iter(())
        self.start = start = time.monotonic()
        while len(self.ids) < count and not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if now - start >= duration_s:
                break
            if rate is not None:
                due = start + len(self.ids) / rate
                if due > now:
                    time.sleep(min(due - now, max_sleep_s))
                    if tick is not None:
                        tick()
                    continue
            user = next(picks, None)
            if user is None:  # draw users in blocks: one numpy call per 1,000 requests
                picks = iter(rng.choice(len(users), size=1000))
                user = next(picks)
            request = RecommendationRequest(request_id=str(uuid.uuid4()), user=users[int(user)], k=k)
            self.ids.append(request.request_id)
            self.sent_at.append(time.monotonic())
            send(self.producer, self.settings, request)
            if tick is not None:
                tick()

    def flush(self, timeout: float) -> int:
        """Wait for Kafka to acknowledge every request; returns how many it has not."""
        return self.producer.flush(timeout)

    def drain(self, seconds: float, every_s: float = 0.1, tick: Callable[[], None] | None = None) -> None:
        """Wait up to `seconds` until every request has a reply or a dead letter."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self.collector.settled(self.ids):
            if tick is not None:
                tick()
            time.sleep(every_s)

    def close(self) -> None:
        self.collector.close()


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
    load = OpenLoop(settings)
    collector = load.collector
    next_progress = load.start

    def report_progress(draining: bool) -> None:
        nonlocal next_progress
        now = time.monotonic()
        if progress is not None and now >= next_progress:
            next_progress = now + progress_every_s
            progress(
                Progress(
                    len(load.ids),
                    len(collector.answers),
                    len(collector.dead_letters),
                    sum(collector.duplicates.values()),
                    now - load.start,
                    draining,
                )
            )

    with load:
        load.send(
            users, rate, k, duration_s=duration_s, seed=seed, stop=stop, tick=lambda: report_progress(False)
        )
        if load.flush(60) != 0:
            raise ClientError("requests were not acknowledged by Kafka within 60s")
        # Draining goes on after `stop`: it ends the sending, and the replies still count.
        load.drain(drain_s, tick=lambda: report_progress(True))
        elapsed = time.monotonic() - load.start
    sent_at = dict(zip(load.ids, load.sent_at, strict=True))

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
