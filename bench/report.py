"""Results as JSON, PNG plots (matplotlib) and a Markdown summary with targets vs measured."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

TARGETS = {"rate": 5000.0, "p99_at_half_ms": 50.0, "ratio": 20.0}


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_json(out: Path, name: str, data: dict) -> None:
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def plots(out: Path, results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    serving = results.get("serving")
    if serving:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, ramp in serving["ramps"].items():
            steps = sorted(ramp["steps"], key=lambda s: s["offered_rate"])
            ax.plot(
                [s["offered_rate"] for s in steps],
                [s["answered_rate"] for s in steps],
                marker="o",
                label=label,
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="offered requests/s",
            ylabel="answered requests/s",
            title="Throughput: batched model server vs one REST call per request",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        written.append("throughput.png")
        plt.close(fig)

        measured = {
            label: ramp["latency_at"] for label, ramp in serving["ramps"].items() if ramp.get("latency_at")
        }
        if measured:
            fig, ax = plt.subplots(figsize=(7, 4))
            for label, points in measured.items():
                shares = list(points)
                config = serving["configs"][label]
                for stat, style in (("p50_ms", "--"), ("p99_ms", "-")):
                    ax.plot(
                        [int(s) for s in shares],
                        [points[s][stat] for s in shares],
                        style,
                        marker="o",
                        label=f"{config} {stat[:3]}",
                    )
            ax.axhline(TARGETS["p99_at_half_ms"], color="grey", linestyle="--", label="p99 target at 50%")
            ax.set(
                xlabel="% of the max sustained rate",
                ylabel="end-to-end latency (ms)",
                title="Latency at 25/50/75% of each configuration's max",
            )
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "latency.png", dpi=110)
            written.append("latency.png")
            plt.close(fig)

    swaps = results.get("swaps")
    if swaps:
        fig, ax = plt.subplots(figsize=(8, 4))
        timeline = swaps["timeline"]
        pairs = [
            (t, v) for t, v in zip(timeline["sent_at"], timeline["latency_ms"], strict=True) if v is not None
        ]
        ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=2, alpha=0.5, label="request")
        for i, t in enumerate(swaps["swap_times_s"]):
            ax.axvline(t, color="red", alpha=0.5, label="swap" if i == 0 else None)
        ax.set(
            xlabel="seconds into the load",
            ylabel="latency (ms)",
            yscale="log",
            title=f"{swaps['swaps']} model swaps at {swaps['rate']:g} requests/s",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "swaps.png", dpi=110)
        written.append("swaps.png")
        plt.close(fig)

    pipeline = results.get("pipeline")
    if pipeline:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = list(pipeline["steps"])
        ax.barh(names, [pipeline["steps"][n].get("seconds", 0) for n in names])
        ax.set(xlabel="seconds", title=f"Pipeline steps (whole run {pipeline['total_seconds']} s)")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / "pipeline.png", dpi=110)
        written.append("pipeline.png")
        plt.close(fig)

    quality = results.get("quality")
    if quality:
        datasets = _quality_datasets(quality)
        names = list(
            dict.fromkeys(n for d in datasets.values() for n, m in d["models"].items() if "hr_at_10" in m)
        )
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        width = 0.8 / max(1, len(names))
        for ax, (metric, title) in zip(axes, (("hr_at_10", "HR@10"), ("ndcg_at_10", "NDCG@10")), strict=True):
            for i, name in enumerate(names):
                ax.bar(
                    [x + (i - (len(names) - 1) / 2) * width for x in range(len(datasets))],
                    [d["models"].get(name, {}).get(metric, 0) for d in datasets.values()],
                    width=width,
                    label=name,
                )
            ax.set_xticks(list(range(len(datasets))), list(datasets))
            ax.set(title=title)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(names))
        fig.suptitle("Quality per data set, each on its own leave-one-out split")
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(out / "quality.png", dpi=110)
        written.append("quality.png")
        plt.close(fig)
    return written


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _quality_datasets(quality: dict) -> dict[str, dict]:
    """Every data set's figures; a quality.json from before `datasets` holds the pipeline's only."""
    return quality.get("datasets") or {"pipeline": quality}


def summary(results: dict, images: list[str]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Mode: **{results['mode']}** (data: {results['data']}), run at {results['started']}, "
        f"{results['elapsed_s']:.0f} s in all.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}. Kafka, MinIO, both serving instances (the TF-Serving stand-in), the model "
        "server and the load generator all share these cores.",
        "",
    ]
    serving, swaps = results.get("serving"), results.get("swaps")
    if serving:
        best = serving["max_sustained_rate"]
        half = serving.get("latency_at", {}).get("50", {})
        ratio = serving.get("ratio_to_baseline")
        lines += [
            "## Targets vs measured",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            f"| ≥ {TARGETS['rate']:,.0f} requests/s sustained | {_fmt(best, 0)} /s "
            f"({serving['configs'].get(serving.get('headline_config', ''), '?')}) | "
            f"{'yes' if best >= TARGETS['rate'] else 'no'} |",
            f"| p99 ≤ {TARGETS['p99_at_half_ms']:.0f} ms at half that rate | {_fmt(half.get('p99_ms'))} ms | "
            f"{'yes' if (half.get('p99_ms') or 1e9) <= TARGETS['p99_at_half_ms'] else 'no'} |",
            f"| ≥ {TARGETS['ratio']:.0f}x the per-request baseline | {_fmt(ratio)}x | "
            f"{'yes' if (ratio or 0) >= TARGETS['ratio'] else 'no'} |",
        ]
        if swaps:
            zero = swaps["failed_requests"] == 0 and swaps["lost_requests"] == 0
            lines.append(
                f"| 0 failed or lost requests across swaps | {swaps['failed_requests']} failed, "
                f"{swaps['lost_requests']} lost | {'yes' if zero else 'no'} |"
            )
        lines += [
            "",
            "## Serving throughput and latency",
            "",
            "| path | partitions x model-server replicas | max sustained requests/s |",
            "|---|---|---|",
        ]
        for label, ramp in serving["ramps"].items():
            lines.append(f"| {label} | {serving['configs'][label]} | {_fmt(ramp['max_sustained_rate'], 0)} |")
        for label, ramp in serving["ramps"].items():
            profile = ramp.get("model_server_metrics")
            if profile and profile["batches"]:
                lines.append(
                    f"\n{label}, over its whole ramp (model server /metrics): {profile['batches']:,} "
                    f"batches of {profile['mean_batch_size']} requests on average, "
                    f"{profile['predict_calls']:,} predict calls of {profile['mean_predict_ms']} ms "
                    "on average."
                )
        lines += [
            "",
            f"The targets are judged on the base configuration ({serving.get('headline_config', '?')}); "
            "each configuration's latency at shares of its own max:",
            "",
            "| configuration | share of max | rate/s | p50 ms | p99 ms | answered/sent |",
            "|---|---|---|---|---|---|",
        ]
        for label, ramp in serving["ramps"].items():
            for share, point in ramp.get("latency_at", {}).items():
                lines.append(
                    f"| {serving['configs'][label]} | {share}% | {_fmt(point['offered_rate'], 0)} | "
                    f"{_fmt(point['p50_ms'])} | {_fmt(point['p99_ms'])} | "
                    f"{point['answered']}/{point['sent']} |"
                )
        lines += ["", serving["criterion"], ""]
    if swaps:
        lines += [
            "## Model swaps under load",
            "",
            f"{swaps['swaps']} swaps at {swaps['rate']:g} requests/s: {swaps['load']['sent']} sent, "
            f"{swaps['load']['answered']} answered, **{swaps['failed_requests']} failed** (DLQ), "
            f"**{swaps['lost_requests']} lost**, {swaps['load']['duplicates']} duplicates. Max latency "
            f"within 2 s of a swap {_fmt(swaps['max_during_swap_ms'])} ms against a steady p99 of "
            f"{_fmt(swaps['steady_p99_ms'])} ms.",
            "",
        ]
    pipeline = results.get("pipeline")
    if pipeline:
        lines += [
            "## Pipeline (`recommender pipeline run --local`)",
            "",
            "| step | seconds | peak RSS MiB |",
            "|---|---|---|",
        ]
        for name, step in pipeline["steps"].items():
            lines.append(f"| {name} | {_fmt(step.get('seconds'))} | {_fmt(step.get('peak_rss_mib'), 0)} |")
        lines += [
            f"| **whole run** | **{_fmt(pipeline['total_seconds'])}** | "
            f"**{_fmt(pipeline['peak_rss_mib'], 0)}** |",
            "",
        ]
    quality = results.get("quality")
    if quality:
        lines += [
            "## Quality (HR@10, NDCG@10 on each data set's leave-one-out test split)",
            "",
            "| data set | model | HR@10 | NDCG@10 | training s | chosen on validation |",
            "|---|---|---|---|---|---|",
        ]
        for dataset, figures in _quality_datasets(quality).items():
            label = f"{dataset} ({figures['evaluated_users']:,} users)"
            for name, fig in figures["models"].items():
                if "error" in fig:
                    lines.append(f"| {label} | {name} | — | — | — | {fig['error']} |")
                    continue
                params = fig.get("params")
                chosen = (
                    ", ".join(f"{k}={v:g}" for k, v in params.items())
                    + f" (best of {len(fig['grid'])}, {_fmt(fig['tuning_seconds'])} s)"
                    if isinstance(params, dict)
                    else (params or "")
                )
                lines.append(
                    f"| {label} | {name} | {fig['hr_at_10']:.4f} | {fig['ndcg_at_10']:.4f} | "
                    f"{_fmt(fig['train_seconds'], 2)} | {chosen} |"
                )
        lines += [
            "",
            "Keras runs with the trainer's defaults. ALS and BPR are tuned on a validation split (the "
            "trainer's leave-one-out applied once more to the training part), the best grid point by "
            "validation NDCG@10 is refitted on the whole training part; training s is that refit.",
            "",
        ]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"
