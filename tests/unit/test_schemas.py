import pytest
from pydantic import ValidationError

from common.schemas import (
    ModelMetrics,
    ModelRef,
    ModelUpdate,
    RecommendationReply,
    RecommendationRequest,
    ScoredItem,
    other_instance,
)


def test_request_defaults_and_round_trip():
    request = RecommendationRequest(request_id="r1", user=7)
    assert request.k == 10
    assert request.exclude_purchased is True
    assert request.products is None
    assert request.schema_version == 1
    assert RecommendationRequest.model_validate_json(request.to_bytes()) == request


@pytest.mark.parametrize(
    "payload",
    [
        {"request_id": "r", "user": "u", "k": 0},
        {"request_id": "r", "user": "u", "k": 101},
        {"request_id": "r", "user": "u", "k": "10"},
        {"request_id": "r", "user": 1.5},
        {"request_id": "r", "user": "u", "kk": 3},
        {"request_id": "", "user": "u"},
        {"request_id": "r", "user": "u", "products": []},
        {"request_id": "r", "user": "u", "exclude_purchased": "yes"},
        {"request_id": "r", "user": "u", "schema_version": 2},
        {"user": "u"},
    ],
)
def test_bad_requests_are_rejected(payload):
    with pytest.raises(ValidationError):
        RecommendationRequest.model_validate(payload)


def test_reply_and_update_serialise():
    metrics = ModelMetrics(hr_at_10=0.3, ndcg_at_10=0.2, popularity_hr_at_10=0.1, popularity_ndcg_at_10=0.05)
    reply = RecommendationReply(
        request_id="r",
        user="u",
        items=[ScoredItem(product="p1", score=1.0)],
        model=ModelRef(name="recommender", instance="a", version=3),
    )
    assert RecommendationReply.model_validate_json(reply.to_bytes()) == reply
    update = ModelUpdate(
        model="recommender", instance="b", url="http://b:8501", grpc="b:8500", version=4, metrics=metrics
    )
    assert ModelUpdate.model_validate_json(update.to_bytes()).metrics.hr_at_10 == 0.3


def test_instance_must_be_a_or_b():
    with pytest.raises(ValidationError):
        ModelRef(name="m", instance="c", version=1)
    assert other_instance("a") == "b"
    assert other_instance("b") == "a"
