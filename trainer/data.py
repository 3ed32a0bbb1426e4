"""From purchase rows to implicit-feedback training data with a leave-one-out split.

Positives are distinct (user, product) pairs; a pair's time is its first purchase. Each user
with at least two distinct products has the product they bought most recently for the first
time held out: a re-purchase of something already bought is excluded from recommendations
by design, so it would be an impossible target. Users with one product train only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interactions:
    user_ids: np.ndarray  # index -> raw user id (str), sorted
    product_ids: np.ndarray  # index -> raw product id (str), sorted
    train_users: np.ndarray  # int32 pair arrays, sorted by (user, product)
    train_products: np.ndarray
    test_users: np.ndarray  # int32, one held-out product per evaluated user
    test_products: np.ndarray
    purchased_splits: np.ndarray  # int64 [users+1]: every purchased product per user (all history)
    purchased_products: np.ndarray  # int32 values of that ragged array, sorted within a user
    popularity: np.ndarray  # float32 [products]: share of users who bought it (all history)
    train_popularity: np.ndarray  # float32 [products]: the same over the training pairs only

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_products(self) -> int:
        return len(self.product_ids)


def _row_splits(users: np.ndarray, n_users: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))]).astype(np.int64)


def build_interactions(purchases: pd.DataFrame) -> Interactions:
    if purchases.empty:
        raise ValueError("the snapshot has no purchases")
    user_codes, user_ids = pd.factorize(purchases["user"].astype(str), sort=True)
    product_codes, product_ids = pd.factorize(purchases["product"].astype(str), sort=True)
    n_users, n_products = len(user_ids), len(product_ids)

    first = (
        pd.DataFrame({"u": user_codes, "p": product_codes, "t": purchases["timestamp"].to_numpy()})
        .groupby(["u", "p"], sort=False)["t"]
        .min()
        .reset_index()
        .sort_values(["u", "t", "p"], kind="stable")
    )
    pair_users = first["u"].to_numpy(np.int32)
    pair_products = first["p"].to_numpy(np.int32)
    distinct = np.bincount(pair_users, minlength=n_users)
    last_of_user = np.append(pair_users[1:] != pair_users[:-1], True)
    held_out = last_of_user & (distinct[pair_users] >= 2)

    train = np.lexsort((pair_products[~held_out], pair_users[~held_out]))
    train_users = pair_users[~held_out][train]
    train_products = pair_products[~held_out][train]
    everything = np.lexsort((pair_products, pair_users))

    return Interactions(
        user_ids=np.asarray(user_ids, dtype=object),
        product_ids=np.asarray(product_ids, dtype=object),
        train_users=train_users,
        train_products=train_products,
        test_users=pair_users[held_out],
        test_products=pair_products[held_out],
        purchased_splits=_row_splits(pair_users, n_users),
        purchased_products=pair_products[everything],
        popularity=(np.bincount(pair_products, minlength=n_products) / n_users).astype(np.float32),
        train_popularity=(np.bincount(train_products, minlength=n_products) / n_users).astype(np.float32),
    )


def sample_epoch(
    data: Interactions, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training positive plus `negatives` uniformly sampled unbought products per positive,
    shuffled: (users, products, labels)."""
    positives = data.train_users.astype(np.int64) * data.n_products + data.train_products
    neg_users = np.repeat(data.train_users, negatives)
    neg_products = rng.integers(0, data.n_products, size=neg_users.size, dtype=np.int32)
    # Redraw negatives that hit a bought product (a few rounds; leftovers are rare and harmless).
    for _ in range(3):
        codes = neg_users.astype(np.int64) * data.n_products + neg_products
        hit = np.searchsorted(positives, codes)
        clash = positives[np.minimum(hit, positives.size - 1)] == codes
        if not clash.any():
            break
        neg_products[clash] = rng.integers(0, data.n_products, size=int(clash.sum()), dtype=np.int32)
    users = np.concatenate([data.train_users, neg_users])
    products = np.concatenate([data.train_products, neg_products])
    labels = np.concatenate([np.ones(data.train_users.size), np.zeros(neg_users.size)]).astype(np.float32)
    order = rng.permutation(users.size)
    return users[order], products[order], labels[order]
