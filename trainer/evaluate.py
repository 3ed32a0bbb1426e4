"""HR@10 and NDCG@10 by full ranking over every product, excluding the user's training purchases.

The held-out product's rank counts the products scored higher, plus equal-scored ones with a
lower index (the order `tf.math.top_k` breaks ties in), so a model and the popularity baseline
are ranked by the same rule as serving ranks them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.data import Interactions

ScoreAll = Callable[[np.ndarray], np.ndarray]  # user indices [batch] -> scores [batch, products]


def held_out_ranks(data: Interactions, score_all: ScoreAll, chunk: int = 256) -> np.ndarray:
    """0-based rank of each test user's held-out product among the products they did not train on."""
    splits = np.concatenate([[0], np.cumsum(np.bincount(data.train_users, minlength=data.n_users))])
    ranks = np.empty(data.test_users.size, dtype=np.int64)
    for lo in range(0, data.test_users.size, chunk):
        users = data.test_users[lo : lo + chunk]
        targets = data.test_products[lo : lo + chunk]
        scores = np.array(score_all(users), dtype=np.float64, copy=True)
        # Training purchases can never be recommended, so they cannot outrank the target.
        counts = splits[users + 1] - splits[users]
        rows = np.repeat(np.arange(users.size), counts)
        cols = np.concatenate([data.train_products[splits[u] : splits[u + 1]] for u in users])
        scores[rows, cols.astype(np.int64)] = -np.inf
        target_scores = scores[np.arange(users.size), targets][:, None]
        lower_index = np.arange(data.n_products)[None, :] < targets[:, None]
        ranks[lo : lo + chunk] = ((scores > target_scores) | ((scores == target_scores) & lower_index)).sum(
            axis=1
        )
    return ranks


def hit_rate_and_ndcg(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    if ranks.size == 0:
        return 0.0, 0.0
    hits = ranks < k
    return float(hits.mean()), float(np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def popularity_scores(data: Interactions) -> ScoreAll:
    """The baseline: every user gets the products most bought in the training split."""
    return lambda users: np.broadcast_to(data.train_popularity, (users.size, data.n_products))
