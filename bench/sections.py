"""The four measured sections: pipeline, quality, serving (ours vs the baseline, scaling) and swaps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load import TimedLoad, timed_load
from common.kafka import ensure_topics
from common.settings import Settings
from common.storage import EXPORT_METADATA, ObjectStore, completion_marker, model_version_prefix
from local.world import fresh_topics

Say = Callable[[str], None]
STEP = re.compile(r"(Executing task|Task) '?([\w-]+)'?( finished)?")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- pipeline


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _tree_rss_mib(root: int) -> float:
    total = 0
    for pid in _descendants(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_pipeline(params: dict[str, object], env: dict[str, str], log_path: Path, say: Say) -> dict:
    """One `recommender pipeline run --local --publish-new-data`: wall time per step, whole run, and
    the peak resident memory of its process tree (polled every 0.2 s from /proc)."""
    cmd = [sys.executable, "-m", "recommender", "pipeline", "run", "--local", "--publish-new-data"]
    for name, value in params.items():
        cmd += ["--param", f"{name}={value}"]
    started = time.monotonic()
    steps: dict[str, dict[str, float]] = {}
    peak = {"total": 0.0}
    current: list[str] = []
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def poll_memory() -> None:
            while process.poll() is None:
                rss = _tree_rss_mib(process.pid)
                peak["total"] = max(peak["total"], rss)
                if current:
                    steps[current[-1]]["peak_rss_mib"] = max(steps[current[-1]].get("peak_rss_mib", 0), rss)
                time.sleep(0.2)

        poller = threading.Thread(target=poll_memory, daemon=True)
        poller.start()
        for line in process.stdout:
            log.write(line)
            match = STEP.search(ANSI.sub("", line))
            if match is None:
                continue
            now, name = time.monotonic() - started, match.group(2)
            if match.group(1) == "Executing task":
                steps[name] = {"start_s": now}
                current.append(name)
                say(f"pipeline: {name} started")
            elif match.group(3) and name in steps:
                steps[name]["seconds"] = round(now - steps[name]["start_s"], 1)
                say(f"pipeline: {name} done in {steps[name]['seconds']} s")
        process.wait()
        poller.join()
    if process.returncode != 0:
        raise RuntimeError(f"the pipeline run failed (exit {process.returncode}); see {log_path}")
    return {
        "params": params,
        "total_seconds": round(time.monotonic() - started, 1),
        "steps": steps,
        "peak_rss_mib": round(peak["total"], 1),
    }


# ---------------------------------------------------------------- quality


def quality(store: ObjectStore, version: int, say: Say, quick: bool) -> dict:
    """HR@10 / NDCG@10 on the trainer's leave-one-out split of each data set: the pipeline's snapshot
    (default; small with --quick) and generated small and sparse sets. Keras with the trainer's
    defaults, popularity, implicit ALS and BPR tuned on a validation split (`bench.quality`).
    The top level keeps the pipeline's data set, as before; `datasets` has every one."""
    from bench.quality import FULL_GRID, QUICK_GRID, compare
    from common.snapshots import read_current_snapshot
    from datapublisher.generate import ALL_PRESETS, generate_purchases

    pipeline_set = "small" if quick else "default"
    datasets: dict[str, dict] = {}
    for name in ("small", "sparse") if quick else ("default", "small", "sparse"):
        preset = ALL_PRESETS[name]
        keras = None
        if name == pipeline_set:
            purchases = read_current_snapshot(store).purchases
            if not quick:  # the full run's pipeline trains with the trainer's defaults: its export's figures
                metrics = store.get_json(model_version_prefix("a", version) + EXPORT_METADATA)["metrics"]
                keras = {k: metrics.get(k) for k in ("hr_at_10", "ndcg_at_10", "train_seconds")}
        else:
            purchases = generate_purchases(
                preset.users,
                preset.products,
                preset.purchases,
                activity_sigma=preset.activity_sigma,
                repeat_fraction=preset.repeat_fraction,
            )
        say(f"quality: {name} data set")
        datasets[name] = {
            "data": f"{preset.users:,} users x {preset.products:,} products, {preset.purchases:,} purchases"
        } | compare(purchases, QUICK_GRID if quick else FULL_GRID, keras, say)
    top = datasets[pipeline_set]
    return {"evaluated_users": top["evaluated_users"], "models": top["models"], "datasets": datasets}


def copy_to_b(store: ObjectStore, version: int) -> int:
    """The same export as a new version on the idle instance `b`, so swaps go a <-> b."""
    from trainer.upload import upload_export

    with tempfile.TemporaryDirectory() as tmp:
        store.download_prefix(model_version_prefix("a", version), Path(tmp))
        (Path(tmp) / completion_marker("a", version).rsplit("/", 1)[1]).unlink()
        instance, new_version = upload_export(store, Path(tmp))
    assert instance == "b", instance
    return new_version


# ---------------------------------------------------------------- serving


@dataclass
class Topics:
    env: dict[str, str]

    @classmethod
    def create(cls, partitions: int) -> Topics:
        env = fresh_topics()
        os.environ.update(env)
        ensure_topics(Settings.load(), partitions=partitions)
        return cls(env)

    def activate(self) -> Settings:
        os.environ.update(self.env)
        return Settings.load()


def sustained(load: TimedLoad) -> bool:
    """Replies kept up: nothing lost or dead-lettered, the client sent on schedule, replies flowed
    at 95% or more of the offered rate (first to last reply, not longer than sending), p99 < 1 s."""
    if load.lost or load.dead_lettered or not load.sent:
        return False
    p99 = load.percentile(99)
    return (
        load.sent / load.send_seconds >= 0.95 * load.offered_rate
        and load.answered_rate >= 0.95 * load.offered_rate
        and p99 is not None
        and p99 < 1000
    )


def warm_up(settings: Settings, users: list[str], rate: float, seconds: float, say: Say) -> None:
    """Load that is not measured: the broker's JIT, TensorFlow's kernels and the connections settle
    first, so the ramp's first steps are not charged for them."""
    load = timed_load(settings, users, rate, seconds, drain_s=30)
    say(f"warm-up at {rate:g}/s for {seconds:g} s {_short(load)}")


def ramp(
    settings: Settings, users: list[str], rates: list[float], duration_s: float, say: Say, label: str
) -> dict:
    """Raise the offered rate until replies stop keeping up, then bisect once between the last
    sustained and the first failed rate. Returns every step and the max sustained rate."""
    steps, best, failed = [], 0.0, None

    def attempt(rate: float) -> bool:
        load = timed_load(settings, users, rate, duration_s, drain_s=max(10.0, duration_s * 2))
        ok = sustained(load)
        steps.append(load.summary() | {"sustained": ok})
        say(f"{label}: {rate:g}/s -> {'ok' if ok else 'NOT sustained'} {_short(load)}")
        return ok

    for rate in rates:
        if not attempt(rate):
            failed = rate
            break
        best = rate
    if failed is not None and best == 0:  # even the first rate was too much: halve, at most 3 times
        rate = failed
        for _ in range(3):
            rate = round(rate / 2, 2)
            if attempt(rate):
                best = rate
                break
            failed = rate
    if failed is not None and best > 0:
        rate = round((best + failed) / 2, 1)
        best = rate if attempt(rate) else best
    return {"max_sustained_rate": best, "steps": steps}


def _short(load: TimedLoad) -> str:
    p50, p99 = load.percentile(50), load.percentile(99)

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    return (
        f"(sent {load.sent}, answered {load.answered}, dlq {load.dead_lettered}, "
        f"p50 {fmt(p50)} ms, p99 {fmt(p99)} ms)"
    )


def server_profile(servers: list) -> dict:
    """Where a model server's time went during a ramp, from its own /metrics: mean batch size,
    mean predict call time and the number of predict calls, summed over the replicas."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for server in servers:
        answer = server.get("/metrics")
        if answer is None or answer[0] != 200:
            continue
        for family in text_string_to_metric_families(answer[1].decode()):
            for sample in family.samples:
                if sample.name in {
                    "recommender_batch_size_sum",
                    "recommender_batch_size_count",
                    "recommender_predict_latency_seconds_sum",
                    "recommender_predict_latency_seconds_count",
                }:
                    sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    batches = sums.get("recommender_batch_size_count", 0.0)
    calls = sums.get("recommender_predict_latency_seconds_count", 0.0)
    return {
        "batches": int(batches),
        "mean_batch_size": round(sums.get("recommender_batch_size_sum", 0.0) / batches, 1)
        if batches
        else None,
        "predict_calls": int(calls),
        "mean_predict_ms": round(1000 * sums.get("recommender_predict_latency_seconds_sum", 0.0) / calls, 2)
        if calls
        else None,
    }


def latency_at(settings: Settings, users: list[str], max_rate: float, duration_s: float, say: Say) -> dict:
    points = {}
    for share in (25, 50, 75):
        rate = max(1.0, max_rate * share / 100)
        load = timed_load(settings, users, rate, duration_s, drain_s=30)
        points[str(share)] = load.summary()
        say(f"latency at {share}% ({rate:g}/s): {_short(load)}")
    return points


# ---------------------------------------------------------------- swaps


def swaps_under_load(
    settings: Settings,
    users: list[str],
    rate: float,
    swaps: int,
    every_s: float,
    publish: Callable[[str], None],
    say: Say,
) -> dict:
    """`swaps` model swaps (b, a, b, ...) every `every_s` seconds during a steady load at `rate`."""
    duration = every_s * (swaps + 1)
    times: list[float] = []
    result: dict = {}

    def load() -> None:
        result["load"] = timed_load(settings, users, rate, duration, drain_s=60, seed=7)

    started = time.monotonic()
    thread = threading.Thread(target=load)
    thread.start()
    for i in range(swaps):
        time.sleep(max(0.0, started + every_s * (i + 1) - time.monotonic()))
        target = "b" if i % 2 == 0 else "a"
        times.append(time.monotonic() - started)
        publish(target)
        say(f"swap {i + 1}/{swaps}: -> {target}")
    thread.join()
    load_result: TimedLoad = result["load"]
    window = 2.0  # a request sent within 2 s after a swap was announced counts as "during a swap"
    during, steady = [], []
    for sent, latency in zip(load_result.sent_at, load_result.latency_ms, strict=True):
        if latency is None:
            continue
        (during if any(t <= sent <= t + window for t in times) else steady).append(latency)
    return {
        "rate": rate,
        "swaps": swaps,
        "swap_times_s": [round(t, 2) for t in times],
        "failed_requests": load_result.dead_lettered,
        "lost_requests": load_result.lost,
        "load": load_result.summary(),
        "steady_p99_ms": float(np.percentile(steady, 99)) if steady else None,
        "max_during_swap_ms": max(during) if during else None,
        # Rounded (1 ms, 0.1 ms): at thousands of requests/s the full floats made a 10 MB file.
        "timeline": {
            "sent_at": [round(t, 3) for t in load_result.sent_at],
            "latency_ms": [None if v is None else round(v, 1) for v in load_result.latency_ms],
        },
    }


def products_file(store: ObjectStore, directory: Path) -> Path:
    """Every product of the current snapshot, for the baseline's one-row-per-product calls."""
    from common.snapshots import read_current_snapshot

    products = sorted(read_current_snapshot(store).purchases["product"].astype(str).unique().tolist())
    path = directory / "products.json"
    path.write_text(json.dumps(products))
    return path
