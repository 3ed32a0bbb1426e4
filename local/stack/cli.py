"""`recommender-local stack up|down|status|env|provision`: the local Kafka + MinIO for demo and tests."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from common.cli import OrderedGroup
from local.stack import provision
from local.stack.servers import (
    KafkaServer,
    MinioServer,
    ScramUser,
    Stack,
    StackError,
    pid_alive,
    port_open,
    read_state,
    stop_process_group,
    write_state,
)
from local.stack.tls import Certificates


def state_path() -> Path:
    default = provision.cache_dir() / "stack.json"
    return Path(os.environ.get("RECOMMENDER_STACK_STATE", default))


command = OrderedGroup(
    "stack",
    short_help="run the real local Kafka + MinIO as processes",
    help="Provision (first run only), start, inspect and stop a local Apache Kafka (KRaft) and MinIO. "
    "State, including generated credentials, is kept in $RECOMMENDER_STACK_STATE (default "
    "~/.cache/streaming-recommender/stack.json).",
)


@command.command("provision", short_help="fetch Kafka jars and build MinIO into the cache, start nothing")
def provision_command() -> int:
    provision.provision_all()
    print(f"Kafka jars: {provision.kafka_libs()}\nMinIO: {provision.minio_binary()}")
    return 0


@command.command("up", short_help="start Kafka and MinIO and wait until both are ready")
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="data directory (default: a new temporary directory)"
)
@click.option(
    "--secure",
    is_flag=True,
    help="Kafka over SASL_SSL (SCRAM-SHA-512) and MinIO over HTTPS, with a CA generated for this run",
)
def up_command(workdir: Path | None, secure: bool) -> int:
    existing = read_state(state_path())
    if existing is not None and pid_alive(existing.kafka_pid) and pid_alive(existing.minio_pid):
        print(
            f"the stack is already up (workdir {existing.workdir}); `recommender-local stack down` stops it"
        )
        return 0
    provision.provision_all()
    stack = Stack(workdir or Path(tempfile.mkdtemp(prefix="recommender-stack-")), secure=secure)
    try:
        info = stack.up()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_state(info, state_path())
    print(f"Kafka  ready at {info.kafka_bootstrap}\nMinIO  ready at {stack.minio.url}")
    print('Point the components at it with: eval "$(recommender-local stack env)"')
    return 0


@command.command("status", short_help="show whether each server is running and ready")
def status_command() -> int:
    info = read_state(state_path())
    if info is None:
        print("the stack is not up")
        return 1
    tls, user = None, None
    if info.ca_file and info.kafka_sasl_username and info.kafka_sasl_password:
        tls = Certificates.in_directory(Path(info.ca_file).parent)
        user = ScramUser(info.kafka_sasl_username, info.kafka_sasl_password)
    kafka_port, minio_port = (int(a.rsplit(":", 1)[1]) for a in (info.kafka_bootstrap, info.minio_endpoint))
    kafka = KafkaServer(Path(info.workdir) / "kafka", port=kafka_port, tls=tls, user=user)
    minio = MinioServer(Path(info.workdir) / "minio", port=minio_port, tls=tls)
    healthy = True
    for name, pid, address, ready in (
        ("kafka", info.kafka_pid, info.kafka_bootstrap, kafka.ready),
        ("minio", info.minio_pid, minio.url, minio.ready),
    ):
        alive = pid_alive(pid)
        ok = alive and ready()
        healthy &= ok
        state = "healthy" if ok else ("running, not ready" if alive else "not running")
        print(f"{name:6} {state:20} {address}  pid {pid}")
    print(f"workdir {info.workdir}")
    return 0 if healthy else 1


@command.command("env", short_help="print `export` lines that point the components at the stack")
def env_command() -> int:
    info = read_state(state_path())
    if info is None:
        print("the stack is not up; run `recommender-local stack up`", file=sys.stderr)
        return 1
    for name, value in info.env().items():
        print(f"export {name}={value}")
    return 0


@command.command("down", short_help="stop both servers and delete their data")
def down_command() -> int:
    info = read_state(state_path())
    if info is None:
        print("the stack is not up")
        return 0
    for pid in (info.minio_pid, info.kafka_pid):
        stop_process_group(pid)
    for address in (info.kafka_bootstrap, info.minio_endpoint):
        if port_open(int(address.rsplit(":", 1)[1])):
            print(f"warning: something still listens on {address}", file=sys.stderr)
    shutil.rmtree(info.workdir, ignore_errors=True)
    state_path().unlink(missing_ok=True)
    print("the stack is down")
    return 0
