"""Training hyperparameters; kept free of TensorFlow so the CLI can show defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8  # at most; early stopping on the validation holdout may end sooner
    embedding_dim: int = 64
    batch_size: int = 1024  # training pairs per step (whole users, scored against the whole catalogue)
    min_steps_per_epoch: int = 100  # a smaller data set makes several passes per epoch
    learning_rate: float = 0.005
    l2: float = 0.1  # per embedding row: squared norm of each batch user and of every product
    validation_share: float = 0.1  # users (with 3+ products) whose last training product validates
    patience: int = 2  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
