"""The collaborative filter: user and product embeddings and a dot product with biases, trained
as a softmax over the whole catalogue.

Keras trains it; `Scorer` holds the trained weights as plain variables and is the one
implementation of the scoring maths: the evaluation scores with it and the exported SavedModel
is built from its weights (a test checks the served scores equal its own), so the evaluated
model is exactly the served one. It has no dropout or other randomness: the same request always
gets the same scores.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class CollaborativeFilter(keras.Model):
    """users (int indices) -> logits [batch, products] over the whole catalogue: dot(u, p) +
    product bias. A user bias would cancel in the softmax, so it stays zero (the Scorer has one)."""

    def __init__(self, n_users: int, n_products: int, embedding_dim: int) -> None:
        super().__init__(name="collaborative_filter")
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.user_embedding = self.add_weight(
            shape=(n_users, embedding_dim), initializer=init, name="user_embedding"
        )
        self.product_embedding = self.add_weight(
            shape=(n_products, embedding_dim), initializer=init, name="product_embedding"
        )
        self.product_bias = self.add_weight(shape=(n_products,), initializer="zeros", name="product_bias")

    def call(self, users: tf.Tensor) -> tf.Tensor:
        u = tf.gather(self.user_embedding, users)
        return tf.matmul(u, self.product_embedding, transpose_b=True) + self.product_bias[None, :]

    def weights_by_name(self) -> dict[str, np.ndarray]:
        """The trained weights by name, as the Scorer expects them."""
        return {
            "user_embedding": self.user_embedding.numpy(),
            "product_embedding": self.product_embedding.numpy(),
            "user_bias": np.zeros(self.user_embedding.shape[0], np.float32),
            "product_bias": self.product_bias.numpy(),
        }


class Scorer(tf.Module):
    """score(user, product) = dot(u, p) + user bias + product bias, for pairs or all products."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__(name="scorer")

        def var(name: str) -> tf.Variable:
            return tf.Variable(np.asarray(weights[name], dtype=np.float32), trainable=False, name=name)

        self.users = var("user_embedding")
        self.products = var("product_embedding")
        self.user_bias = var("user_bias")
        self.product_bias = var("product_bias")

    def score_pairs(self, users: tf.Tensor, products: tf.Tensor) -> tf.Tensor:
        """users, products: int [batch] -> float32 [batch]."""
        u = tf.gather(self.users, users)
        p = tf.gather(self.products, products)
        match = tf.reduce_sum(u * p, axis=-1)
        return match + tf.gather(self.user_bias, users) + tf.gather(self.product_bias, products)

    def score_all(self, users: tf.Tensor) -> tf.Tensor:
        """users: int [batch] -> float32 [batch, products], every product scored."""
        u = tf.gather(self.users, users)
        # One matrix product, equal to score_pairs up to float32 rounding (about 1e-6).
        match = tf.matmul(u, self.products, transpose_b=True)
        return match + tf.gather(self.user_bias, users)[:, None] + self.product_bias[None, :]
