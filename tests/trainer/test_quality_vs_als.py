"""The Keras model with the trainer's defaults must not fall below tuned implicit ALS on
the small preset (HR@10 and NDCG@10 on the trainer's test split; ALS chosen on a validation split
that never sees the test pairs, as the bench does)."""

from __future__ import annotations

from bench.quality import QUICK_GRID, compare
from datapublisher.generate import PRESETS, generate_purchases


def test_keras_defaults_are_not_below_tuned_als_on_small():
    small = PRESETS["small"]
    purchases = generate_purchases(small.users, small.products, small.purchases, seed=0)
    models = compare(purchases, QUICK_GRID)["models"]
    keras, als = models["keras"], models["implicit_als"]
    figures = {k: (round(keras[k], 4), round(als[k], 4)) for k in ("hr_at_10", "ndcg_at_10")}
    assert keras["hr_at_10"] >= als["hr_at_10"], f"Keras vs ALS ({als['params']}): {figures}"
    assert keras["ndcg_at_10"] >= als["ndcg_at_10"], f"Keras vs ALS ({als['params']}): {figures}"
