"""The collaborative filter: user and product embeddings, a dot product with biases, and an
optional small MLP head over the embeddings' element-wise product, trained as a softmax over
the whole catalogue.

Keras trains it; `Scorer` holds the trained weights as plain variables and is the one
implementation of the scoring maths, used by the evaluation and by the exported SavedModel,
so the evaluated model is exactly the served one. It has no dropout or other randomness:
the same request always gets the same scores.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class CollaborativeFilter(keras.Model):
    """users (int indices) -> logits [batch, products] over the whole catalogue: match(u * p) +
    product bias. A user bias would cancel in the softmax, so it stays zero (the Scorer has one)."""

    def __init__(self, n_users: int, n_products: int, embedding_dim: int, mlp_units: int = 0) -> None:
        super().__init__(name="collaborative_filter")
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.user_embedding = self.add_weight(
            shape=(n_users, embedding_dim), initializer=init, name="user_embedding"
        )
        self.product_embedding = self.add_weight(
            shape=(n_products, embedding_dim), initializer=init, name="product_embedding"
        )
        self.product_bias = self.add_weight(shape=(n_products,), initializer="zeros", name="product_bias")
        self.hidden = (
            keras.layers.Dense(mlp_units, activation="relu", name="mlp_hidden") if mlp_units else None
        )
        self.out = keras.layers.Dense(1, name="mlp_out") if mlp_units else None

    def call(self, users: tf.Tensor) -> tf.Tensor:
        u = tf.gather(self.user_embedding, users)
        if self.hidden is None or self.out is None:
            match = tf.matmul(u, self.product_embedding, transpose_b=True)
        else:
            match = tf.squeeze(self.out(self.hidden(u[:, None, :] * self.product_embedding[None, :, :])), -1)
        return match + self.product_bias[None, :]

    def weights_by_name(self) -> dict[str, np.ndarray]:
        """The trained weights by name, as the Scorer expects them."""
        weights = {
            "user_embedding": self.user_embedding.numpy(),
            "product_embedding": self.product_embedding.numpy(),
            "user_bias": np.zeros(self.user_embedding.shape[0], np.float32),
            "product_bias": self.product_bias.numpy(),
        }
        if self.hidden is not None and self.out is not None:
            weights["mlp_hidden_kernel"], weights["mlp_hidden_bias"] = (
                w.numpy() for w in self.hidden.weights
            )
            kernel, bias = (w.numpy() for w in self.out.weights)
            weights["mlp_out_kernel"], weights["mlp_out_bias"] = kernel[:, 0], bias[0]
        return weights


class Scorer(tf.Module):
    """score(user, product) = match(u * p) + user bias + product bias, for pairs or all products."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__(name="scorer")

        def var(name: str) -> tf.Variable:
            return tf.Variable(np.asarray(weights[name], dtype=np.float32), trainable=False, name=name)

        self.users = var("user_embedding")
        self.products = var("product_embedding")
        self.user_bias = var("user_bias")
        self.product_bias = var("product_bias")
        self.mlp = "mlp_hidden_kernel" in weights
        if self.mlp:
            self.hidden_kernel = var("mlp_hidden_kernel")
            self.hidden_bias = var("mlp_hidden_bias")
            self.out_kernel = var("mlp_out_kernel")
            self.out_bias = var("mlp_out_bias")

    def _match(self, interaction: tf.Tensor) -> tf.Tensor:
        """[..., dim] element-wise products -> [...] match scores."""
        if not self.mlp:
            return tf.reduce_sum(interaction, axis=-1)
        hidden = tf.nn.relu(tf.tensordot(interaction, self.hidden_kernel, axes=1) + self.hidden_bias)
        return tf.tensordot(hidden, self.out_kernel, axes=1) + self.out_bias

    def score_pairs(self, users: tf.Tensor, products: tf.Tensor) -> tf.Tensor:
        """users, products: int [batch] -> float32 [batch]."""
        u = tf.gather(self.users, users)
        p = tf.gather(self.products, products)
        return self._match(u * p) + tf.gather(self.user_bias, users) + tf.gather(self.product_bias, products)

    def score_all(self, users: tf.Tensor) -> tf.Tensor:
        """users: int [batch] -> float32 [batch, products], every product scored."""
        u = tf.gather(self.users, users)
        if self.mlp:
            match = self._match(u[:, None, :] * self.products[None, :, :])
        else:
            # A matrix product: far faster than the broadcast, equal to score_pairs up to float32
            # rounding (about 1e-6).
            match = tf.matmul(u, self.products, transpose_b=True)
        return match + tf.gather(self.user_bias, users)[:, None] + self.product_bias[None, :]
