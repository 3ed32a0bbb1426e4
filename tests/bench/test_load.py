"""The bench's timed load on the real Kafka: a reply only counts when it meets the schema."""

from __future__ import annotations

import json
import threading

import pytest

from bench.load import timed_load
from common.kafka import ensure_topics, make_consumer, make_producer
from common.schemas import DeadLetterHeaders, ModelRef, RecommendationReply, ScoredItem


def respond(settings, stop: threading.Event, bad: set[int], dead: set[int]) -> None:
    """Answer every request in arrival order; the n-th (0: the probe) breaks the schema if n is in
    `bad`, and is dead-lettered if n is in `dead`."""
    consumer = make_consumer(settings, "bench-load-test")
    producer = make_producer(settings)
    consumer.subscribe([settings.topic_requests])
    seen = 0
    try:
        while not stop.is_set():
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            request = json.loads(message.value())
            if seen in bad:
                producer.produce(
                    settings.topic_replies, value=json.dumps({"request_id": request["request_id"]})
                )
            elif seen in dead:
                headers = [
                    (DeadLetterHeaders.ERROR_KIND, b"serving-failed"),
                    (DeadLetterHeaders.ERROR, b"test"),
                ]
                producer.produce(settings.topic_dlq, value=message.value(), headers=headers)
            else:
                reply = RecommendationReply(
                    request_id=request["request_id"],
                    user=request["user"],
                    items=[ScoredItem(product="p1", score=1.0)],
                    model=ModelRef(name="recommender", instance="a", version=1),
                )
                producer.produce(settings.topic_replies, value=reply.to_bytes())
            producer.poll(0)
            seen += 1
    finally:
        producer.flush(10)
        consumer.close()


@pytest.mark.stack
def test_a_reply_breaking_the_schema_counts_as_lost_not_answered(settings):
    ensure_topics(settings, partitions=1)
    stop = threading.Event()
    responder = threading.Thread(target=respond, args=(settings, stop, {3}, {5}), daemon=True)
    responder.start()
    try:
        load = timed_load(settings, ["u1", "u2"], rate=40, duration_s=1.0, drain_s=20)
    finally:
        stop.set()
        responder.join(15)
    assert load.sent == 40
    assert (load.answered, load.invalid, load.dead_lettered, load.lost) == (38, 1, 1, 1)
    assert load.summary()["invalid_replies"] == 1
    assert sum(latency is None for latency in load.latency_ms) == 2
