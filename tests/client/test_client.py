"""The client on the real Kafka + MinIO: reply matching, duplicates, DLQ, users, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from client.core import ClientError, LoadReport, ReplyCollector, snapshot_users
from common.kafka import ensure_topics, make_producer
from common.schemas import (
    DeadLetterHeaders,
    ModelRef,
    RecommendationReply,
    ScoredItem,
    SnapshotPointer,
)
from common.storage import CURRENT_SNAPSHOT, ObjectStore
from tests.waiting import wait_until


def test_load_report_summary_and_percentiles():
    report = LoadReport(sent=4, answered=3, duplicates=2, dlq=1, unanswered=["x"], latencies_ms=[10, 20, 30])
    report.models["a/v1"] = 2
    report.models["b/v2"] = 1
    report.dlq_reasons["invalid-request: k"] = 1
    assert report.percentiles()["p50"] == pytest.approx(20)
    text = report.summary()
    assert "sent 4  answered 3  duplicates 2  dlq 1  unanswered 1" in text
    assert "a/v1: 2, b/v2: 1" in text and "1 x invalid-request: k" in text
    assert LoadReport().percentiles() == {"p50": None, "p95": None, "p99": None}


@pytest.mark.stack
def test_collector_matches_replies_counts_duplicates_and_reads_dead_letters(settings):
    ensure_topics(settings)
    producer = make_producer(settings)
    # Written before the collector starts: it must begin at the current end, not re-read these.
    old = RecommendationReply(
        request_id="old", user="u", items=[], model=ModelRef(name="recommender", instance="a", version=1)
    )
    producer.produce(settings.topic_replies, key=b"old", value=old.to_bytes())
    assert producer.flush(10) == 0
    collector = ReplyCollector(settings)
    collector.start()
    try:
        reply = RecommendationReply(
            request_id="r1",
            user=7,
            items=[ScoredItem(product="p1", score=1.5)],
            model=ModelRef(name="recommender", instance="b", version=2),
        )
        for _ in range(3):  # at-least-once: the same reply may arrive more than once
            producer.produce(settings.topic_replies, key=b"r1", value=reply.to_bytes())
        producer.produce(
            settings.topic_dlq,
            key=b"u",
            value=json.dumps({"request_id": "r2", "user": "u", "k": 1000}).encode(),
            headers=[
                (DeadLetterHeaders.ERROR, b"k: Input should be less than or equal to 100"),
                (DeadLetterHeaders.ERROR_KIND, b"invalid-request"),
            ],
        )
        producer.produce(settings.topic_dlq, key=b"u", value=b"not json")  # no id: ignored
        assert producer.flush(10) == 0
        answer = collector.wait_for("r1", 20)
        assert answer is not None and answer.reply == reply
        assert collector.wait_for("r2", 20) is None  # settled by its dead letter, without a reply
        assert collector.dead_letters == {
            "r2": "invalid-request: k: Input should be less than or equal to 100"
        }
        assert collector.settled(["r1", "r2"]) and not collector.settled(["r1", "r3"])
        # A barrier, not a pause: a sentinel written after everything else into every partition.
        # Once all are read, each partition has been read past the copies of r1 (and past "old",
        # had the collector started at the beginning), so no further copy can still arrive.
        partitions = producer.list_topics(settings.topic_replies, timeout=10).topics[settings.topic_replies]
        sentinels = [f"sentinel-{p}" for p in partitions.partitions]
        for partition, request_id in zip(partitions.partitions, sentinels, strict=True):
            sentinel = RecommendationReply(request_id=request_id, user="u", items=[], model=old.model)
            producer.produce(settings.topic_replies, value=sentinel.to_bytes(), partition=partition)
        assert producer.flush(10) == 0
        wait_until(lambda: collector.settled(sentinels), 20, "the sentinel replies")
        assert collector.duplicates["r1"] == 2 and "old" not in collector.answers
    finally:
        collector.close()


@pytest.mark.stack
def test_snapshot_users_reads_the_current_snapshot(settings):
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    with pytest.raises(ClientError, match="no current snapshot"):
        snapshot_users(settings)
    frame = pd.DataFrame(
        {"user": ["u2", "u1", "u2", "42"], "product": ["p"] * 4, "quantity": [1] * 4, "timestamp": [0] * 4}
    )
    path = "data/snapshots/s1/purchases.parquet"
    store.put_bytes(path, frame.to_parquet(index=False))
    store.put_model(
        CURRENT_SNAPSHOT,
        SnapshotPointer(snapshot_id="s1", path=path, rows=4, users=3, products=1, created_at=0),
    )
    assert snapshot_users(settings) == ["42", "u1", "u2"]


@pytest.mark.stack
def test_cli_exits_non_zero_when_requests_go_unanswered(settings, stack_env):
    ensure_topics(settings)
    env = stack_env | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    one = subprocess.run(
        [sys.executable, "-m", "recommender", "client", "recommend", "--user", "u1", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert one.returncode == 1 and "no reply within 2s" in one.stderr
    bad_k = subprocess.run(
        [sys.executable, "-m", "recommender", "client", "recommend", "--user", "u1", "--k", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad_k.returncode == 2
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    frame = pd.DataFrame({"user": ["u1"], "product": ["p"], "quantity": [1], "timestamp": [0]})
    store.put_bytes("data/snapshots/s/purchases.parquet", frame.to_parquet(index=False))
    store.put_model(
        CURRENT_SNAPSHOT,
        SnapshotPointer(
            snapshot_id="s",
            path="data/snapshots/s/purchases.parquet",
            rows=1,
            users=1,
            products=1,
            created_at=0,
        ),
    )
    load = subprocess.run(
        [
            sys.executable,
            "-m",
            "recommender",
            "client",
            "load",
            "--rate",
            "20",
            "--duration",
            "1",
            "--drain",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert load.returncode == 1, load.stderr[-1000:]
    assert "answered 0" in load.stdout and "unanswered" in load.stdout
    sent = int(load.stdout.split("sent ")[1].split()[0])
    assert 10 <= sent <= 30
