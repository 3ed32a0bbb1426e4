"""The bench report's quality table and plot: every data set, and a quality.json from before them."""

from __future__ import annotations

from pathlib import Path

from bench import report

MACHINE = {"nproc": 2, "cpu": "test", "memory_gib": 1.0, "kernel": "k", "python": "3.11"}


def _models(hr: float) -> dict:
    als = {"hr_at_10": hr, "ndcg_at_10": hr / 2, "train_seconds": 0.2, "tuning_seconds": 3.0}
    als |= {"params": {"factors": 16, "regularization": 0.01, "alpha": 5}, "grid": [{}, {}]}
    return {
        "keras": {"hr_at_10": hr / 2, "ndcg_at_10": hr / 4, "train_seconds": 1.5},
        "popularity": {"hr_at_10": 0.1, "ndcg_at_10": 0.05, "train_seconds": 0.0},
        "implicit_als": als,
    }


def _results(quality: dict) -> dict:
    return {"mode": "quick", "data": "d", "started": "now", "elapsed_s": 1.0, "machine": MACHINE} | {
        "quality": quality
    }


def test_one_table_and_one_plot_over_every_data_set(tmp_path: Path) -> None:
    datasets = {
        name: {"data": name, "evaluated_users": 100, "validation_users": 90, "models": _models(hr)}
        for name, hr in (("small", 0.4), ("sparse", 0.3))
    }
    results = _results({"evaluated_users": 100, "models": datasets["small"]["models"], "datasets": datasets})
    assert report.plots(tmp_path, results) == ["quality.png"]
    assert (tmp_path / "quality.png").stat().st_size > 0
    text = report.summary(results, ["quality.png"])
    assert text.count("| small (100 users) |") == 3 and text.count("| sparse (100 users) |") == 3
    assert "factors=16, regularization=0.01, alpha=5 (best of 2, 3.0 s)" in text


def test_a_quality_json_from_before_data_sets_still_reports(tmp_path: Path) -> None:
    models = _models(0.4)
    models["implicit_als"] = {
        "hr_at_10": 0.4,
        "ndcg_at_10": 0.2,
        "train_seconds": 1.0,
        "params": "factors=64",
    }
    models["implicit_bpr"] = {"error": "implicit is not installed"}
    results = _results({"evaluated_users": 100, "models": models})
    assert report.plots(tmp_path, results) == ["quality.png"]
    text = report.summary(results, [])
    assert "| pipeline (100 users) | implicit_als | 0.4000 | 0.2000 | 1.00 | factors=64 |" in text
    assert "| pipeline (100 users) | implicit_bpr | — | — | — | implicit is not installed |" in text
