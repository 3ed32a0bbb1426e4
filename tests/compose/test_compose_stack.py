"""The compose stack end to end on podman: up, the client's load across a model swap, down.

docker-compose.yml runs as a user runs it (healthchecks, depends_on conditions, volumes, the init
job, the pipeline service, the client profile) through the Compose v2 binary against
`podman system service`. The only test-specific parts are tests/compose/local-images.yml (images
built here for Kafka, MinIO and the TF-Serving stand-in) and the harness that runs podman's
healthchecks (tests/compose/podman.py). Without podman/buildah the test skips with the reason;
docker-compose.yml is also checked statically on every run (test_compose_config.py).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.conftest import compose_command, compose_environment, run_compose
from tests.compose.podman import HealthcheckDriver, leftovers, local_images, podman_service
from tests.waiting import wait_until

OVERRIDE = Path(__file__).with_name("local-images.yml")
UP_TIMEOUT_S = 15 * 60  # up waits for the init job and the healthchecks the pipeline depends on
READY_DEADLINE_S = 10 * 60  # the data publisher and the first pipeline run (small preset)
LOAD_SECONDS = 240  # the pipeline runs every minute: a swap falls well inside
LOAD_RATE = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stack(
    compose_binary: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[dict]:
    images = local_images(pytestconfig)
    workdir = tmp_path_factory.mktemp("compose")
    env = images | {
        "MINIO_ACCESS_KEY": f"test-{secrets.token_hex(4)}",
        "MINIO_SECRET_KEY": secrets.token_hex(16),
        "DATA_PRESET": "small",
        "PIPELINE_EVERY": "1m",
        "KAFKA_HOST_PORT": str(_free_port()),
        "MINIO_HOST_PORT": str(_free_port()),
        "MINIO_CONSOLE_HOST_PORT": str(_free_port()),
        "MODELSERVER_HOST_PORT": str(_free_port()),
    }
    env_file = workdir / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    project = f"srtest-{secrets.token_hex(3)}"
    with podman_service(workdir) as docker_host, HealthcheckDriver(project) as healthchecks:
        compose_env = {"DOCKER_HOST": docker_host}

        def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
            return run_compose(
                compose_binary, *args, env=compose_env, env_file=env_file, project=project,
                timeout=timeout, overrides=(OVERRIDE,),
            )  # fmt: skip

        def popen(*args: str, log: Path) -> subprocess.Popen[str]:
            command = compose_command(compose_binary, project, env_file, (OVERRIDE,)) + list(args)
            return subprocess.Popen(
                command, env=compose_environment(compose_env), stdout=log.open("w"), stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip

        try:
            up = compose("up", "--detach", timeout=UP_TIMEOUT_S)
            assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-5000:]
            yield {"compose": compose, "popen": popen, "project": project, "workdir": workdir,
                   "healthchecks": healthchecks}  # fmt: skip
        finally:
            logs = compose("logs", "--no-color", "--tail", "60")
            (workdir / "compose.log").write_text(logs.stdout + logs.stderr)
            print(logs.stdout[-20000:])
            down = compose("down", "--volumes", "--remove-orphans")
            print(down.stdout[-2000:], down.stderr[-2000:])
    assert leftovers(project) == {"containers": [], "volumes": [], "networks": []}


def _readyz(stack: dict) -> dict:
    """The model server's /readyz, asked from inside its container (as its healthcheck does)."""
    script = (
        "import json, urllib.request, urllib.error\n"
        "try:\n"
        "    print(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3).read().decode())\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print('{}')\n"
    )
    result = stack["compose"]("exec", "-T", "modelserver", "python", "-c", script, timeout=60)
    try:
        body = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}
    except (IndexError, json.JSONDecodeError):
        return {}
    return body if body.get("ready") else {}


def _replies_by_model(summary: str) -> dict[str, int]:
    line = re.search(r"^replies by model\s+(.*)$", summary, re.MULTILINE)
    assert line, summary
    return {name: int(count) for name, count in re.findall(r"([^\s,]+): (\d+)", line.group(1))}


def test_the_client_is_answered_across_a_model_swap(stack: dict) -> None:
    first = wait_until(lambda: _readyz(stack), READY_DEADLINE_S, "the first model to be live", every=10)

    # --no-deps: the stack is up; `run` would otherwise re-create the dependencies it depends on.
    one = stack["compose"](
        "--profile", "client", "run", "--rm", "--no-deps", "client",
        "client", "recommend", "--user", "1", "--k", "5",
    )  # fmt: skip
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert f"instance {first['instance']}" in one.stdout

    log = stack["workdir"] / "client-load.log"
    load = stack["popen"](
        "--profile", "client", "run", "--rm", "--no-deps", "client",
        "client", "load", "--rate", str(LOAD_RATE), "--duration", str(LOAD_SECONDS),
        log=log,
    )  # fmt: skip
    try:

        def swapped() -> dict:
            live = _readyz(stack)
            return live if live and live["instance"] != first["instance"] else {}

        second = wait_until(swapped, LOAD_SECONDS - 30, "the pipeline to swap in a new model", every=5)
        assert load.wait(timeout=LOAD_SECONDS + 180) == 0, log.read_text()[-5000:]
    finally:
        if load.poll() is None:
            load.kill()
    summary = log.read_text()
    print(summary[-3000:])
    assert second["version"] > first["version"]
    counts = re.search(
        r"sent (\d+)\s+answered (\d+)\s+duplicates \d+\s+dlq (\d+)\s+unanswered (\d+)", summary
    )
    assert counts, summary[-3000:]
    sent, answered, dlq, unanswered = map(int, counts.groups())
    assert sent >= LOAD_RATE * LOAD_SECONDS * 0.9, counts[0]
    assert answered == sent and dlq == 0 and unanswered == 0, counts[0]
    # Replies came from both instances: the swap happened inside the load, and nothing failed.
    models = _replies_by_model(summary)
    assert {name.split("/")[0] for name in models} >= {first["instance"], second["instance"]}, models
    assert stack["healthchecks"].runs > 0
