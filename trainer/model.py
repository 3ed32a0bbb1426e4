"""The collaborative filter: user and product embeddings, a dot product with biases, and an
optional small MLP head over the embeddings' element-wise product.

Keras trains it; `Scorer` holds the trained weights as plain variables and is the one
implementation of the scoring maths, used by the evaluation and by the exported SavedModel,
so the evaluated model is exactly the served one. It has no dropout or other randomness:
the same request always gets the same scores.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

WEIGHT_NAMES = ("user_embedding", "product_embedding", "user_bias", "product_bias")


def build_model(
    n_users: int, n_products: int, embedding_dim: int, mlp_units: int = 0, l2: float = 1e-6
) -> keras.Model:
    """Inputs `user`, `product` (int indices) -> one logit of "this user buys this product"."""
    user = keras.Input(shape=(), dtype="int32", name="user")
    product = keras.Input(shape=(), dtype="int32", name="product")
    regularizer = keras.regularizers.L2(l2)

    def embed(name: str, rows: int, dim: int, index: keras.KerasTensor) -> keras.KerasTensor:
        layer = keras.layers.Embedding(
            rows,
            dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05),
            embeddings_regularizer=regularizer,
            name=name,
        )
        return layer(index)

    u = embed("user_embedding", n_users, embedding_dim, user)
    p = embed("product_embedding", n_products, embedding_dim, product)
    user_bias = keras.ops.squeeze(embed("user_bias", n_users, 1, user), -1)
    product_bias = keras.ops.squeeze(embed("product_bias", n_products, 1, product), -1)
    interaction = u * p
    if mlp_units:
        hidden = keras.layers.Dense(mlp_units, activation="relu", name="mlp_hidden")(interaction)
        match = keras.ops.squeeze(keras.layers.Dense(1, name="mlp_out")(hidden), -1)
    else:
        match = keras.ops.sum(interaction, axis=-1)
    logit = match + user_bias + product_bias
    return keras.Model({"user": user, "product": product}, logit, name="collaborative_filter")


def model_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The trained weights by name, as the Scorer expects them."""
    weights = {name: model.get_layer(name).get_weights()[0] for name in WEIGHT_NAMES}
    weights["user_bias"] = weights["user_bias"][:, 0]
    weights["product_bias"] = weights["product_bias"][:, 0]
    names = {layer.name for layer in model.layers}
    if "mlp_hidden" in names:
        weights["mlp_hidden_kernel"], weights["mlp_hidden_bias"] = model.get_layer("mlp_hidden").get_weights()
        kernel, bias = model.get_layer("mlp_out").get_weights()
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
