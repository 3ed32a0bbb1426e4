"""The model server on the real stack: Kafka, MinIO, two local serving instances, trainer exports.

Every "Done when" item of the issue: replies with k items from the live model (purchased items
excluded), a swap under load without loss, SIGKILL and restart without loss, 1,000 malformed
messages in the DLQ, /metrics and /readyz; plus REST routing, serving failures and SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from confluent_kafka import ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from client.core import ReplyCollector, run_load, send, snapshot_users
from common.kafka import make_consumer, make_producer
from common.schemas import DeadLetterHeaders, RecommendationRequest
from common.settings import Settings
from tests.serving_world import publish_update
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def purchased(world, user: str) -> set[str]:
    rows = world.purchases[world.purchases["user"].astype(str) == user]
    return set(rows["product"].astype(str))


def test_readyz_is_503_until_a_model_is_known_then_the_client_gets_k_unpurchased_items(
    world, start_modelserver
):
    server = start_modelserver()
    assert server.get_json("/readyz")[0] == 503
    assert server.get_json("/state")[1]["ready"] is False
    # A request sent before any model is known is held, not dropped or dead-lettered.
    user = str(world.purchases["user"].iloc[0])
    settings = Settings.load()
    collector = ReplyCollector(settings)
    collector.start()
    try:
        early = RecommendationRequest(request_id="early", user=user, k=5)
        producer = make_producer(settings)
        send(producer, settings, early)
        assert producer.flush(10) == 0
        # The server holds the partitions (its group owns them) while the request waits there...
        wait_until(
            lambda: _group_owns(settings, os.environ["MODELSERVER_GROUP_ID"], settings.topic_requests),
            60,
            "the model server's group owning the requests partitions",
        )
        state = server.get_json("/state")[1]
        assert state["ready"] is False and state["counts"]["dlq"] == 0 and state["counts"]["replies"] == 0
        assert collector.answers == {} and collector.dead_letters == {}

        publish_update(world.update("a"))
        wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
        # ...and answers it once a model is known: neither dropped nor dead-lettered meanwhile (a
        # request dropped or dead-lettered would be behind the committed offset, never answered).
        answer = collector.wait_for("early", 30)
        assert answer is not None and len(answer.reply.items) == 5
        assert answer.reply.model.instance == "a" and "early" not in collector.dead_letters
        assert server.get_json("/state")[1]["counts"]["dlq"] == 0
    finally:
        collector.close()

    result = subprocess.run(
        [sys.executable, "-m", "recommender", "client", "recommend", "--user", user, "--k", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert f"instance a v{world.versions['a']}" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == [str(i) for i in range(1, 8)]
    products = {row[1] for row in rows}
    assert len(products) == 7 and not products & purchased(world, user)
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True)

    metrics = server.get("/metrics")
    assert metrics[0] == 200
    families = {family.name: family for family in text_string_to_metric_families(metrics[1].decode())}
    replies = sum(s.value for s in families["recommender_replies"].samples if s.name.endswith("_total"))
    assert replies >= 2
    assert "recommender_batch_size" in families and "recommender_request_latency_seconds" in families
    state = server.get_json("/state")[1]
    assert state["model"]["instance"] == "a" and state["counts"]["replies"] >= 2
    assert state["recent"] and state["latency_ms"]["p50"] is not None

    # The synchronous endpoint goes through the same routing; bad input is refused with the reason.
    sync = httpx.post(f"{server.url}/recommend", json={"user": user, "k": 3}, timeout=30)
    assert sync.status_code == 200 and len(sync.json()["items"]) == 3
    bad = httpx.post(f"{server.url}/recommend", json={"user": user, "k": 500}, timeout=30)
    assert bad.status_code == 422 and "k:" in bad.json()["error"]


def test_a_model_swap_under_load_loses_nothing_and_both_versions_answer(world, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver()
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    users = snapshot_users(settings)

    def swap_once_a_answers() -> None:
        # Mid-load by condition, not by a guessed delay: once `a` has answered a good share.
        wait_until(lambda: _counts(server).get("replies", 0) >= 500, 60, "instance a answering the load")
        publish_update(world.update("b"))

    swap = threading.Thread(target=swap_once_a_answers, daemon=True)
    swap.start()
    report = run_load(settings, users, duration_s=12, rate=250, k=5, drain_s=60, seed=1)
    swap.join()
    print(f"\nswap under load:\n{report.summary()}")
    assert report.sent > 1000
    assert report.unanswered == [] and report.dlq == 0
    assert report.answered == report.sent
    assert set(report.models) == {f"a/v{world.versions['a']}", f"b/v{world.versions['b']}"}
    state = server.get_json("/state")[1]
    assert state["model"]["instance"] == "b" and state["switches"] == 1


def test_sigkill_mid_load_and_restart_loses_no_request(world, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver()
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    users = snapshot_users(settings)
    group = os.environ["MODELSERVER_GROUP_ID"]
    serving = world.instances["a"].server
    at_kill: dict = {}
    errors: list[BaseException] = []

    def crash_and_restart() -> None:
        try:
            wait_until(lambda: _counts(server).get("replies", 0) >= 200, 60, "the load being answered")
            # The serving instance is frozen (SIGSTOP), so the batch the server takes next cannot be
            # answered: it is provably in flight, consumed and neither replied to nor committed.
            os.killpg(serving.pid, signal.SIGSTOP)
            try:
                at_kill["counts"] = wait_until(
                    lambda: (c := _counts(server)) and c["requests"] > c["replies"] + c["dlq"] and c,
                    10,  # well inside the serving deadline (20 s), after which it would be dead-lettered
                    "a batch consumed but not answered",
                    every=0.05,
                )
                server.kill()  # SIGKILL to the whole process group, mid-batch
            finally:
                os.killpg(serving.pid, signal.SIGCONT)
            at_kill["committed"] = _committed(settings, group, settings.topic_requests)
            server.start()
        except BaseException as exc:
            errors.append(exc)
            raise

    crash = threading.Thread(target=crash_and_restart, daemon=True)
    crash.start()
    report = run_load(settings, users, duration_s=10, rate=200, k=5, drain_s=120, seed=2)
    crash.join(timeout=180)
    assert not errors and not crash.is_alive(), errors
    # The kill landed with a batch in flight: requests consumed beyond every committed offset.
    assert sum(at_kill["committed"]) <= at_kill["counts"]["replies"] + at_kill["counts"]["dlq"]
    assert sum(at_kill["committed"]) < at_kill["counts"]["requests"]
    assert report.sent > 1000
    assert report.unanswered == [] and report.dlq == 0
    # Duplicates are allowed (re-read after the crash) and counted, never double-counted as answers.
    assert report.answered == report.sent
    print(f"\nSIGKILL mid-load (counts at the kill {at_kill}) and restart:\n{report.summary()}")


def _counts(server) -> dict[str, int]:
    """The model server's /state counts; empty while it does not answer."""
    answer = server.get_json("/state")
    return answer[1]["counts"] if answer else {}


def _committed(settings: Settings, group: str, topic: str) -> list[int]:
    """The group's committed offset of each partition of `topic` (0 where none is committed)."""
    consumer = make_consumer(settings, group)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return [max(tp.offset, 0) for tp in committed]
    finally:
        consumer.close()


def _group_owns(settings: Settings, group: str, topic: str) -> bool:
    """Whether the members of `group` have every partition of `topic` assigned (a stable group)."""
    admin = AdminClient(settings.kafka)
    partitions = set(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    owned = {
        tp.partition
        for member in description.members
        for tp in member.assignment.topic_partitions
        if tp.topic == topic
    }
    return description.state == ConsumerGroupState.STABLE and owned == partitions


def test_a_thousand_malformed_messages_go_to_the_dlq_and_good_requests_are_answered(world, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver()
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    users = snapshot_users(settings)
    collector = ReplyCollector(settings)
    collector.start()
    dlq = make_consumer(settings, f"dlq-reader-{uuid.uuid4().hex[:6]}")
    dlq.subscribe([settings.topic_dlq])
    producer = make_producer(settings)
    bad_values = []
    good_ids = []
    try:
        for i in range(1000):
            match i % 5:
                case 0:
                    value = f"not json {i}".encode()
                case 1:
                    value = json.dumps({"request_id": f"bad-{i}", "user": "u", "k": 1000}).encode()
                case 2:
                    value = json.dumps({"request_id": f"bad-{i}", "user": "u", "kk": 5}).encode()
                case 3:
                    value = json.dumps({"request_id": f"bad-{i}", "user": ["u"]}).encode()
                case _:
                    value = b"\x00\xff" + bytes([i % 256])
            bad_values.append(value)
            producer.produce(settings.topic_requests, key=f"bad-{i}".encode(), value=value)
            if i % 5 == 0:
                request = RecommendationRequest(request_id=f"good-{i}", user=users[i % len(users)], k=3)
                good_ids.append(request.request_id)
                send(producer, settings, request)
        assert producer.flush(30) == 0
        dead = []
        deadline = time.monotonic() + 90
        while len(dead) < 1000 and time.monotonic() < deadline:
            message = dlq.poll(0.5)
            if message is not None and message.error() is None:
                dead.append(message)
        assert len(dead) == 1000
        assert sorted(m.value() for m in dead) == sorted(bad_values)  # the original bytes
        for message in dead:
            headers = dict(message.headers())
            assert headers[DeadLetterHeaders.ERROR_KIND] in (b"not-json", b"invalid-request")
            assert headers[DeadLetterHeaders.ERROR]
            assert headers[DeadLetterHeaders.SOURCE_TOPIC] == settings.topic_requests.encode()
        reasons = b" ".join(dict(m.headers())[DeadLetterHeaders.ERROR] for m in dead)
        assert b"k: Input should be less than or equal to 100" in reasons
        assert b"kk: Extra inputs are not permitted" in reasons
        wait_until(
            lambda: all(rid in collector.answers for rid in good_ids), 60, "all good requests answered"
        )
    finally:
        collector.close()
        dlq.close()
    state = server.get_json("/state")[1]
    assert state["counts"]["dlq"] == 1000 and state["counts"]["replies"] >= len(good_ids)


def test_rest_routing_and_serving_failures_go_to_the_dlq_with_the_reason(world, start_modelserver):
    publish_update(world.update("b"))
    server = start_modelserver(MODELSERVER_PROTOCOL="rest", MODELSERVER_SERVING_DEADLINE_S="3")
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    counts = world.purchases.groupby("user")["product"].nunique()
    user = str(counts[counts >= 3].index[0])
    collector = ReplyCollector(settings)
    collector.start()
    producer = make_producer(settings)
    try:
        send(producer, settings, RecommendationRequest(request_id="rest-1", user=user, k=4))
        send(
            producer,
            settings,
            RecommendationRequest(
                request_id="rest-2", user=user, k=2, products=["nope", *sorted(purchased(world, user))]
            ),
        )
        assert producer.flush(10) == 0
        first = collector.wait_for("rest-1", 30)
        assert first is not None and first.reply.model.instance == "b" and len(first.reply.items) == 4
        ranked = collector.wait_for("rest-2", 30)
        assert ranked is not None and len(ranked.reply.items) == 2
        assert {item.product for item in ranked.reply.items} <= purchased(world, user)

        # The live instance goes down: the call is retried until the deadline, then dead-lettered.
        world.instances["b"].server.stop()
        try:
            wait_until(lambda: server.get_json("/readyz")[0] == 503, 30, "/readyz 503 with the instance down")
            send(producer, settings, RecommendationRequest(request_id="down-1", user=user, k=4))
            assert producer.flush(10) == 0
            wait_until(lambda: "down-1" in collector.dead_letters, 60, "the request in the DLQ")
            assert collector.dead_letters["down-1"].startswith("serving-failed: recommend on instance b")
            assert "down-1" not in collector.answers
        finally:
            world.instances["b"].start_server()
            world.instances["b"].wait_available(world.versions["b"])
    finally:
        collector.close()


def test_sigterm_finishes_commits_and_exits_zero(world, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver()
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    users = snapshot_users(settings)
    report = run_load(settings, users, duration_s=3, rate=100, k=2, drain_s=30, seed=3)
    assert report.unanswered == []
    process = server._process
    os.killpg(server.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    server.pid, server._process = None, None
    # Every request's offset was committed: a new member of the group has nothing to re-read.
    consumer = make_consumer(settings, os.environ["MODELSERVER_GROUP_ID"])
    try:
        partitions = [TopicPartition(settings.topic_requests, p) for p in (0, 1)]
        committed = consumer.committed(partitions, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        assert [tp.offset for tp in committed] == ends and sum(ends) == report.sent
    finally:
        consumer.close()
