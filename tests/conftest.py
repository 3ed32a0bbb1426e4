"""Session fixtures: one real local stack (Kafka + MinIO processes) shared by all tests.

Each test gets its own bucket and topic names (`stack_env`), so tests never see each
other's data while paying the stack's start-up only once.

`pytest -m "not stack"` runs the pure tests and starts no server. That cannot go stale: every
fixture that starts a server process requests `starts_servers`, and a test depending on it, however
indirectly, is given the `stack` marker at collection. A test that starts a server itself carries
the marker explicitly; one that forgets fails loudly at the first server it starts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from common.settings import Settings
from local.stack import Stack, StackInfo
from local.stack.servers import ManagedServer

STARTS_SERVERS = "starts_servers"


@pytest.fixture(scope="session")
def starts_servers() -> None:
    """Request this from any fixture that starts a server process (Kafka, MinIO, a serving
    instance, a model server, containers): every test using that fixture becomes a `stack` test."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STARTS_SERVERS in getattr(item, "fixturenames", ()) and item.get_closest_marker("stack") is None:
            item.add_marker(pytest.mark.stack)


@contextmanager
def _servers_refused(item: pytest.Item) -> Iterator[None]:
    """While an unmarked test sets up (its module and session fixtures too) and runs, starting a
    server fails and names the fix."""
    if item.get_closest_marker("stack") is not None:
        yield
        return

    def refuse(server: ManagedServer) -> None:
        raise AssertionError(
            f"{item.nodeid} starts {server.name} but has no `stack` marker: mark it @pytest.mark.stack,"
            f" or start servers through a fixture that requests `{STARTS_SERVERS}`"
        )

    original = ManagedServer.start
    ManagedServer.start = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        ManagedServer.start = original  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _servers_refused(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _servers_refused(item):
        return (yield)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory, starts_servers: None) -> Iterator[Stack]:
    """The running stack, for tests that need to stop, kill or restart a server."""
    stack = Stack(tmp_path_factory.mktemp("stack"))
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack_info(local_stack: Stack) -> StackInfo:
    """Bootstrap address, MinIO endpoint and credentials of the session's stack."""
    return local_stack.info()


@pytest.fixture
def stack_env(stack_info: StackInfo, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing at the stack with a fresh bucket and topics; also set in os.environ.

    Returns the full environment, ready to pass to a subprocess.
    """
    suffix = uuid.uuid4().hex[:8]
    env = stack_info.env() | {
        "MINIO_BUCKET": f"test-{suffix}",
        "TOPIC_REQUESTS": f"recommendation-requests-{suffix}",
        "TOPIC_REPLIES": f"recommendations-{suffix}",
        "TOPIC_DLQ": f"recommendation-requests-dlq-{suffix}",
        "TOPIC_MODEL_UPDATES": f"model-updates-{suffix}",
    }
    for name in [n for n in os.environ if n.startswith("KAFKA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


@pytest.fixture
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings.load()


@pytest.fixture(scope="module")
def serving_instances(tmp_path_factory: pytest.TempPathFactory, starts_servers: None) -> Iterator:
    """Start local serving instances (model sync + TF-Serving stand-in) as processes; all stop at the end.

    `start(instance, env)` takes the environment the processes see (MinIO endpoint, bucket...)
    and returns a running `local.stack.serving.ServingInstance`; its `.env()` gives SERVING_<X>_*.
    """
    from local.stack.serving import ServingInstance

    started: list[ServingInstance] = []

    def start(instance: str, env: dict[str, str], **options) -> ServingInstance:
        workdir = tmp_path_factory.mktemp(f"serving-{instance}")
        serving = ServingInstance(workdir, instance, env=env, **options)
        serving.start()
        started.append(serving)
        return serving

    try:
        yield start
    finally:
        for serving in started:
            serving.stop()
