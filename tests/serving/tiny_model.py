"""A small real SavedModel with the three signatures of docs/contracts.md, for the server's own tests.

It scores (user, product) pairs from a fixed random matrix; unknown users get the popularity row
and `fallback` true. `offset` shifts every score, so two versions answer differently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

USERS = [f"u{i}" for i in range(6)]
PRODUCTS = [f"p{i}" for i in range(120)]
TOP = 100


class TinyRecommender(tf.Module):
    def __init__(self, offset: float, purchased: dict[str, list[str]], empty_products: bool) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        scores = rng.random((len(USERS), len(PRODUCTS)), dtype=np.float32) + offset
        popularity = np.linspace(1.0, 0.0, len(PRODUCTS), dtype=np.float32) + offset
        # Row len(USERS) is the unknown user: the popularity ranking.
        self.scores = tf.Variable(np.vstack([scores, popularity[None, :]]), trainable=False)
        mask = np.zeros((len(USERS) + 1, len(PRODUCTS)), dtype=bool)
        for user, items in purchased.items():
            for item in items:
                mask[USERS.index(user), PRODUCTS.index(item)] = True
        self.purchased = tf.constant(mask)
        self.products = tf.constant(["" for _ in PRODUCTS] if empty_products else PRODUCTS)
        self.user_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(USERS, tf.range(len(USERS), dtype=tf.int64)), len(USERS)
        )
        self.product_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(PRODUCTS, tf.range(len(PRODUCTS), dtype=tf.int64)), -1
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def score(self, users: tf.Tensor, products: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = self.user_table.lookup(users)
        cols = self.product_table.lookup(products)
        found = tf.gather_nd(self.scores, tf.stack([rows, tf.maximum(cols, 0)], axis=1))
        return {"scores": tf.where(cols >= 0, found, tf.zeros_like(found))}

    def _top(self, users: tf.Tensor, k: tf.Tensor, exclude: bool) -> dict[str, tf.Tensor]:
        rows = self.user_table.lookup(users)
        scores = tf.gather(self.scores, rows)
        if exclude:
            scores = tf.where(tf.gather(self.purchased, rows), tf.fill(tf.shape(scores), -1e9), scores)
        top = tf.math.top_k(scores, k=tf.clip_by_value(tf.reduce_max(k), 1, TOP))
        return {
            "products": tf.gather(self.products, top.indices),
            "scores": top.values,
            "fallback": tf.equal(rows, len(USERS)),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32)])
    def recommend(self, users: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, k, exclude=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32)])
    def recommend_with_purchased(self, users: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, k, exclude=False)


def save_tiny_model(
    version_dir: Path,
    offset: float = 0.0,
    purchased: dict[str, list[str]] | None = None,
    empty_products: bool = False,
) -> Path:
    """Write the SavedModel into `version_dir` (e.g. `<base>/<name>/<version>`) and return it."""
    module = TinyRecommender(offset, purchased or {"u0": ["p0", "p1"]}, empty_products)
    tf.saved_model.save(
        module,
        str(version_dir),
        signatures={
            "serving_default": module.score,
            "recommend": module.recommend,
            "recommend_with_purchased": module.recommend_with_purchased,
        },
    )
    return version_dir
