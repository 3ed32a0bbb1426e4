"""The SavedModel TF-Serving loads as-is, with the three signatures of docs/contracts.md.

Raw string ids are looked up inside the graph (`StaticHashTable`, default -1), so an unseen
id is an answer, not an error. Each user's purchased products are kept as a ragged array
(row splits + values) and written into the batch's [batch, products] scores per request; a
dense users x products matrix would be far too big. `recommend` takes each user's `k` and
returns only max(k) columns: top_k and the string outputs cost in proportion to the width.
Unknown users are scored by popularity in every signature, so `serving_default` and
`recommend` agree for them too.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.schemas import MAX_K, now_ms
from common.storage import EXPORT_METADATA
from trainer.model import Scorer
from trainer.train import TrainedModel

# Score of padding slots (catalogue smaller than MAX_K, or everything already bought) and of
# unknown products in serving_default. A finite float, so it survives JSON; product id "".
PAD_SCORE = -1e30
PAD_PRODUCT = ""
# Inputs of `recommend` and `recommend_with_purchased`: each user with its own k.
RECOMMEND_INPUTS = [tf.TensorSpec([None], tf.string, name="users"), tf.TensorSpec([None], tf.int32, name="k")]


class RecommenderModule(tf.Module):
    def __init__(self, trained: TrainedModel) -> None:
        super().__init__(name="recommender")
        data = trained.data
        scorer: Scorer = trained.scorer
        self.user_index = _lookup(data.user_ids)
        self.product_index = _lookup(data.product_ids)
        # Padded to MAX_K ids so top_k over a small catalogue still returns MAX_K columns.
        pad = max(0, MAX_K - data.n_products)
        self.product_ids = tf.constant(np.concatenate([data.product_ids.astype(str), [PAD_PRODUCT] * pad]))
        self.pad_columns = pad
        self.purchased_splits = tf.Variable(data.purchased_splits, trainable=False, name="purchased_splits")
        self.purchased_products = tf.Variable(
            data.purchased_products.astype(np.int64), trainable=False, name="purchased_products"
        )
        self.n_users = data.n_users
        # Only augmented rows are kept, scored with one matrix product: rows [u, b_u, 1, 0]
        # against columns [p, 1, b_p, popularity], plus a last row [0, 0, 0, 1] for unknown users,
        # whose scores are then the popularity. No bias broadcasts, no select, and the embeddings
        # are stored once.
        users = scorer.users.numpy()
        ones, zeros = np.ones((len(users), 1), np.float32), np.zeros((len(users), 1), np.float32)
        unknown = np.zeros((1, users.shape[1] + 3), np.float32)
        unknown[0, -1] = 1.0
        user_rows = np.concatenate(
            [
                np.concatenate([users, scorer.user_bias.numpy()[:, None], ones, zeros], axis=1),
                unknown,
            ]
        )
        product_rows = np.concatenate(
            [
                scorer.products.numpy(),
                np.ones((data.n_products, 1), np.float32),
                scorer.product_bias.numpy()[:, None],
                data.popularity[:, None],
            ],
            axis=1,
        )
        self.user_rows = tf.Variable(user_rows, trainable=False, name="user_rows")
        self.product_rows = tf.Variable(product_rows, trainable=False, name="product_rows")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="users"),
            tf.TensorSpec([None], tf.string, name="products"),
        ]
    )
    def score(self, users: tf.Tensor, products: tf.Tensor) -> dict[str, tf.Tensor]:
        user = self.user_index.lookup(users)
        product = self.product_index.lookup(products)
        safe_product = tf.maximum(product, 0)
        rows = self._user_rows(user)
        scores = tf.reduce_sum(rows * tf.gather(self.product_rows, safe_product), axis=1)
        return {"scores": tf.where(product >= 0, scores, tf.constant(PAD_SCORE, tf.float32))}

    @tf.function(input_signature=RECOMMEND_INPUTS)
    def recommend(self, users: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, k, exclude_purchased=True)

    @tf.function(input_signature=RECOMMEND_INPUTS)
    def recommend_with_purchased(self, users: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, k, exclude_purchased=False)

    def _user_rows(self, user: tf.Tensor) -> tf.Tensor:
        """Each looked-up user's augmented row; unknown users (-1) get the last."""
        return tf.gather(self.user_rows, tf.where(user >= 0, user, self.n_users))

    def _top(self, users: tf.Tensor, k: tf.Tensor, exclude_purchased: bool) -> dict[str, tf.Tensor]:
        tf.debugging.assert_equal(
            tf.size(k), tf.size(users), message="k must hold one value per user (same length as users)"
        )
        k = tf.clip_by_value(k, 1, MAX_K)
        width = tf.clip_by_value(tf.reduce_max(k), 1, MAX_K)  # an empty batch's max is INT_MIN
        user = self.user_index.lookup(users)
        known = user >= 0
        safe_user = tf.maximum(user, 0)
        batch = tf.shape(users)[0]
        scores = tf.matmul(self._user_rows(user), self.product_rows, transpose_b=True)
        if exclude_purchased:
            # Each user's purchases are purchased_products[splits[u]:splits[u + 1]]; unknown
            # users have none. Plain index ops: a RaggedTensor gather cost 0.6 ms more per call.
            starts = tf.gather(self.purchased_splits, safe_user)
            counts = tf.where(known, tf.gather(self.purchased_splits, safe_user + 1) - starts, 0)
            rows = tf.repeat(tf.range(tf.size(users, out_type=tf.int64)), counts)
            bought = tf.gather(self.purchased_products, tf.ragged.range(starts, starts + counts).flat_values)
            positions = tf.stack([rows, bought], axis=1)
            scores = tf.tensor_scatter_nd_update(
                scores, positions, tf.fill([tf.shape(positions)[0]], tf.constant(PAD_SCORE, tf.float32))
            )
        if self.pad_columns:
            scores = tf.concat([scores, tf.fill([batch, self.pad_columns], tf.constant(PAD_SCORE))], axis=1)
        top = tf.math.top_k(scores, k=width)
        # Columns beyond a user's own k are padding, like products that are not there.
        beyond = tf.range(width)[None, :] >= k[:, None]
        padded = beyond | (top.values <= PAD_SCORE)
        products = tf.where(padded, tf.constant(PAD_PRODUCT), tf.gather(self.product_ids, top.indices))
        values = tf.where(padded, tf.constant(PAD_SCORE, tf.float32), top.values)
        return {"products": products, "scores": values, "fallback": tf.logical_not(known)}


def _lookup(ids: np.ndarray) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids.astype(str)), tf.range(len(ids), dtype=tf.int64), tf.string, tf.int64
        ),
        default_value=-1,
    )


def export_saved_model(model: TrainedModel, local_dir: Path) -> Path:
    """Write the SavedModel and `assets.extra/metadata.json` into `local_dir`; return it."""
    local_dir = Path(local_dir)
    module = RecommenderModule(model)
    tf.saved_model.save(
        module,
        str(local_dir),
        signatures={
            "serving_default": module.score,
            "recommend": module.recommend,
            "recommend_with_purchased": module.recommend_with_purchased,
        },
    )
    metadata = {
        "model": "recommender",
        "snapshot_id": model.snapshot_id,
        "exported_at": now_ms(),
        "metrics": model.metrics.model_dump(mode="json"),
        "config": asdict(model.config),
        "users": model.data.n_users,
        "products": model.data.n_products,
        "k_max": MAX_K,
        "pad_product": PAD_PRODUCT,
        "pad_score": PAD_SCORE,
        "signatures": ["serving_default", "recommend", "recommend_with_purchased"],
    }
    path = local_dir / EXPORT_METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2))
    return local_dir
