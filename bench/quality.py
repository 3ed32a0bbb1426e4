"""Keras vs tuned implicit ALS / BPR vs popularity on one data set, all on the trainer's split.

Baselines are tuned on a validation split that never sees the test pairs: the trainer's split is
applied once more to its own training part (`build_interactions` on the purchases without the
held-out pairs), so each user's latest new product before the test one is the validation target.
The best grid point by validation NDCG@10 is refitted on the whole training part and evaluated on
the test split by the trainer's full ranking (`held_out_ranks`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from trainer.data import Interactions, build_interactions
from trainer.evaluate import ScoreAll, held_out_ranks, hit_rate_and_ndcg, popularity_scores

Params = dict[str, float]
Fit = Callable[[Interactions, Params], ScoreAll]


@dataclass(frozen=True)
class Grid:
    als: list[Params]
    bpr: list[Params]


def _product(**axes: Iterable[float]) -> list[Params]:
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


FULL_GRID = Grid(
    als=_product(factors=(16, 32, 64, 128), regularization=(0.01, 0.05, 0.1), alpha=(5, 20, 40)),
    bpr=_product(factors=(32, 64), learning_rate=(0.01, 0.05), regularization=(0.01,)),
)
# --quick and the test: the grid's corners and middle, a few seconds on the small data sets.
QUICK_GRID = Grid(
    als=_product(factors=(16, 64), regularization=(0.01, 0.1), alpha=(5, 40)),
    bpr=_product(factors=(64,), learning_rate=(0.01, 0.05), regularization=(0.01,)),
)
ALS_ITERATIONS = 15
BPR_ITERATIONS = 100


def validation_split(purchases: pd.DataFrame, data: Interactions) -> Interactions:
    """The trainer's leave-one-out split of `data`'s training part: purchases of held-out pairs dropped."""
    test_pairs = pd.MultiIndex.from_arrays(
        [data.user_ids[data.test_users], data.product_ids[data.test_products]]
    )
    rows = pd.MultiIndex.from_arrays([purchases["user"].astype(str), purchases["product"].astype(str)])
    return build_interactions(purchases[~rows.isin(test_pairs)])


def _user_items(data: Interactions) -> csr_matrix:
    ones = np.ones(data.train_users.size, dtype=np.float32)
    return csr_matrix((ones, (data.train_users, data.train_products)), shape=(data.n_users, data.n_products))


def _fitted(model: Any, data: Interactions) -> ScoreAll:
    """Fit an implicit model on the binary training pairs; its scores as user factors x item factors."""
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS ones fight them
        model.fit(_user_items(data), show_progress=False)
    users, products = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda u: users[u] @ products.T


def fit_als(data: Interactions, params: Params) -> ScoreAll:
    """Implicit ALS on the binary training pairs; confidence 1 + alpha (Hu, Koren, Volinsky)."""
    from implicit.als import AlternatingLeastSquares

    return _fitted(
        AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=ALS_ITERATIONS,
            random_state=0,
        ),
        data,
    )


def fit_bpr(data: Interactions, params: Params) -> ScoreAll:
    """Implicit BPR (its item factors carry a bias column, its user factors a matching 1)."""
    from implicit.bpr import BayesianPersonalizedRanking

    return _fitted(
        BayesianPersonalizedRanking(
            factors=int(params["factors"]),
            learning_rate=params["learning_rate"],
            regularization=params["regularization"],
            iterations=BPR_ITERATIONS,
            random_state=0,
        ),
        data,
    )


def _figures(data: Interactions, score: ScoreAll) -> tuple[float, float]:
    return hit_rate_and_ndcg(held_out_ranks(data, score))


def tuned(fit: Fit, grid: list[Params], validation: Interactions, data: Interactions) -> dict:
    """The grid point with the best validation NDCG@10, refitted on `data`'s training part."""
    started = time.monotonic()
    points = []
    for params in grid:
        hr, ndcg = _figures(validation, fit(validation, params))
        points.append({"params": params, "hr_at_10": hr, "ndcg_at_10": ndcg})
    best = max(points, key=lambda p: p["ndcg_at_10"])
    tuning_seconds = time.monotonic() - started
    started = time.monotonic()
    score = fit(data, best["params"])
    train_seconds = time.monotonic() - started
    hr, ndcg = _figures(data, score)
    return {
        "hr_at_10": hr,
        "ndcg_at_10": ndcg,
        "train_seconds": round(train_seconds, 2),
        "params": best["params"],
        "validation_ndcg_at_10": best["ndcg_at_10"],
        "tuning_seconds": round(tuning_seconds, 1),
        "grid": points,
    }


def keras_defaults(purchases: pd.DataFrame) -> dict:
    """The trainer's `train` with `TrainConfig()`, as the pipeline's train step runs it."""
    from common.schemas import SnapshotPointer
    from common.snapshots import Snapshot
    from trainer.config import TrainConfig
    from trainer.train import train

    pointer = SnapshotPointer(
        snapshot_id="bench",
        path="in-process",
        rows=len(purchases),
        users=int(purchases["user"].nunique()),
        products=int(purchases["product"].nunique()),
        created_at=0,
    )
    metrics = train(Snapshot(pointer, purchases), TrainConfig(), verbose=0).metrics
    return {
        "hr_at_10": metrics.hr_at_10,
        "ndcg_at_10": metrics.ndcg_at_10,
        "train_seconds": metrics.train_seconds,
    }


def compare(
    purchases: pd.DataFrame,
    grid: Grid,
    keras: dict | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict:
    """Every model's HR@10 / NDCG@10 on the trainer's test split, with training times. `keras`:
    figures already measured on this data (the pipeline's export); else the trainer runs here."""
    import implicit

    data = build_interactions(purchases)
    validation = validation_split(purchases, data)
    started = time.monotonic()
    popularity = popularity_scores(data)
    pop_seconds = time.monotonic() - started
    pop_hr, pop_ndcg = _figures(data, popularity)
    if keras is None:
        say("quality: training Keras with the trainer's defaults")
        keras = keras_defaults(purchases)
    say(f"quality: tuning implicit ALS ({len(grid.als)} grid points)")
    als = tuned(fit_als, grid.als, validation, data)
    say(f"quality: tuning implicit BPR ({len(grid.bpr)} grid points)")
    bpr = tuned(fit_bpr, grid.bpr, validation, data)
    return {
        "evaluated_users": int(data.test_users.size),
        "validation_users": int(validation.test_users.size),
        "models": {
            "keras": keras,
            "popularity": {
                "hr_at_10": pop_hr,
                "ndcg_at_10": pop_ndcg,
                "train_seconds": round(pop_seconds, 3),
            },
            "implicit_als": als | {"version": implicit.__version__},
            "implicit_bpr": bpr | {"version": implicit.__version__},
        },
    }
