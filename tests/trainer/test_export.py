"""The exported SavedModel, loaded back from MinIO: the contract's signatures and their promises."""

import json

import numpy as np
import pytest
import tensorflow as tf

from common.schemas import MAX_K, ModelMetrics
from common.storage import EXPORT_METADATA, model_version_prefix
from trainer.config import TrainConfig
from trainer.export import PAD_PRODUCT, PAD_SCORE, export_saved_model
from trainer.train import train

from .conftest import Exported


def strings(tensor) -> list[str]:
    return [value.decode() for value in tensor.numpy().ravel()]


def purchased_by(exported: Exported, user: str) -> set[str]:
    rows = exported.snapshot.purchases
    return set(rows.loc[rows["user"] == user, "product"])


USERS = ["u0", "u1", "u17", "u1999", "nobody", "", "u0"]


def call_top(signatures, name: str, users: list[str], k: int | list[int] = MAX_K) -> dict:
    """Call `recommend` or `recommend_with_purchased`; `k` is one value for all users, or a list."""
    ks = [k] * len(users) if isinstance(k, int) else k
    return signatures[name](users=tf.constant(users), k=tf.constant(ks, tf.int32))


def test_signatures_and_shapes(exported: Exported):
    assert set(exported.loaded.signatures) == {"serving_default", "recommend", "recommend_with_purchased"}
    out = call_top(exported.loaded.signatures, "recommend", USERS)
    assert out["products"].dtype == tf.string and out["products"].shape == (len(USERS), MAX_K)
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (len(USERS), MAX_K)
    assert out["fallback"].dtype == tf.bool and out["fallback"].shape == (len(USERS),)
    scores = out["scores"].numpy()
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_each_user_gets_its_own_k(exported: Exported):
    out = call_top(exported.loaded.signatures, "recommend", ["u0", "u1", "nobody"], [3, 7, 500])
    assert out["products"].shape == (3, MAX_K)  # as wide as the largest k, clamped to 100
    products, scores = out["products"].numpy(), out["scores"].numpy()
    assert all(products[0, :3]) and set(products[0, 3:]) == {PAD_PRODUCT.encode()}
    assert (scores[0, 3:] == np.float32(PAD_SCORE)).all() and (scores[0, :3] > PAD_SCORE).all()
    assert all(products[1, :7]) and set(products[1, 7:]) == {PAD_PRODUCT.encode()}
    assert all(products[2])
    full = call_top(exported.loaded.signatures, "recommend", ["u1"])
    assert strings(full["products"][0])[:7] == strings(out["products"][1])[:7]
    narrow = call_top(exported.loaded.signatures, "recommend", ["u0", "u1"], [2, 0])
    assert narrow["products"].shape == (2, 2)  # k below 1 counts as 1
    assert narrow["products"].numpy()[1, 0] and narrow["products"].numpy()[1, 1] == PAD_PRODUCT.encode()


def test_k_must_match_users(exported: Exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per user"):
        call_top(exported.loaded.signatures, "recommend", ["u0", "u1"], [3])


def test_recommend_scores_equal_serving_default_scores(exported: Exported):
    model = exported.loaded.signatures
    for name in ("recommend", "recommend_with_purchased"):
        out = call_top(model, name, USERS)
        users = np.repeat(np.array(USERS), MAX_K)
        pairs = model["serving_default"](users=tf.constant(users), products=tf.reshape(out["products"], [-1]))
        np.testing.assert_allclose(
            pairs["scores"].numpy(), out["scores"].numpy().ravel(), rtol=1e-6, atol=1e-6
        )


def test_served_scores_are_the_trained_scorers(exported: Exported):
    data, scorer = exported.trained.data, exported.trained.scorer
    rng = np.random.default_rng(3)
    users, products = rng.integers(0, data.n_users, 50), rng.integers(0, data.n_products, 50)
    served = exported.loaded.signatures["serving_default"](
        users=tf.constant(data.user_ids[users].astype(str)),
        products=tf.constant(data.product_ids[products].astype(str)),
    )
    np.testing.assert_allclose(
        served["scores"].numpy(), scorer.score_pairs(users, products).numpy(), rtol=1e-5, atol=1e-5
    )


def test_the_export_stores_the_embeddings_once(exported: Exported):
    saved = tf.train.list_variables(str(exported.export_dir / "variables" / "variables"))
    embeddings = exported.trained.scorer.users.shape.num_elements()
    large = [name for name, shape in saved if np.prod(shape) >= embeddings]
    assert len(large) == 1, saved


def test_purchased_products_are_excluded(exported: Exported):
    model = exported.loaded.signatures
    heavy = exported.snapshot.purchases["user"].value_counts().index[:20].tolist()
    excluded = call_top(model, "recommend", heavy)["products"]
    included = call_top(model, "recommend_with_purchased", heavy)["products"]
    overlap = 0
    for row, user in enumerate(heavy):
        bought = purchased_by(exported, user)
        assert not bought & set(strings(excluded[row]))
        overlap += len(bought & set(strings(included[row])))
    assert overlap > 0  # without exclusion the same users do get products they bought


def test_unknown_users_get_popular_products(exported: Exported):
    out = call_top(exported.loaded.signatures, "recommend", ["u5", "nobody", "u6", "12345"])
    assert out["fallback"].numpy().tolist() == [False, True, False, True]
    counts = exported.snapshot.purchases.groupby("product")["user"].nunique().sort_values(ascending=False)
    top = strings(out["products"][1])
    assert top == strings(out["products"][3])
    assert top[:10] == counts.index[:10].tolist()
    assert strings(out["products"][0]) != top


class NumpyModel:
    """The model recomputed with numpy alone, from the trained weights and the raw snapshot rows:
    an independent account of what every signature should answer."""

    def __init__(self, exported: Exported) -> None:
        scorer, data = exported.trained.scorer, exported.trained.data
        self.users = scorer.users.numpy().astype(np.float64)
        self.products = scorer.products.numpy().astype(np.float64)
        self.user_bias = scorer.user_bias.numpy().astype(np.float64)
        self.product_bias = scorer.product_bias.numpy().astype(np.float64)
        self.product_ids = data.product_ids.astype(str)
        self.user_index = {user: i for i, user in enumerate(data.user_ids.astype(str))}
        self.product_index = {product: i for i, product in enumerate(self.product_ids)}
        rows = exported.snapshot.purchases.astype({"user": str, "product": str})
        buyers = rows.groupby("product")["user"].nunique()
        n_users = rows["user"].nunique()
        self.popularity = np.array([buyers.get(p, 0) / n_users for p in self.product_ids], np.float64)
        self.bought = rows.groupby("user")["product"].agg(set).to_dict()

    def all_scores(self, user: str) -> np.ndarray:
        """[products] scores; an unknown user is scored by popularity."""
        if user not in self.user_index:
            return self.popularity
        i = self.user_index[user]
        return self.products @ self.users[i] + self.user_bias[i] + self.product_bias

    def pair_score(self, user: str, product: str) -> float:
        if product not in self.product_index:
            return PAD_SCORE
        return float(self.all_scores(user)[self.product_index[product]])

    def candidates(self, user: str, exclude_purchased: bool) -> dict[str, float]:
        """Every product `user` may be recommended, with its score."""
        scores = self.all_scores(user)
        bought = self.bought.get(user, set()) if exclude_purchased else set()
        return {p: float(s) for p, s in zip(self.product_ids, scores, strict=True) if p not in bought}


def assert_is_top_k(products: list[str], scores: np.ndarray, candidates: dict[str, float], k: int) -> None:
    """`products`/`scores` are the best `k` of `candidates` (ties at the cut may go either way)."""
    expected = sorted(candidates.values(), reverse=True)[:k]
    real = [p for p in products if p != PAD_PRODUCT]
    assert len(real) == len(expected) and len(set(real)) == len(real)
    assert products[len(real) :] == [PAD_PRODUCT] * (len(products) - len(real))
    assert set(real) <= set(candidates)
    tol = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores[: len(real)], expected, **tol)  # the k best scores, best first
    np.testing.assert_allclose(scores[: len(real)], [candidates[p] for p in real], **tol)  # of these products
    left_out = [score for product, score in candidates.items() if product not in set(real)]
    if left_out and real:
        assert max(left_out) <= scores[len(real) - 1] + 1e-4  # nothing better was left out


def test_recommend_is_the_numpy_top_k_of_the_trained_weights(exported: Exported):
    reference = NumpyModel(exported)
    model = exported.loaded.signatures
    users = [*USERS, *exported.snapshot.purchases["user"].value_counts().index[:5].astype(str)]
    for name, exclude in (("recommend", True), ("recommend_with_purchased", False)):
        out = call_top(model, name, users)
        assert out["fallback"].numpy().tolist() == [u not in reference.user_index for u in users]
        for row, user in enumerate(users):
            assert_is_top_k(
                strings(out["products"][row]),
                out["scores"].numpy()[row],
                reference.candidates(user, exclude),
                MAX_K,
            )
        again = call_top(model, name, users)  # and the same input gives the same output
        assert strings(again["products"]) == strings(out["products"])
        np.testing.assert_array_equal(again["scores"].numpy(), out["scores"].numpy())


def test_serving_default_is_the_numpy_pair_score(exported: Exported):
    reference = NumpyModel(exported)
    pairs = [("u3", "p1"), ("u3", "p2"), ("x", "p1"), ("u17", "p250"), ("u0", "no-such-product"), ("", "p7")]
    users, products = (list(column) for column in zip(*pairs, strict=True))
    call = exported.loaded.signatures["serving_default"]
    scores = call(users=tf.constant(users), products=tf.constant(products))["scores"].numpy()
    np.testing.assert_allclose(scores, [reference.pair_score(u, p) for u, p in pairs], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(
        call(users=tf.constant(users), products=tf.constant(products))["scores"].numpy(), scores
    )


def test_unseen_product_is_scored_not_an_error(exported: Exported):
    scores = exported.loaded.signatures["serving_default"](
        users=tf.constant(["u3", "nobody"]), products=tf.constant(["no-such-product", "no-such-product"])
    )["scores"].numpy()
    assert (scores == np.float32(PAD_SCORE)).all()


def test_metadata_holds_the_metrics(exported: Exported):
    key = model_version_prefix(exported.instance, exported.version) + EXPORT_METADATA
    metadata = json.loads(exported.store.get_bytes(key))
    metrics = ModelMetrics.model_validate(metadata["metrics"])
    assert metrics == exported.trained.metrics
    assert metadata["snapshot_id"] == exported.snapshot.pointer.snapshot_id
    assert metadata["config"]["embedding_dim"] == exported.trained.config.embedding_dim


def test_model_beats_popularity_on_the_small_preset(exported: Exported):
    m = exported.trained.metrics
    assert m.evaluated_users > 1500
    assert 0 < m.popularity_hr_at_10 < 1
    assert m.hr_at_10 >= 1.5 * m.popularity_hr_at_10
    assert m.ndcg_at_10 > m.popularity_ndcg_at_10


def test_tiny_catalogue_is_padded(exported: Exported, tmp_path):
    rows = exported.snapshot.purchases
    tiny = rows[rows["product"].isin(["p1", "p2", "p3", "p4", "p5"])]
    snapshot = type(exported.snapshot)(exported.snapshot.pointer, tiny.reset_index(drop=True))
    trained = train(snapshot, TrainConfig(epochs=1, embedding_dim=4, batch_size=512), 0)
    model = tf.saved_model.load(str(export_saved_model(trained, tmp_path / "tiny")))
    user = tiny["user"].iloc[0]
    out = call_top(model.signatures, "recommend", [user])
    products = strings(out["products"][0])
    bought = set(tiny.loc[tiny["user"] == user, "product"])
    assert set(products[: 5 - len(bought)]) == {"p1", "p2", "p3", "p4", "p5"} - bought
    assert products[5 - len(bought) :] == [PAD_PRODUCT] * (MAX_K - 5 + len(bought))
    assert (out["scores"].numpy()[0, 5 - len(bought) :] == np.float32(PAD_SCORE)).all()
    pairs = model.signatures["serving_default"](
        users=tf.constant([user] * 5), products=tf.constant(["p1", "p2", "p3", "p4", "p5"])
    )["scores"].numpy()
    assert np.isfinite(pairs).all() and (pairs > PAD_SCORE).all()
