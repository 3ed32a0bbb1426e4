"""Produce/consume on the real broker, with a consumer group and committed offsets."""

import uuid

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from common.kafka import ensure_topics, make_consumer, make_producer


def _drain(consumer, count, timeout=30.0):
    import time

    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        messages.append(message)
    return messages


def test_topics_are_created_once_with_compaction(settings):
    created = ensure_topics(settings, partitions=3)
    assert sorted(created) == sorted(
        [settings.topic_requests, settings.topic_replies, settings.topic_dlq, settings.topic_model_updates]
    )
    assert ensure_topics(settings) == []
    admin = AdminClient(settings.kafka)
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[settings.topic_requests].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic_model_updates)
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_round_trip_with_group_and_committed_offsets(settings):
    ensure_topics(settings, partitions=1)
    topic = settings.topic_requests
    group = f"roundtrip-{uuid.uuid4().hex[:6]}"
    producer = make_producer(settings)
    for i in range(10):
        producer.produce(topic, key=f"user-{i}".encode(), value=f"message-{i}".encode())
    assert producer.flush(15) == 0

    # The first member reads 4 messages and stores (hence commits) only those offsets.
    first = make_consumer(settings, group)
    try:
        first.subscribe([topic])
        read = _drain(first, 4)
        assert [m.value() for m in read] == [f"message-{i}".encode() for i in range(4)]
        first.store_offsets(message=read[-1])
        first.commit(asynchronous=False)
        committed = first.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 4
    finally:
        first.close()

    # A new member of the same group resumes after the committed offset, not from the start.
    second = make_consumer(settings, group)
    try:
        second.subscribe([topic])
        rest = _drain(second, 6)
        assert [m.value() for m in rest] == [f"message-{i}".encode() for i in range(4, 10)]
        assert rest[0].key() == b"user-4"
    finally:
        second.close()
