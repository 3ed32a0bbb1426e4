"""The stack tool itself: restart, clean stop, readable failure, and the CLI."""

import json
import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient

from common.kafka import ensure_topics
from common.settings import Settings
from local.stack import MinioServer, Stack, StackError
from local.stack.servers import pid_alive

pytestmark = pytest.mark.stack  # every test here starts servers, some through the CLI


def _descendants(pid):
    result = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def test_a_second_stack_starts_restarts_and_stops_cleanly(tmp_path, monkeypatch):
    stack = Stack(tmp_path / "second")
    info = stack.up()
    try:
        for name, value in info.env().items():
            monkeypatch.setenv(name, value)
        settings = Settings.load()
        ensure_topics(settings)
        kafka_group = stack.kafka.pid

        # A broker restart keeps its data and address: the topics are still there.
        stack.kafka.stop()
        assert not pid_alive(kafka_group)
        stack.kafka.start()
        topics = AdminClient(settings.kafka).list_topics(timeout=10).topics
        assert settings.topic_model_updates in topics
        assert stack.info().kafka_bootstrap == info.kafka_bootstrap
        groups = [stack.kafka.pid, stack.minio.pid]
    finally:
        stack.down()
    for group in groups:
        assert _descendants(group) == [], f"process group {group} left processes behind"


def test_a_busy_port_is_refused_by_name(tmp_path, stack_info):
    port = int(stack_info.minio_endpoint.rsplit(":", 1)[1])
    busy = MinioServer(tmp_path / "busy", port=port)  # the session's MinIO holds this port
    with pytest.raises(StackError, match=rf"^minio cannot start: port {port} is already in use$"):
        busy.start()
    assert not busy.running()


def test_a_server_that_dies_names_itself_and_shows_its_log(tmp_path):
    broken = MinioServer(tmp_path / "broken")
    (broken.workdir / "data").write_text("a file where the data directory should be")
    with pytest.raises(StackError) as excinfo:
        broken.start()
    message = str(excinfo.value)
    assert message.startswith("minio exited during start-up; last lines of")
    assert len(message.splitlines()) > 1  # the log tail follows
    assert not broken.running()


def test_cli_up_status_env_down(tmp_path):
    env = {**os.environ, "RECOMMENDER_STACK_STATE": str(tmp_path / "state.json")}
    cli = [sys.executable, "-m", "local", "stack"]

    def run(*args):
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=180)

    up = run("up", "--workdir", str(tmp_path / "work"))
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    try:
        status = run("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 2
        exported = run("env").stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS={state['kafka_bootstrap']}" in exported
    finally:
        down = run("down")
    assert down.returncode == 0
    for pid in (state["kafka_pid"], state["minio_pid"]):
        assert not pid_alive(pid)
        assert _descendants(pid) == []
    assert not (tmp_path / "work").exists()
    assert run("status").returncode == 1
