"""The quality gate's decisions (pure logic)."""

import pytest

from common.schemas import ModelMetrics
from modelpublisher.gate import check_quality


def metrics(hr: float, ndcg: float, pop_hr: float = 0.10, pop_ndcg: float = 0.05) -> ModelMetrics:
    return ModelMetrics(
        hr_at_10=hr, ndcg_at_10=ndcg, popularity_hr_at_10=pop_hr, popularity_ndcg_at_10=pop_ndcg
    )


def test_passes_when_beating_popularity_without_a_live_model():
    decision = check_quality(metrics(0.30, 0.15), None, margin=0.05, tolerance=0.02)
    assert decision.passed and decision.reason.startswith("passed")


@pytest.mark.parametrize(
    ("candidate", "word"),
    [
        (metrics(0.12, 0.15), "hr_at_10 0.1200 does not beat popularity 0.1000 by more than 0.0500"),
        (metrics(0.30, 0.09), "ndcg_at_10 0.0900 does not beat popularity 0.0500 by more than 0.0500"),
        (metrics(0.10, 0.15), "hr_at_10"),  # equal to popularity is not beating it, even at margin 0.05
    ],
)
def test_fails_when_not_beating_popularity_by_the_margin(candidate, word):
    decision = check_quality(candidate, None, margin=0.05, tolerance=0.02)
    assert not decision.passed and word in decision.reason


def test_zero_margin_still_requires_strictly_better():
    assert not check_quality(metrics(0.10, 0.05), None, margin=0.0, tolerance=0.0).passed
    assert check_quality(metrics(0.11, 0.06), None, margin=0.0, tolerance=0.0).passed


def test_live_model_tolerance():
    live = metrics(0.35, 0.20)
    assert check_quality(metrics(0.34, 0.19), live, margin=0.0, tolerance=0.02).passed  # within tolerance
    decision = check_quality(metrics(0.32, 0.20), live, margin=0.0, tolerance=0.02)
    assert not decision.passed
    assert decision.reason == "hr_at_10 0.3200 is more than 0.0200 below the live model's 0.3500"
    assert not check_quality(metrics(0.36, 0.17), live, margin=0.0, tolerance=0.02).passed
