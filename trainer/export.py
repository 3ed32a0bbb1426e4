"""The SavedModel TF-Serving loads as-is, with the three signatures of docs/contracts.md.

Raw string ids are looked up inside the graph (`StaticHashTable`, default -1), so an unseen
id is an answer, not an error. Each user's purchased products are kept as a ragged array
(row splits + values) and expanded to a [batch, products] mask per request; a dense
users x products matrix would be far too big. Unknown users are scored by popularity in
every signature, so `serving_default` and `recommend` agree for them too.
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


class RecommenderModule(tf.Module):
    def __init__(self, trained: TrainedModel) -> None:
        super().__init__(name="recommender")
        data = trained.data
        self.n_products = data.n_products
        self.scorer: Scorer = trained.scorer
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
        self.popularity = tf.Variable(data.popularity, trainable=False, name="popularity")

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
        personal = self.scorer.score_pairs(tf.maximum(user, 0), safe_product)
        scores = tf.where(user >= 0, personal, tf.gather(self.popularity, safe_product))
        return {"scores": tf.where(product >= 0, scores, tf.constant(PAD_SCORE, tf.float32))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="users")])
    def recommend(self, users: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, exclude_purchased=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="users")])
    def recommend_with_purchased(self, users: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top(users, exclude_purchased=False)

    def _top(self, users: tf.Tensor, exclude_purchased: bool) -> dict[str, tf.Tensor]:
        user = self.user_index.lookup(users)
        known = user >= 0
        safe_user = tf.maximum(user, 0)
        batch = tf.shape(users)[0]
        popular = tf.broadcast_to(self.popularity[None, :], [batch, self.n_products])
        scores = tf.where(known[:, None], self.scorer.score_all(safe_user), popular)
        if exclude_purchased:
            bought = tf.gather(
                tf.RaggedTensor.from_row_splits(
                    self.purchased_products, self.purchased_splits, validate=False
                ),
                safe_user,
            )
            positions = tf.stack([bought.value_rowids(), bought.flat_values], axis=1)
            shape = tf.stack([tf.cast(batch, tf.int64), tf.constant(self.n_products, tf.int64)])
            hits = tf.scatter_nd(positions, tf.ones_like(bought.flat_values, tf.float32), shape)
            # Unknown users were looked up as index 0: their (borrowed) purchases are not excluded.
            mask = (hits > 0) & known[:, None]
            scores = tf.where(mask, tf.constant(PAD_SCORE, tf.float32), scores)
        if self.pad_columns:
            scores = tf.concat([scores, tf.fill([batch, self.pad_columns], tf.constant(PAD_SCORE))], axis=1)
        top = tf.math.top_k(scores, k=MAX_K)
        products = tf.gather(self.product_ids, top.indices)
        products = tf.where(top.values <= PAD_SCORE, tf.constant(PAD_PRODUCT), products)
        return {"products": products, "scores": top.values, "fallback": tf.logical_not(known)}


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
