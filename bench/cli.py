"""`python -m bench` (`make bench`): measure the local real stack side by side and write
bench/results/*.json, PNG plots and summary.md.

It provisions its own Kafka + MinIO, starts both serving instances, runs the pipeline on the
default data set (timed per step, with peak memory), compares the Keras model with popularity
and implicit ALS and BPR (tuned on a validation split) on the default, small and sparse data
sets, ramps the load through the batched model server and through the original design's path
(one REST predict per request, one row per product) to find each one's max sustained rate,
measures latency at 25/50/75% of ours and 1 vs 2 partitions and replicas, and swaps the model
ten times under load. `--quick` does all of it on the small data set with short
steps (quality on small and sparse, with a reduced grid), in a few minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so that --help does not load the stack's code
    from local.modelserver import ModelServerProcess

RESULTS = Path(__file__).resolve().parent / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small data set, short steps (a few minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    parser.add_argument("--workdir", type=Path, help="logs and stack data (default: a temporary directory)")
    parser.add_argument("--step-seconds", type=float, help="duration of one load step (default 8, quick 3)")
    parser.add_argument("--swaps", type=int, default=10, help="model swaps under load (default 10)")


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    from bench import report, sections
    from client.core import snapshot_users
    from common.schemas import ModelUpdate
    from common.settings import Settings
    from common.storage import ObjectStore
    from datapublisher.generate import PRESETS
    from local.modelserver import ModelServerProcess
    from local.stack import Stack, provision
    from local.stack.serving import ServingInstance
    from local.world import announce
    from modelpublisher.publisher import ModelPublisherSettings, publish, read_export_metrics

    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recommender-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    step_s = args.step_seconds or (3.0 if args.quick else 8.0)
    preset = PRESETS["small" if args.quick else "default"]
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "data": f"{preset.users:,} users x {preset.products:,} products, {preset.purchases:,} purchases",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": report.machine(),
    }
    _say(f"workdir {workdir}; {results['data']}")
    provision.provision_all()
    stack = Stack(workdir / "stack")
    instances: dict[str, ServingInstance] = {}
    servers: list[ModelServerProcess] = []
    baseline = None
    try:
        os.environ.update(stack.up().env())
        os.environ.pop("MINIO_BUCKET", None)
        sections.Topics.create(partitions=2)
        store = ObjectStore.from_settings(Settings.load())
        store.ensure_bucket()
        for name in ("a", "b"):
            instances[name] = ServingInstance(workdir / f"serving-{name}", name, env=dict(os.environ))
            instances[name].start()
            os.environ.update(instances[name].env())
        _say("stack and serving instances up")

        # 3. Pipeline on the data set: it also trains the model every later section serves.
        params = {
            "data_users": preset.users,
            "data_products": preset.products,
            "data_purchases": preset.purchases,
        }
        if args.quick:  # as the demo: small data learns with a higher rate and smaller batches
            params |= {"epochs": 4, "embedding_dim": 16, "batch_size": 2048, "learning_rate": 0.01}
        env = dict(os.environ) | {"PIPELINE_ROOT": str(workdir / "kfp"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        results["pipeline"] = sections.run_pipeline(params, env, workdir / "pipeline.log", _say)
        report.write_json(out, "pipeline", results["pipeline"])
        version_a = store.model_versions("a")[-1]

        # 4. Quality: Keras, popularity and tuned ALS / BPR on each data set's split.
        results["quality"] = sections.quality(store, version_a, _say, args.quick)
        report.write_json(out, "quality", results["quality"])

        version_b = sections.copy_to_b(store, version_a)
        instances["b"].wait_available(version_b)
        metrics = read_export_metrics(store, "a", version_a)
        versions = {"a": version_a, "b": version_b}

        def update(name: str) -> ModelUpdate:
            return instances[name].model_update(versions[name], metrics)

        users = snapshot_users(Settings.load())
        rates = (
            [100, 200, 400, 800, 1600, 3200, 4800]
            if args.quick
            else [500, 1000, 2000, 3000, 4000, 5000, 6000, 7500]
        )

        # 1. Serving: ours with 1 and 2 partitions/replicas, then the baseline, same users and k.
        serving: dict = {
            "ramps": {},
            "configs": {},
            "criterion": (
                f"A rate is sustained when, over {step_s:g} s of open-loop load, nothing is lost or "
                "dead-lettered, the client sends on schedule, replies flow at >= 95% of the offered "
                "rate (first to last reply) and p99 < 1 s; the ramp stops at the first failure and "
                "bisects once. Latency is end to end: client send -> Kafka -> model server -> "
                "TF-Serving (gRPC) -> Kafka -> client."
            ),
        }
        for partitions in (1, 2):
            topics = sections.Topics.create(partitions)
            settings = topics.activate()
            announce(settings, update("a"))
            replicas = [
                ModelServerProcess(workdir / f"modelserver-{partitions}-{i}", dict(os.environ))
                for i in range(partitions)
            ]
            servers += replicas
            for server in replicas:
                server.start()
            _wait_ready(replicas)
            label = f"batched model server, {partitions}x{partitions}"
            serving["configs"][label] = f"{partitions} x {partitions}"
            sections.warm_up(settings, users, rates[2], 10.0 if args.quick else 30.0, _say)
            ramp = sections.ramp(settings, users, rates, step_s, _say, label)
            ramp["model_server_metrics"] = sections.server_profile(replicas)
            _say(f"{label}: {ramp['model_server_metrics']}")
            ramp["latency_at"] = sections.latency_at(
                settings, users, ramp["max_sustained_rate"], step_s * 2, _say
            )
            serving["ramps"][label] = ramp
            if partitions == 1:
                # The headline (max rate, latency, the baseline ratio, the swap load) is the base
                # configuration's; 2 x 2 is the scaling figure. Picking whichever ramp reached more
                # let run-to-run noise decide which configuration's latency the target was judged on.
                serving["max_sustained_rate"] = ramp["max_sustained_rate"]
                serving["headline_config"] = label
                serving["latency_at"] = ramp["latency_at"]
            for server in replicas:
                server.stop()

        topics = sections.Topics.create(2)
        settings = topics.activate()
        products = sections.products_file(store, workdir)
        with open(workdir / "baseline.log", "w") as baseline_log:
            baseline = subprocess.Popen(
                [sys.executable, "-m", "bench.baseline", "--products-file", str(products),
                 "--version", str(version_a)],
                env=dict(os.environ), stdout=baseline_log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        time.sleep(3)
        label = "original design: one REST predict per request"
        serving["configs"][label] = "2 x 1"
        serving["ramps"][label] = sections.ramp(
            settings, users, [1, 2, 5, 10, 20, 40, 80, 160], max(step_s, 8.0), _say, label
        )
        baseline.terminate()
        baseline.wait(30)
        baseline = None
        base_rate = serving["ramps"][label]["max_sustained_rate"]
        serving["baseline_max_sustained_rate"] = base_rate
        serving["ratio_to_baseline"] = (
            round(serving["max_sustained_rate"] / base_rate, 1) if base_rate else None
        )
        results["serving"] = serving
        report.write_json(out, "serving", serving)

        # 2. Ten swaps under a steady load at half the max sustained rate, through the real publisher.
        topics = sections.Topics.create(2)
        settings = topics.activate()
        announce(settings, update("a"))
        server = ModelServerProcess(workdir / "modelserver-swaps", dict(os.environ))
        servers.append(server)
        server.start()
        _wait_ready([server])

        def swap(name: str) -> None:
            publish(ModelPublisherSettings.load(), name, versions[name])

        rate = max(50.0, serving["max_sustained_rate"] / 2)
        results["swaps"] = sections.swaps_under_load(
            settings, users, rate, args.swaps, 3.0 if args.quick else 5.0, swap, _say
        )
        report.write_json(out, "swaps", results["swaps"])
        server.stop()
    finally:
        if baseline is not None:
            baseline.kill()
        for server in servers:
            server.stop()
        for serving_instance in instances.values():
            serving_instance.stop()
        stack.down()
    results["elapsed_s"] = time.monotonic() - started
    images = report.plots(out, results)
    report.write_json(out, "machine", results["machine"])
    (out / "summary.md").write_text(report.summary(results, images))
    _say(f"wrote {out}/summary.md and {len(images)} plots in {results['elapsed_s']:.0f} s")
    return 0


def _wait_ready(servers: list[ModelServerProcess]) -> None:
    deadline = time.monotonic() + 120
    for server in servers:
        if server.wait_route(max(0.0, deadline - time.monotonic())) is None:
            raise RuntimeError("model servers not ready after 120 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
