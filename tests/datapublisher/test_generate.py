"""The synthetic generator: sizes, determinism and the structure collaborative filtering needs."""

import numpy as np
import pytest

from datapublisher.generate import ALL_PRESETS, PRESETS, generate_purchases


def test_sizes_types_and_every_user_buys():
    frame = generate_purchases(users=500, products=80, purchases=6000, seed=3)
    assert list(frame.columns) == ["user", "product", "quantity", "timestamp"]
    assert len(frame) == 6000
    assert frame["user"].nunique() == 500
    assert frame["product"].str.match(r"^p\d+$").all() and frame["user"].str.match(r"^u\d+$").all()
    assert (frame["quantity"] >= 1).all()
    # Timestamps ascend within each user, so the last row of a user is their latest purchase.
    assert frame.groupby("user", sort=False)["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()


def test_same_seed_same_rows_other_seed_other_rows():
    first = generate_purchases(300, 50, 3000, seed=7)
    assert first.equals(generate_purchases(300, 50, 3000, seed=7))
    assert not first.equals(generate_purchases(300, 50, 3000, seed=8))


def test_power_law_popularity_and_repeat_purchases():
    frame = generate_purchases(2000, 500, 40_000, seed=1)
    counts = frame["product"].value_counts().to_numpy()
    # The most popular tenth of the catalogue takes a large share; the tail is long.
    assert counts[: len(counts) // 10].sum() > 0.4 * counts.sum()
    assert counts[0] > 20 * np.median(counts)
    assert frame.duplicated(["user", "product"]).mean() > 0.1


def test_users_have_distinct_tastes():
    """Two users' baskets overlap more with their own later purchases than popularity explains."""
    frame = generate_purchases(1000, 400, 30_000, seed=2)
    half = frame.groupby("user")["timestamp"].transform("median")
    early = frame[frame["timestamp"] <= half].groupby("user")["product"].apply(set)
    late = frame[frame["timestamp"] > half].groupby("user")["product"].apply(set)
    users = early.index.intersection(late.index)
    own = np.mean([len(early[u] & late[u]) / max(1, len(late[u])) for u in users])
    shifted = np.roll(np.asarray(users), 1)
    other = np.mean(
        [len(early[v] & late[u]) / max(1, len(late[u])) for u, v in zip(users, shifted, strict=True)]
    )
    assert own > 1.5 * other


def test_sparse_preset_is_long_tailed_with_many_repeats():
    """The sparse shape at a fifth of its size: most users buy 1-5 times, a few a lot, re-buys common."""
    preset = ALL_PRESETS["sparse"]
    assert (preset.users, preset.products, preset.purchases) == (25_000, 300, 150_000)
    assert "sparse" not in PRESETS  # the bootstrap's and the Helm chart's presets stay as they are
    shape = dict(activity_sigma=preset.activity_sigma, repeat_fraction=preset.repeat_fraction)
    frame = generate_purchases(preset.users // 5, preset.products, preset.purchases // 5, seed=4, **shape)
    assert len(frame) == 30_000 and frame["user"].nunique() == 5000
    assert frame["product"].nunique() > 0.95 * preset.products  # few products, nearly all bought
    per_user = frame.groupby("user").size()
    assert per_user.between(1, 5).mean() > 0.7
    assert per_user.max() > 100  # the long tail of heavy buyers
    assert frame.duplicated(["user", "product"]).mean() > 0.4
    assert frame.equals(generate_purchases(5000, 300, 30_000, seed=4, **shape))


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="at least users"):
        generate_purchases(users=10, products=5, purchases=9)
