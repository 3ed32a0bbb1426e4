"""Training: implicit feedback with sampled negatives, then leave-one-out evaluation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.schemas import ModelMetrics
from common.snapshots import Snapshot
from trainer.config import TrainConfig
from trainer.data import Interactions, build_interactions, sample_epoch
from trainer.evaluate import held_out_ranks, hit_rate_and_ndcg, popularity_scores
from trainer.model import Scorer, build_model, model_weights

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """Everything the export needs: weights, id vocabularies, purchases, popularity, metrics."""

    data: Interactions
    scorer: Scorer
    config: TrainConfig
    metrics: ModelMetrics
    snapshot_id: str


class _Epochs(keras.utils.PyDataset):
    """Batches of one epoch; negatives are redrawn at every epoch's end."""

    def __init__(self, data: Interactions, config: TrainConfig, rng: np.random.Generator) -> None:
        super().__init__()
        self.data, self.config, self.rng = data, config, rng
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        self.users, self.products, self.labels = sample_epoch(self.data, self.config.negatives, self.rng)

    def __len__(self) -> int:
        return -(-self.labels.size // self.config.batch_size)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        part = slice(index * self.config.batch_size, (index + 1) * self.config.batch_size)
        return {"user": self.users[part], "product": self.products[part]}, self.labels[part]


def train(snapshot: Snapshot, config: TrainConfig | None = None, verbose: int | str = "auto") -> TrainedModel:
    """Fit the collaborative filter on the snapshot and evaluate it against popularity."""
    config = config or TrainConfig()
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = build_interactions(snapshot.purchases)
    log.info(
        "training on %d users, %d products, %d positive pairs (%d held out)",
        data.n_users,
        data.n_products,
        data.train_users.size,
        data.test_users.size,
    )
    model = build_model(data.n_users, data.n_products, config.embedding_dim, config.mlp_units, config.l2)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    batches = _Epochs(data, config, rng)
    model.fit(batches, epochs=config.epochs, verbose=verbose)
    train_seconds = time.monotonic() - started

    scorer = Scorer(model_weights(model))
    hr, ndcg = hit_rate_and_ndcg(held_out_ranks(data, lambda u: scorer.score_all(tf.constant(u)).numpy()))
    pop_hr, pop_ndcg = hit_rate_and_ndcg(held_out_ranks(data, popularity_scores(data)))
    metrics = ModelMetrics(
        hr_at_10=hr,
        ndcg_at_10=ndcg,
        popularity_hr_at_10=pop_hr,
        popularity_ndcg_at_10=pop_ndcg,
        evaluated_users=int(data.test_users.size),
        train_seconds=round(train_seconds, 1),
        snapshot_id=snapshot.pointer.snapshot_id,
    )
    return TrainedModel(
        data=data, scorer=scorer, config=config, metrics=metrics, snapshot_id=snapshot.pointer.snapshot_id
    )
