"""Training: a softmax over the whole catalogue with early stopping, then leave-one-out evaluation."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.schemas import ModelMetrics
from common.snapshots import Snapshot
from trainer.config import TrainConfig
from trainer.data import Interactions, build_interactions, validation_split
from trainer.evaluate import held_out_ranks, hit_rate_and_ndcg, popularity_scores
from trainer.model import CollaborativeFilter, Scorer

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """Everything the export needs: weights, id vocabularies, purchases, popularity, metrics."""

    data: Interactions
    scorer: Scorer
    config: TrainConfig
    metrics: ModelMetrics
    snapshot_id: str


def pair_weights(counts: np.ndarray) -> np.ndarray:
    """A pair bought more often weighs more, with diminishing returns."""
    return (1.0 + np.log(counts)).astype(np.float32)


class _Fit:
    """The training step: full softmax cross-entropy of each user's products over the catalogue,
    weighted by purchase counts, plus L2 on the embedding rows each pair uses."""

    def __init__(
        self, data: Interactions, fit: np.ndarray, model: CollaborativeFilter, config: TrainConfig
    ) -> None:
        users = data.train_users[fit]
        self.splits = tf.constant(
            np.concatenate([[0], np.cumsum(np.bincount(users, minlength=data.n_users))])
        )
        self.products = tf.constant(data.train_products[fit])
        self.weights = tf.constant(pair_weights(data.train_counts[fit]))
        self.users = np.unique(users).astype(np.int32)
        self.model, self.l2 = model, config.l2
        self.optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=0.0)

    @tf.function(reduce_retracing=True)
    def step(self, users: tf.Tensor) -> tf.Tensor:
        starts = tf.gather(self.splits, users)
        counts = tf.gather(self.splits, users + 1) - starts
        pairs = tf.ragged.range(starts, starts + counts).flat_values
        rows = tf.repeat(tf.range(tf.size(users)), tf.cast(counts, tf.int32))
        products = tf.gather(self.products, pairs)
        weights = tf.gather(self.weights, pairs)
        model = self.model
        with tf.GradientTape() as tape:
            logits = model(users)
            positive = tf.gather_nd(logits, tf.stack([rows, products], axis=1))
            nll = tf.gather(tf.reduce_logsumexp(logits, axis=1), rows) - positive
            norms = tf.reduce_sum(tf.square(tf.gather(model.user_embedding, users)), axis=1)
            squares = tf.gather(norms, rows) + tf.reduce_sum(
                tf.square(tf.gather(model.product_embedding, products)), axis=1
            )
            loss = tf.reduce_sum(weights * (nll + self.l2 * squares)) / tf.reduce_sum(weights)
        variables = model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss


def _fit(data: Interactions, config: TrainConfig, verbose: int | str) -> CollaborativeFilter:
    """Train for up to `config.epochs`, keeping the epoch with the best validation NDCG@10."""
    rng = np.random.default_rng(config.seed)
    fit, validation = validation_split(data, config.validation_share, rng)
    model = CollaborativeFilter(data.n_users, data.n_products, config.embedding_dim)
    trainer = _Fit(data, fit, model, config)
    # batch_size counts training pairs, as before; a step takes whole users, about that many pairs.
    per_step = max(1, round(config.batch_size * trainer.users.size / int(fit.sum())))
    # A small data set repeats passes within an epoch, so every epoch makes enough updates to learn.
    steps = max(-(-trainer.users.size // per_step), config.min_steps_per_epoch)
    passes = -(-steps * per_step // trainer.users.size)
    bar = verbose != 0 and sys.stderr.isatty()  # a terminal gets Keras's bar, a log plain lines
    best, best_weights, waited = -1.0, model.get_weights(), 0
    started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        progress = keras.utils.Progbar(steps) if bar else None
        order = np.concatenate([rng.permutation(trainer.users) for _ in range(passes)])
        total = 0.0
        for i in range(steps):
            batch = order[i * per_step : (i + 1) * per_step]
            loss = float(trainer.step(tf.constant(batch)))
            total += loss
            if progress:
                progress.update(i + 1, [("loss", loss)])
        if validation.test_users.size == 0:  # nothing to validate on: keep the last epoch
            best_weights = model.get_weights()
            ndcg = float("nan")
        else:
            ndcg = hit_rate_and_ndcg(held_out_ranks(validation, lambda u: model(tf.constant(u)).numpy()))[1]
        if verbose != 0:
            print(
                f"epoch {epoch}/{config.epochs}: loss {total / steps:.4f}, validation NDCG@10 {ndcg:.4f}, "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        if ndcg > best:
            best, best_weights, waited = ndcg, model.get_weights(), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.set_weights(best_weights)
    return model


def train(snapshot: Snapshot, config: TrainConfig | None = None, verbose: int | str = "auto") -> TrainedModel:
    """Fit the collaborative filter on the snapshot and evaluate it against popularity."""
    config = config or TrainConfig()
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    data = build_interactions(snapshot.purchases)
    log.info(
        "training on %d users, %d products, %d positive pairs (%d held out)",
        data.n_users,
        data.n_products,
        data.train_users.size,
        data.test_users.size,
    )
    model = _fit(data, config, verbose)
    train_seconds = time.monotonic() - started

    scorer = Scorer(model.weights_by_name())
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
