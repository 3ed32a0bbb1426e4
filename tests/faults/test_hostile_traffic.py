"""Hostile traffic through the real broker and the real model-server process.

Every kind of bad payload we could think of is interleaved with good requests on both partitions
of the request topic. The model server must stay up, put each bad message in the DLQ exactly once
with the right kind, answer each good one exactly once, and after a restart re-process nothing it
had acknowledged. The model-update topic gets the same treatment: bad updates are counted and
ignored, and never switch the live model.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.kafka import make_consumer, make_producer
from common.schemas import DeadLetterHeaders, RecommendationRequest
from common.settings import Settings
from modelserver.processing import DEFAULT_MAX_REQUEST_BYTES
from tests.serving_world import publish_update
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

REFUSED_BY_BROKER = "refused-by-broker"
PRODUCER_LIMIT = 1_000_000  # the model server's producer (common.kafka.PRODUCER_MAX_MESSAGE_BYTES)
BROKER_LIMIT = 1_048_588  # the broker's and the topic's default message.max.bytes


def _request(**fields) -> bytes:
    return json.dumps({"request_id": f"bad-{uuid.uuid4().hex[:6]}", "user": "u1", **fields}).encode()


def _hostile_payloads(rng: random.Random) -> list[tuple[str, bytes | None, str]]:
    """(name, value, expected DLQ kind) for every kind of bad payload."""
    return [
        ("empty", b"", "not-json"),
        ("null value", None, "not-json"),
        ("just under the producer's limit", b"x" * (PRODUCER_LIMIT - 1000), "too-large"),
        ("at the producer's limit", b"x" * PRODUCER_LIMIT, "too-large"),
        ("over the producer's, under the broker's limit", b"x" * (PRODUCER_LIMIT + 40_000), "too-large"),
        ("over the broker's limit", b"x" * (BROKER_LIMIT + 10_000), REFUSED_BY_BROKER),
        ("just over the request limit", b" " * (DEFAULT_MAX_REQUEST_BYTES - 30) + _request(), "too-large"),
        ("invalid UTF-8", b'{"request_id": "r\xff\xfe", "user": "u1"}', "not-json"),
        ("JSON nested 10,000 deep", b"[" * 10_000 + b"]" * 10_000, "not-json"),
        ("huge array", json.dumps(list(range(100_000))).encode(), "too-large"),
        ("wrong types", _request(k="5", exclude_purchased="yes"), "invalid-request"),
        ("NaN", _request()[:-1] + b', "k": NaN}', "not-json"),
        ("Infinity", _request()[:-1] + b', "sent_at": Infinity}', "not-json"),
        ("duplicate keys", _request()[:-1] + b', "user": "u2"}', "invalid-request"),
        ("unknown schema_version", _request(schema_version=2), "invalid-request"),
        ("binary noise", rng.randbytes(4096), "not-json"),
        ("NUL bytes", b"\x00" * 512, "not-json"),
        ("a raw NUL inside a string", b'{"request_id": "r", "user": "u\x00"}', "not-json"),
        ("100 kB request_id", _request(request_id="r" * 100_000), "too-large"),
        ("100k candidate products", _request(products=[f"p{i}" for i in range(100_000)]), "too-large"),
        ("10,001 candidate products", _request(products=[1] * 10_001), "invalid-request"),
        ("top-level array", b"[1, 2, 3]", "invalid-request"),
        ("unknown field", _request(kk=5), "invalid-request"),
        ("user id over 64 bits", _request(user=2**64), "invalid-request"),
        ("user id over 256 characters", _request(user="u" * 300), "invalid-request"),
    ]


@dataclass
class Sent:
    name: str
    expected: str  # a DLQ kind, "reply" or REFUSED_BY_BROKER
    request_id: str | None = None
    partition: int = -1
    offset: int = -1
    error: KafkaError | None = None


def _produce_all(settings: Settings, cases: list[Sent], values: list[bytes | None]) -> None:
    # A producer that lets through what ours never sends, so the broker's own limit is met too.
    producer = make_producer(settings, **{"message.max.bytes": 4_000_000, "enable.idempotence": False})

    def delivered(case: Sent):
        def on_delivery(err, msg) -> None:
            case.error = err
            if err is None:
                case.partition, case.offset = msg.partition(), msg.offset()

        return on_delivery

    for case, value in zip(cases, values, strict=True):
        producer.produce(
            settings.topic_requests,
            key=b"hostile",
            value=value,
            partition=case.partition,
            on_delivery=delivered(case),
        )
        producer.poll(0)
    assert producer.flush(60) == 0


def _read_all(settings: Settings, topic: str, until) -> list:
    """Every message of `topic` from the start, read until `until(messages)` holds."""
    consumer = make_consumer(settings, f"reader-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    messages: list = []
    try:

        def poll() -> bool:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
            return until(messages)

        wait_until(poll, 120, f"the expected messages on {topic}", every=0)
        return messages
    finally:
        consumer.close()


def _ends(settings: Settings, topic: str) -> int:
    consumer = make_consumer(settings, "watermarks")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        )
    finally:
        consumer.close()


def _ready(server) -> None:
    wait_until(lambda: (server.get_json("/readyz") or (0,))[0] == 200, 60, "/readyz 200")


def test_hostile_traffic_is_dead_lettered_once_each_and_good_requests_are_all_answered(
    world, topics_env, start_modelserver
):
    publish_update(world.update("a"))
    server = start_modelserver()
    _ready(server)
    pid = server.pid
    settings = Settings.load()
    users = sorted(world.purchases["user"].unique())[:20]
    rng = random.Random(5)
    cases: list[Sent] = []
    values: list[bytes | None] = []
    for partition in (0, 1):
        for name, value, kind in _hostile_payloads(rng):
            cases.append(Sent(name, kind, partition=partition))
            values.append(value)
            for _ in range(2):  # good requests between the bad ones, on the same partition
                good = RecommendationRequest(request_id=uuid.uuid4().hex, user=rng.choice(users), k=3)
                cases.append(Sent("good", "reply", good.request_id, partition=partition))
                values.append(good.to_bytes())
    assert len({name for name, _, _ in _hostile_payloads(rng)}) >= 15
    _produce_all(settings, cases, values)

    refused = [case for case in cases if case.expected == REFUSED_BY_BROKER]
    assert refused and all(
        case.error and case.error.code() == KafkaError.MSG_SIZE_TOO_LARGE for case in refused
    )
    bad = [case for case in cases if case.expected not in ("reply", REFUSED_BY_BROKER)]
    good = [case for case in cases if case.expected == "reply"]
    assert all(case.error is None and case.offset >= 0 for case in bad + good)

    dead = _read_all(settings, settings.topic_dlq, lambda messages: len(messages) >= len(bad))
    replies = _read_all(
        settings,
        settings.topic_replies,
        lambda messages: {m.key().decode() for m in messages} >= {case.request_id for case in good},
    )

    # Every bad message exactly once, with the right kind; nothing good among the dead letters.
    letters = {}
    for message in dead:
        headers = {name: value.decode() for name, value in message.headers()}
        where = (
            int(headers[DeadLetterHeaders.SOURCE_PARTITION]),
            int(headers[DeadLetterHeaders.SOURCE_OFFSET]),
        )
        assert where not in letters, f"dead-lettered twice: {where}"
        letters[where] = (headers, message)
    assert len(letters) == len(bad) == len(dead)
    for case in bad:
        headers, message = letters[(case.partition, case.offset)]
        assert headers[DeadLetterHeaders.ERROR_KIND] == case.expected, (case.name, headers)
        assert headers[DeadLetterHeaders.ERROR], case.name
        assert len(message.value() or b"") <= DEFAULT_MAX_REQUEST_BYTES
    # The reproduction: the 1 MB message is in the DLQ, truncated, with its size and offset.
    at_limit = next(case for case in bad if case.name == "at the producer's limit")
    headers, message = letters[(at_limit.partition, at_limit.offset)]
    assert headers[DeadLetterHeaders.ORIGINAL_SIZE] == str(PRODUCER_LIMIT)
    assert headers[DeadLetterHeaders.TRUNCATED] == "true"
    assert message.value() == b"x" * DEFAULT_MAX_REQUEST_BYTES
    assert (
        f"over MODELSERVER_MAX_REQUEST_BYTES={DEFAULT_MAX_REQUEST_BYTES}" in headers[DeadLetterHeaders.ERROR]
    )

    # Every good request answered exactly once.
    answered = Counter(m.key().decode() for m in replies)
    assert {case.request_id for case in good} == set(answered)
    assert set(answered.values()) == {1}

    # The same process served throughout.
    assert server.running() and server.pid == pid
    assert server.get("/healthz")[0] == 200

    # A restart re-processes nothing acknowledged: only the new request adds a record.
    dlq_end, replies_end = _ends(settings, settings.topic_dlq), _ends(settings, settings.topic_replies)
    server.stop()
    server.start()
    _ready(server)
    last = RecommendationRequest(request_id=uuid.uuid4().hex, user=users[0], k=3)
    producer = make_producer(settings)
    producer.produce(settings.topic_requests, key=b"u", value=last.to_bytes())
    assert producer.flush(15) == 0
    _read_all(
        settings,
        settings.topic_replies,
        lambda messages: any(m.key() == last.request_id.encode() for m in messages),
    )
    assert _ends(settings, settings.topic_replies) == replies_end + 1
    assert _ends(settings, settings.topic_dlq) == dlq_end


def _metric(server, name: str, **labels: str) -> float:
    text = server.get("/metrics")[1].decode()
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{selector}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_bad_model_updates_are_counted_and_never_switch_the_live_model(world, topics_env, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver(MODELSERVER_SWITCH_CHECK_S="2")
    _ready(server)
    settings = Settings.load()
    good = json.loads(world.update("b").to_bytes())
    bad_updates = [
        b"not json",
        b"\xff\xfe binary",
        json.dumps({"model": "recommender"}).encode(),  # wrong schema
        json.dumps(good | {"instance": "c"}).encode(),  # unknown instance
        json.dumps(good | {"url": "ftp://serving-b"}).encode(),
        json.dumps(good | {"grpc": "no port"}).encode(),
        json.dumps(good | {"metrics": {"hr_at_10": "high"}}).encode(),
        b'{"pad": "' + b"x" * 200_000 + b'"}',  # oversized
    ]
    producer = make_producer(settings)
    for value in bad_updates:
        producer.produce(settings.topic_model_updates, key=b"recommender", value=value)
    assert producer.flush(15) == 0
    wait_until(
        lambda: (
            _metric(server, "recommender_model_updates_rejected_total", reason="invalid") == 7
            and _metric(server, "recommender_model_updates_rejected_total", reason="too-large") == 1
        ),
        30,
        "the bad updates counted",
    )
    # A well-formed update whose instance does not answer: counted, and the route stays on `a`.
    unreachable = world.update("b").model_copy(update={"url": "http://127.0.0.1:9", "grpc": "127.0.0.1:9"})
    publish_update(unreachable)
    wait_until(
        lambda: _metric(server, "recommender_model_updates_rejected_total", reason="not-available") == 1,
        30,
        "the unreachable instance counted",
    )
    state = server.get_json("/state")[1]
    assert (state["model"]["instance"], state["model"]["version"]) == ("a", world.versions["a"])
    assert state["switches"] == 0
    # The watcher is alive: a good update still switches.
    publish_update(world.update("b"))
    wait_until(lambda: server.get_json("/state")[1]["model"]["instance"] == "b", 60, "the switch to b")
    assert server.running()


def test_records_kafka_refuses_are_replaced_by_smaller_dead_letters(world, topics_env, start_modelserver):
    """Replies and dead letters too large for their topics: the request is dead-lettered instead,
    and a dead letter is kept as headers alone; the loop goes on and commits."""
    publish_update(world.update("a"))
    settings = Settings.load()
    suffix = uuid.uuid4().hex[:6]
    replies_topic, dlq_topic = f"small-replies-{suffix}", f"small-dlq-{suffix}"
    admin = AdminClient(settings.kafka)
    futures = admin.create_topics(
        [
            NewTopic(replies_topic, 1, 1, config={"max.message.bytes": "300"}),
            NewTopic(dlq_topic, 1, 1, config={"max.message.bytes": "1500"}),
        ]
    )
    for future in futures.values():
        future.result(30)
    group = f"modelserver-small-{suffix}"
    server = start_modelserver(TOPIC_REPLIES=replies_topic, TOPIC_DLQ=dlq_topic, MODELSERVER_GROUP_ID=group)
    _ready(server)
    settings = Settings.load(topic_dlq=dlq_topic)
    users = sorted(world.purchases["user"].unique())[:3]
    requests = [
        RecommendationRequest(request_id=uuid.uuid4().hex, user=user, k=10).to_bytes() for user in users
    ]
    producer = make_producer(settings)
    # One at a time, so that each record is its own batch on the way out.
    for count, value in enumerate([*requests, b"#" * 5000], start=1):
        producer.produce(settings.topic_requests, key=b"u", value=value)
        assert producer.flush(15) == 0
        dead = _read_all(settings, dlq_topic, lambda messages, count=count: len(messages) >= count)
    assert _ends(settings, replies_topic) == 0
    letters = [({k: v.decode() for k, v in m.headers()}, m.value()) for m in dead]
    for (headers, value), original in zip(letters[:3], requests, strict=True):
        assert headers[DeadLetterHeaders.ERROR_KIND] == "reply-undeliverable"
        assert "MSG_SIZE_TOO_LARGE" in headers[DeadLetterHeaders.ERROR]
        assert value == original
    headers, value = letters[3]
    assert headers[DeadLetterHeaders.ERROR_KIND] == "not-json"
    assert "value dropped: " in headers[DeadLetterHeaders.ERROR]
    assert (value, headers[DeadLetterHeaders.TRUNCATED], headers[DeadLetterHeaders.ORIGINAL_SIZE]) == (
        b"",
        "true",
        "5000",
    )
    assert server.running()
    consumer = make_consumer(settings, group)
    try:
        wait_until(
            lambda: (
                sum(
                    max(tp.offset, 0)
                    for tp in consumer.committed(
                        [TopicPartition(settings.topic_requests, p) for p in (0, 1)], 10
                    )
                )
                == 4
            ),
            30,
            "the four requests committed",
        )
    finally:
        consumer.close()
