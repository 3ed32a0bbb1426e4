"""`answer`: a request that breaks the serving path in an unexpected way costs only its own dead letter."""

from __future__ import annotations

import json

import numpy as np

from common.schemas import ModelUpdate
from modelserver.loop import answer
from modelserver.metrics import Metrics
from modelserver.processing import ErrorKind, Incoming, Valid, parse
from modelserver.routing import Route

UPDATE = ModelUpdate(
    model="recommender",
    instance="a",
    url="http://127.0.0.1:1",
    grpc="127.0.0.1:1",
    version=3,
    metrics={"hr_at_10": 0.2, "ndcg_at_10": 0.1, "popularity_hr_at_10": 0.1, "popularity_ndcg_at_10": 0.05},
)


class ScoresByUser:
    """Pure stand-in for a predict call (no server involved): `poison` makes it fail oddly."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        self.calls.append(list(inputs["users"]))
        if "poison" in inputs["users"]:
            raise TypeError("unhashable type: 'list'")
        rows = len(inputs["users"])
        return {
            "products": np.array([[b"p1", b"p2"]] * rows, dtype=object),
            "scores": np.array([[2.0, 1.0]] * rows, dtype=np.float32),
            "fallback": np.zeros(rows, dtype=bool),
        }

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass


def request(user: str, offset: int) -> Valid:
    raw = json.dumps({"request_id": f"r{offset}", "user": user, "k": 2}).encode()
    item = parse(Incoming(raw, None, "requests", 0, offset))
    assert isinstance(item, Valid)
    return item


def test_an_unexpected_serving_error_dead_letters_only_the_request_that_causes_it():
    client = ScoresByUser()
    batch = [request("u1", 0), request("poison", 1), request("u2", 2)]
    answered, dead = answer(batch, Route(UPDATE, client), deadline_s=1, metrics=Metrics())
    assert [valid.request.request_id for valid, _ in answered] == ["r0", "r2"]
    assert [(letter.source.offset, letter.kind) for letter in dead] == [(1, ErrorKind.INTERNAL_ERROR)]
    assert dead[0].error == "TypeError: unhashable type: 'list'"
    assert client.calls[0] == ["u1", "poison", "u2"]  # one call for the batch, then one per request
    assert client.calls[1:] == [["u1"], ["poison"], ["u2"]]
