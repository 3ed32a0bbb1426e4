"""Training hyperparameters; kept free of TensorFlow so the CLI can show defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    embedding_dim: int = 32
    batch_size: int = 8192
    learning_rate: float = 0.005
    negatives: int = 4  # sampled unbought products per positive, redrawn every epoch
    mlp_units: int = 0  # 0: plain dot product; >0: a hidden layer of this width over u * p
    l2: float = 1e-6
    seed: int = 0
