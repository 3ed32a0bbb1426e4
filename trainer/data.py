"""From purchase rows to implicit-feedback training data with a leave-one-out split.

Positives are distinct (user, product) pairs; a pair's time is its first purchase. Each user
with at least two distinct products has the product they bought most recently for the first
time held out: a re-purchase of something already bought is excluded from recommendations
by design, so it would be an impossible target. Users with one product train only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interactions:
    user_ids: np.ndarray  # index -> raw user id (str), sorted
    product_ids: np.ndarray  # index -> raw product id (str), sorted
    train_users: np.ndarray  # int32 pair arrays, sorted by (user, product)
    train_products: np.ndarray
    train_counts: np.ndarray  # float32 per training pair: how often the user bought the product
    train_latest: np.ndarray  # bool per training pair: the user's most recent training product
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
        .agg(["min", "size"])
        .reset_index()
        .sort_values(["u", "min", "p"], kind="stable")
    )
    pair_users = first["u"].to_numpy(np.int32)
    pair_products = first["p"].to_numpy(np.int32)
    distinct = np.bincount(pair_users, minlength=n_users)
    last_of_user = np.append(pair_users[1:] != pair_users[:-1], True)
    held_out = last_of_user & (distinct[pair_users] >= 2)
    # In time order, a training pair followed by the held-out one is its user's latest.
    latest = (~held_out & np.append(held_out[1:], False)) | (last_of_user & ~held_out)

    train = np.lexsort((pair_products[~held_out], pair_users[~held_out]))
    train_users = pair_users[~held_out][train]
    train_products = pair_products[~held_out][train]
    everything = np.lexsort((pair_products, pair_users))

    return Interactions(
        user_ids=np.asarray(user_ids, dtype=object),
        product_ids=np.asarray(product_ids, dtype=object),
        train_users=train_users,
        train_products=train_products,
        train_counts=first["size"].to_numpy(np.float32)[~held_out][train],
        train_latest=latest[~held_out][train],
        test_users=pair_users[held_out],
        test_products=pair_products[held_out],
        purchased_splits=_row_splits(pair_users, n_users),
        purchased_products=pair_products[everything],
        popularity=(np.bincount(pair_products, minlength=n_products) / n_users).astype(np.float32),
        train_popularity=(np.bincount(train_products, minlength=n_products) / n_users).astype(np.float32),
    )


def validation_split(
    data: Interactions, share: float, rng: np.random.Generator
) -> tuple[np.ndarray, Interactions]:
    """Hold out the latest training product of a random `share` of the users with 2+ training
    products, for early stopping (the test holdout stays unseen): (mask of the training pairs
    left to fit, the data with those validation pairs as its "test" pairs)."""
    eligible = np.flatnonzero(np.bincount(data.train_users, minlength=data.n_users) >= 2)
    chosen = np.zeros(data.n_users, dtype=bool)
    chosen[rng.choice(eligible, size=round(share * eligible.size), replace=False)] = True
    valid = data.train_latest & chosen[data.train_users]
    fit = ~valid
    view = replace(
        data,
        train_users=data.train_users[fit],
        train_products=data.train_products[fit],
        train_counts=data.train_counts[fit],
        train_latest=data.train_latest[fit],
        test_users=data.train_users[valid],
        test_products=data.train_products[valid],
    )
    return fit, view
