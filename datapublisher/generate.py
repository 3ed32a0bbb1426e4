"""Synthetic purchase history with the structure collaborative filtering needs.

Each user has a latent taste vector and each product a latent profile; a purchase picks a
product with probability proportional to popularity x exp(taste . profile), so there is both
a popularity signal (a power law over products) and a personal one for a model to learn.
Some purchases repeat an earlier product of the same user, and every row has a timestamp.
Everything is drawn from one seeded generator in a fixed order, so a seed gives the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

LATENT_DIM = 8
TASTE_STRENGTH = 1.0  # how much the latent match outweighs popularity
POPULARITY_EXPONENT = 1.0  # Zipf exponent of product popularity
REPEAT_FRACTION = 0.15  # share of a user's later purchases that re-buy an earlier product
ACTIVITY_SIGMA = 0.8  # spread of the lognormal per-user activity; larger: more light buyers, a heavier tail
HISTORY_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
HISTORY_SPAN_MS = 365 * 24 * 3600 * 1000
USER_CHUNK = 2000  # users sampled at once: keeps the chunk's users x products matrix small


@dataclass(frozen=True)
class Preset:
    users: int
    products: int
    purchases: int
    activity_sigma: float = ACTIVITY_SIGMA
    repeat_fraction: float = REPEAT_FRACTION


PRESETS = {
    # Small enough for tests (a second to generate, seconds to train) yet learnable.
    "small": Preset(users=2000, products=300, purchases=40_000),
    "default": Preset(users=50_000, products=5_000, purchases=1_000_000),
}
# The bootstrap, the demo and the Helm chart's dataPreset enum mirror PRESETS (with training settings
# per preset); the shapes only `datapublisher publish --preset` and the bench offer go here.
ALL_PRESETS = PRESETS | {
    # Few products, long tail: most users buy 1-5 times (a few buy a lot), re-buying is common.
    "sparse": Preset(users=25_000, products=300, purchases=150_000, activity_sigma=1.6, repeat_fraction=0.4),
}


def generate_purchases(
    users: int,
    products: int,
    purchases: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    activity_sigma: float = ACTIVITY_SIGMA,
    repeat_fraction: float = REPEAT_FRACTION,
) -> pd.DataFrame:
    """Rows `user, product, quantity, timestamp`; every user buys at least once.

    `progress(done_users, users)` is called after each chunk of users. `activity_sigma` spreads the
    purchases per user, `repeat_fraction` is the share of later purchases that re-buy.
    """
    if users < 1 or products < 1:
        raise ValueError("users and products must be at least 1")
    if purchases < users:
        raise ValueError(f"purchases ({purchases}) must be at least users ({users}): every user buys once")
    rng = np.random.default_rng(seed)

    tastes = rng.normal(size=(users, LATENT_DIM)) / np.sqrt(LATENT_DIM)
    profiles = rng.normal(size=(products, LATENT_DIM))
    # Power-law popularity over a random order of products, so popular ids are not just the low ones.
    popularity_rank = rng.permutation(products)
    log_popularity = -POPULARITY_EXPONENT * np.log1p(popularity_rank)

    # A lognormal activity level spreads purchases unevenly across users (heavy buyers exist).
    activity = rng.lognormal(mean=0.0, sigma=activity_sigma, size=users)
    counts = 1 + rng.multinomial(purchases - users, activity / activity.sum())
    starts = np.concatenate([[0], np.cumsum(counts)])

    chosen = np.empty(purchases, dtype=np.int64)
    for lo in range(0, users, USER_CHUNK):
        hi = min(lo + USER_CHUNK, users)
        logits = TASTE_STRENGTH * np.sqrt(LATENT_DIM) * tastes[lo:hi] @ profiles.T + log_popularity
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        cdf[:, -1] = 1.0
        # Inverse-CDF sampling for all rows of the chunk at once: shifting row r's CDF by r makes
        # the flattened array monotonic, so one searchsorted serves every user.
        rows = np.repeat(np.arange(hi - lo), counts[lo:hi])
        draws = rng.random(rows.size) + rows
        flat = (cdf + np.arange(hi - lo)[:, None]).ravel()
        chosen[starts[lo] : starts[hi]] = np.searchsorted(flat, draws) - rows * products
        if progress is not None:
            progress(hi, users)
    np.clip(chosen, 0, products - 1, out=chosen)

    user_of_row = np.repeat(np.arange(users), counts)
    position = np.arange(purchases) - starts[user_of_row]
    # Repeat purchases: some later rows copy the product of an earlier row of the same user.
    repeat = (position > 0) & (rng.random(purchases) < repeat_fraction)
    earlier = starts[user_of_row] + np.floor(rng.random(purchases) * position).astype(np.int64)
    # Resolve chains (a repeat of a repeat) until every repeat copies a product actually bought.
    resolved = chosen
    while True:
        updated = np.where(repeat, resolved[earlier], chosen)
        if np.array_equal(updated, resolved):
            break
        resolved = updated
    chosen = resolved

    # Timestamps: sorted within each user, so row order is each user's purchase order.
    offsets = rng.integers(0, HISTORY_SPAN_MS, size=purchases)
    order = np.lexsort((offsets, user_of_row))
    timestamps = HISTORY_START_MS + offsets[order]
    quantity = rng.geometric(0.7, size=purchases).astype(np.int32)

    return pd.DataFrame(
        {
            "user": np.char.add("u", user_of_row.astype(str)),
            "product": np.char.add("p", chosen.astype(str)),
            "quantity": quantity,
            "timestamp": timestamps.astype(np.int64),
        }
    )
