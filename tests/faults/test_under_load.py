"""Faults on the real stack while requests flow: a broker restart, a serving instance killed, and the
model server killed with SIGKILL while a newer model is announced.

Each test is bounded (about 200 requests/s for 6-8 s, short serving deadlines) and shares one
trained world. The plain SIGKILL-mid-load test lives in tests/modelserver/test_end_to_end.py;
the one here checks what it does not: the restarted server resumes at the committed offsets
(nothing already answered is answered again) and recovers a model announced while it was down.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import TopicPartition

from client.core import run_load, snapshot_users
from common.kafka import make_consumer
from common.settings import Settings
from tests.serving_world import answer_sentinels, publish_update
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def _ready(server) -> None:
    wait_until(lambda: (server.get_json("/readyz") or (0,))[0] == 200, 60, "/readyz 200")


def test_a_broker_restart_during_load_loses_no_request(world, local_stack, start_modelserver):
    publish_update(world.update("a"))
    server = start_modelserver()
    _ready(server)
    settings = Settings.load()
    users = snapshot_users(settings)
    restarted = threading.Event()

    def restart_broker() -> None:
        try:
            local_stack.kafka.stop()  # same ports and data: a rolling restart of a one-node cluster
        finally:
            local_stack.kafka.start()
            restarted.set()

    fault = threading.Timer(2.0, restart_broker)
    fault.start()
    try:
        report = run_load(settings, users, duration_s=8, rate=200, k=5, drain_s=120, seed=11)
    finally:
        fault.join()
        if not local_stack.kafka.running():  # other tests share the broker: never leave it down
            local_stack.kafka.start()
    print(f"\nbroker restart during load:\n{report.summary()}")
    assert restarted.is_set()
    assert report.sent > 1000
    assert report.unanswered == [] and report.dlq == 0
    assert report.answered == report.sent


def test_a_killed_serving_instance_delays_or_dead_letters_every_request_none_silently(
    world, start_modelserver
):
    publish_update(world.update("a"))
    deadline_s = 4.0
    server = start_modelserver(MODELSERVER_SERVING_DEADLINE_S=str(deadline_s), MODELSERVER_CALL_TIMEOUT_S="1")
    _ready(server)
    settings = Settings.load()
    users = snapshot_users(settings)
    instance = world.instances["a"]
    killed_at: list[float] = []

    def kill_and_restart() -> None:
        # Once the load is being answered (not after a guessed delay), so some are served first.
        wait_until(lambda: _replies_counted(server) >= 100, 60, "the load being answered")
        killed_at.append(time.monotonic())
        instance.server.kill()  # SIGKILL, as an OOM kill or a node loss would
        instance.start_server()  # back after TensorFlow's import: longer than the deadline

    fault = threading.Thread(target=kill_and_restart, daemon=True)
    fault.start()
    try:
        report = run_load(settings, users, duration_s=6, rate=200, k=5, drain_s=120, seed=12)
        fault.join()
        instance.wait_available(world.versions["a"])
    finally:
        fault.join()
        if not instance.server.running():
            instance.start_server()
            instance.wait_available(world.versions["a"])
    print(f"\nserving instance killed during load:\n{report.summary()}")
    assert killed_at and report.sent > 800
    # Nothing is lost silently: every request is answered or dead-lettered with the reason.
    assert len(report.unanswered) == report.dlq
    assert report.answered + report.dlq == report.sent
    assert report.answered > 0  # those served before the kill
    for reason in report.dlq_reasons:
        assert reason.startswith("serving-failed: "), reason
    # Once the instance is back, the same server answers again without being touched.
    after = run_load(settings, users, duration_s=2, rate=100, k=5, drain_s=60, seed=13)
    assert after.unanswered == [] and after.answered == after.sent > 100


def _replies_counted(server) -> int:
    answer = server.get_json("/state")
    return answer[1]["counts"]["replies"] if answer else 0


def _group_offsets(settings: Settings, group: str, topic: str) -> tuple[list[int], list[int]]:
    """(committed, end) offsets of both partitions of `topic` for `group`."""
    consumer = make_consumer(settings, group)
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        committed = [tp.offset for tp in consumer.committed(partitions, timeout=10)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        return committed, ends
    finally:
        consumer.close()


def _replies_end(settings: Settings) -> int:
    consumer = make_consumer(settings, "replies-watermarks")
    try:
        metadata = consumer.list_topics(settings.topic_replies, timeout=10).topics[settings.topic_replies]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(settings.topic_replies, p), timeout=10)[1]
            for p in metadata.partitions
        )
    finally:
        consumer.close()


def test_a_sigkilled_model_server_resumes_at_committed_offsets_and_recovers_the_live_model(
    world, topics_env, start_modelserver
):
    publish_update(world.update("a"))
    server = start_modelserver()
    _ready(server)
    settings = Settings.load()
    users = snapshot_users(settings)
    first = run_load(settings, users, duration_s=3, rate=150, k=5, drain_s=60, seed=14)
    assert first.unanswered == [] and set(first.models) == {f"a/v{world.versions['a']}"}
    group = topics_env["MODELSERVER_GROUP_ID"]
    # Wait until every answered request's offset is committed, then crash.
    wait_until(
        lambda: (lambda c, e: c == e and sum(e) == first.sent)(
            *_group_offsets(settings, group, settings.topic_requests)
        ),
        30,
        "the answered requests' offsets committed",
    )
    server.kill()
    # A newer model is announced while no model server runs: only model-updates knows about it.
    publish_update(world.update("b"))
    replies_before = _replies_end(settings)
    server.start()
    _ready(server)
    state = server.get_json("/state")[1]
    assert state["model"]["instance"] == "b" and state["model"]["version"] == world.versions["b"]

    second = run_load(settings, users, duration_s=3, rate=150, k=5, drain_s=60, seed=15)
    assert second.unanswered == [] and second.duplicates == 0
    assert set(second.models) == {f"b/v{world.versions['b']}"}
    # Resumed at the committed offsets: the only new replies are the second load's (and, sent after
    # it as a barrier, the sentinels').
    sentinels = answer_sentinels(settings, users[0])
    assert _replies_end(settings) - replies_before == second.sent + len(sentinels)
