"""`recommender-local demo`: the whole system on this machine, a live view, and a model swap under load.

It provisions and starts Kafka + MinIO, publishes generated data, starts both serving
instances (model sync + server) and the model server, runs the pipeline (train, export to
`a`, publish), streams requests with the client while printing throughput, latency and
sample recommendations, and re-runs the pipeline on fresh data every interval, so the
model swaps a -> b -> a ... with no failed request. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from datapublisher.generate import PRESETS
from local.stack.servers import http_get

MISSING_HINTS = {
    "java": "Java 17+ runs Apache Kafka (apt-get install openjdk-17-jre-headless)",
    "mvn": "Maven fetches Kafka from Maven Central on the first run (apt-get install maven)",
    "go": "Go 1.24+ builds MinIO on the first run (https://go.dev/doc/install)",
}


@dataclass(frozen=True)
class DemoArgs:
    """The `recommender-local demo` command line."""

    preset: str
    rate: float
    retrain_every: float
    swaps: int
    workdir: Path | None
    http_port: int


@click.command(
    "demo",
    short_help="run the whole system locally with live figures and a model swap under load",
    help=__doc__.split("\n\n", 1)[1],
)
@click.option(
    "--preset", type=click.Choice(sorted(PRESETS)), default="small", help="data size (default: small)"
)
@click.option("--rate", type=float, default=100.0, help="requests per second (default: 100)")
@click.option(
    "--retrain-every", type=float, default=60.0, metavar="SECONDS",
    help="publish fresh data and re-run the pipeline this long after the last run ended (default: 60)",
)  # fmt: skip
@click.option(
    "--swaps", type=int, default=0, help="stop by itself after this many model swaps (default: 0, never)"
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="where logs and data go (default: a temporary directory)",
)
@click.option("--http-port", type=int, default=8080, help="model server / status page port (8080)")
def command(**options: Any) -> int:
    return run(DemoArgs(**options))


def missing_prerequisites() -> list[str]:
    """One line per missing tool; mvn and go only matter until the first provisioning is cached."""
    from local.stack import provision

    needed = ["java"]
    if not (provision.cache_dir() / f"kafka-{provision.KAFKA_VERSION}" / provision.MARKER).exists():
        needed.append("mvn")
    if not (provision.cache_dir() / f"minio-{provision.MINIO_VERSION}" / provision.MARKER).exists():
        needed.append("go")
    return [
        f"missing prerequisite: {tool}: {MISSING_HINTS[tool]}" for tool in needed if not shutil.which(tool)
    ]


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _state(url: str) -> dict:
    response = http_get(f"{url}/state", timeout=2)
    return response.json() if response is not None and response.is_success else {}


class PipelineRuns:
    """Runs the pipeline as a subprocess (its chatty logs go to a file) and reports the result."""

    def __init__(self, workdir: Path, env: dict[str, str], preset: str) -> None:
        self.workdir, self.env, self.count = workdir, env, 0
        size = PRESETS[preset]
        self.params = [f"data_users={size.users}", f"data_products={size.products}",
                       f"data_purchases={size.purchases}"]  # fmt: skip
        if preset == "small":  # small data learns faster with a higher rate and smaller batches
            self.params += ["epochs=4", "embedding_dim=16", "batch_size=2048", "learning_rate=0.01"]

    def run(self, stop: threading.Event) -> bool:
        self.count += 1
        log = self.workdir / f"pipeline-run-{self.count}.log"
        params = [arg for p in [*self.params, f"data_seed={self.count}"] for arg in ("--param", p)]
        cmd = [
            sys.executable,
            "-m",
            "recommender",
            "pipeline",
            "run",
            "--local",
            "--publish-new-data",
            *params,
        ]
        _say(f"pipeline run {self.count}: fresh data -> train -> evaluate -> export -> publish (log: {log})")
        started = time.monotonic()
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)  # fmt: skip
            while process.poll() is None:
                if stop.wait(0.5):
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
                    return False
        text = log.read_text(errors="replace")
        gate = next(
            (line.strip() for line in text.splitlines() if "quality gate:" in line), "quality gate: ?"
        )
        published = next(
            (
                line.strip()
                for line in text.splitlines()
                if line.strip().startswith("published") and "instance" in line
            ),
            None,
        )
        took = time.monotonic() - started
        if process.returncode != 0:
            _say(f"pipeline run {self.count} FAILED after {took:.0f}s; see {log}")
            return False
        _say(f"pipeline run {self.count} done in {took:.0f}s: {gate}; {published or 'nothing published'}")
        return True


def run(args: DemoArgs) -> int:
    problems = missing_prerequisites()
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2

    from client.core import run_load, snapshot_users
    from common.kafka import ensure_topics
    from common.settings import Settings
    from common.storage import ObjectStore
    from local.modelserver import ModelServerProcess
    from local.stack import Stack, provision
    from local.stack.serving import ServingInstance

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recommender-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    provision.provision_all()
    stack = Stack(workdir / "stack")
    instances: list[ServingInstance] = []
    server: ModelServerProcess | None = None
    try:
        _say("starting Kafka and MinIO")
        info = stack.up()
        # What every process of the demo gets, this one included (through `load_from`); os.environ
        # itself stays as it was.
        env = {**os.environ, **info.env()}
        settings = Settings.load_from(env)
        ObjectStore.from_settings(settings).ensure_bucket()
        ensure_topics(settings)
        _say(
            f"Kafka {info.kafka_bootstrap}, MinIO http://{info.minio_endpoint}, "
            f"bucket {settings.minio_bucket}"
        )

        _say("starting serving instances a and b (model sync + TF-Serving-compatible server)")
        for name in ("a", "b"):
            serving = ServingInstance(workdir / f"serving-{name}", name, env=dict(env))
            serving.start()
            instances.append(serving)
            env |= serving.env()
        server = ModelServerProcess(workdir / "modelserver", dict(env), http_port=args.http_port)
        server.start()
        _say(f"model server up; status page: {server.url}/")

        pipeline = PipelineRuns(workdir, dict(env), args.preset)
        if not pipeline.run(stop):
            return 0 if stop.is_set() else 1
        if not _wait_ready(server, stop):
            _say(f"the model server did not pick up the model; see {server.log_path}")
            return 1
        users = snapshot_users(settings)
        return _stream(args, settings, users, pipeline, server.url, stop, run_load)
    except KeyboardInterrupt:
        stop.set()
        return 130
    finally:
        _say("stopping everything")
        if server is not None:
            server.stop()
        for serving in instances:
            serving.stop()
        stack.down()
        _say(f"stopped; logs are in {workdir}")


def _wait_ready(server, stop: threading.Event, timeout: float = 180.0) -> bool:
    """Block until the model server has switched to the published model (/readyz answers 200)."""

    route = server.wait_route(timeout, cancel=stop)
    if route is not None:
        _say(f"model server serving instance {route['instance']} version {route['version']}")
    return route is not None


def _describe(recent: dict) -> str:
    """One recent request as a readable line: user -> items (model)."""
    items = recent.get("items")
    if items is None:
        return json.dumps(recent)[:200]
    shown = ", ".join(str(item) for item in items[:5])
    fallback = f", fallback: {recent['fallback']}" if recent.get("fallback") else ""
    more = " ..." if len(items) > 5 else ""
    return f"user {recent.get('user')} -> {shown}{more} ({recent.get('model')}{fallback})"


def _stream(args, settings, users, pipeline: PipelineRuns, url: str, stop: threading.Event, run_load) -> int:
    """Load in one thread, retraining in another, a live line here; returns the exit code."""
    result: dict = {}
    live: dict = {}

    def on_progress(progress) -> None:
        live["progress"] = progress

    def load() -> None:
        result["report"] = run_load(settings, users, float("inf"), args.rate, progress=on_progress, stop=stop,
                                    drain_s=30)  # fmt: skip

    def retrain() -> None:
        while not stop.wait(args.retrain_every):
            if not pipeline.run(stop):
                return

    _say(
        f"streaming {args.rate:g} requests/s from {len(users):,} users; "
        f"retraining every {args.retrain_every:g}s"
    )
    threads = [threading.Thread(target=load, daemon=True), threading.Thread(target=retrain, daemon=True)]
    for thread in threads:
        thread.start()
    models_seen: list[str] = []
    last_line = last_sample = time.monotonic()
    previous = None
    try:
        while not stop.is_set() and threads[0].is_alive():
            time.sleep(0.5)
            state = _state(url)
            model = state.get("model") or {}
            current = f"{model.get('instance')}/v{model.get('version')}" if model else None
            if current and (not models_seen or models_seen[-1] != current):
                if models_seen:
                    _say(f"MODEL SWAP: {models_seen[-1]} -> {current} (requests keep flowing)")
                models_seen.append(current)
            now = time.monotonic()
            progress = live.get("progress")
            if progress and now - last_line >= 2:
                rate = (progress.answered - previous[0]) / (now - previous[1]) if previous else 0.0
                previous = (progress.answered, now)
                latency = state.get("latency_ms") or {}
                p50, p99 = latency.get("p50"), latency.get("p99")
                _say(
                    f"live {current} | {rate:6.1f} replies/s | sent {progress.sent} "
                    f"answered {progress.answered} "
                    f"dlq {progress.dlq} | serving p50 {p50} ms p99 {p99} ms"
                )
                last_line = now
            if now - last_sample >= 10 and state.get("recent"):
                _say(f"sample: {_describe(state['recent'][-1])}")
                last_sample = now
            if args.swaps and len(models_seen) > args.swaps:
                _say(f"{args.swaps} swap(s) seen; stopping the load")
                time.sleep(3)  # let a few requests land on the new model
                stop.set()
    except KeyboardInterrupt:
        stop.set()
    threads[0].join(timeout=60)
    report = result.get("report")
    if report is None:
        return 1
    print(report.summary(), flush=True)
    failed = len(report.unanswered)
    _say(
        f"swaps seen: {max(0, len(models_seen) - 1)} ({' -> '.join(models_seen)}); failed requests: {failed}"
    )
    return 0 if failed == 0 else 1
