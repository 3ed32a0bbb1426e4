"""Pure request processing: bytes in, a reply or a dead-letter record out.

Nothing here touches Kafka or the network, so the whole path from a raw message to the
records the loop produces is unit-tested without a broker. The loop (modelserver.loop)
only moves bytes between Kafka and these functions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from pydantic import ValidationError

from common.schemas import (
    DeadLetterHeaders,
    ModelRef,
    RecommendationReply,
    RecommendationRequest,
    ScoredItem,
    now_ms,
)


class ErrorKind(StrEnum):
    """Values of the `error-kind` header (docs/contracts.md)."""

    NOT_JSON = "not-json"
    INVALID_REQUEST = "invalid-request"
    SERVING_FAILED = "serving-failed"


class Signature(StrEnum):
    RECOMMEND = "recommend"
    RECOMMEND_WITH_PURCHASED = "recommend_with_purchased"
    SCORE = "serving_default"


FALLBACK_REASON = "unknown-user: popular items"


@dataclass(frozen=True)
class Incoming:
    """A consumed message, detached from confluent_kafka so tests can build one."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadLetter:
    """A record for the DLQ: the original key and bytes, with the reason in headers."""

    source: Incoming
    kind: ErrorKind
    error: str

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (DeadLetterHeaders.ERROR, self.error.encode()),
            (DeadLetterHeaders.ERROR_KIND, self.kind.value.encode()),
            (DeadLetterHeaders.SOURCE_TOPIC, self.source.topic.encode()),
            (DeadLetterHeaders.SOURCE_PARTITION, str(self.source.partition).encode()),
            (DeadLetterHeaders.SOURCE_OFFSET, str(self.source.offset).encode()),
        ]


@dataclass(frozen=True)
class Valid:
    source: Incoming
    request: RecommendationRequest


def describe(exc: ValidationError) -> str:
    """`k: Input should be less than or equal to 100`; one clause per problem."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse(message: Incoming) -> Valid | DeadLetter:
    """Validate one request; anything but a well-formed request becomes a dead letter."""
    if not message.value:
        return DeadLetter(message, ErrorKind.NOT_JSON, "empty message")
    try:
        document = json.loads(message.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return DeadLetter(message, ErrorKind.NOT_JSON, f"not JSON: {exc}")
    if not isinstance(document, dict):
        return DeadLetter(
            message, ErrorKind.INVALID_REQUEST, f"expected a JSON object, got {type(document).__name__}"
        )
    try:
        return Valid(message, RecommendationRequest.model_validate(document))
    except ValidationError as exc:
        return DeadLetter(message, ErrorKind.INVALID_REQUEST, describe(exc))


@dataclass
class PredictCall:
    """One predict call covering several requests of a batch.

    For SCORE calls every (user, candidate) pair of every request is flattened into one call;
    `spans[i]` is the slice of the flat outputs that belongs to `requests[i]`.
    """

    signature: Signature
    requests: list[Valid]
    inputs: dict[str, list[str] | list[int]] = field(default_factory=dict)
    spans: list[tuple[int, int]] = field(default_factory=list)


def plan(batch: list[Valid]) -> list[PredictCall]:
    """Group a batch into at most three calls: one per signature, never one per candidate."""
    calls: dict[Signature, PredictCall] = {}
    for valid in batch:
        request = valid.request
        if request.products is not None:
            call = calls.setdefault(
                Signature.SCORE, PredictCall(Signature.SCORE, [], {"users": [], "products": []})
            )
            start = len(call.inputs["users"])
            call.inputs["users"].extend([str(request.user)] * len(request.products))
            call.inputs["products"].extend(str(product) for product in request.products)
            call.spans.append((start, start + len(request.products)))
        else:
            signature = (
                Signature.RECOMMEND if request.exclude_purchased else Signature.RECOMMEND_WITH_PURCHASED
            )
            call = calls.setdefault(signature, PredictCall(signature, [], {"users": [], "k": []}))
            call.inputs["users"].append(str(request.user))
            call.inputs["k"].append(request.k)
        call.requests.append(valid)
    return list(calls.values())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _items(products: np.ndarray, scores: np.ndarray, k: int) -> list[ScoredItem]:
    # Catalogues smaller than 100 are padded with empty ids and non-finite scores: skip them.
    items = []
    for product, score in zip(products, scores, strict=True):
        if len(items) == k:
            break
        name = _text(product)
        if name and math.isfinite(float(score)):
            items.append(ScoredItem(product=name, score=float(score)))
    return items


def replies(
    call: PredictCall, outputs: dict[str, np.ndarray], model: ModelRef, served_at: int | None = None
) -> list[tuple[Valid, RecommendationReply]]:
    """Turn one call's outputs into a reply per request, best items first, `k` at most."""
    served_at = now_ms() if served_at is None else served_at
    answered = []
    if call.signature is Signature.SCORE:
        scores = np.asarray(outputs["scores"]).reshape(-1)
        for valid, (start, stop) in zip(call.requests, call.spans, strict=True):
            products = np.asarray(call.inputs["products"][start:stop], dtype=object)
            span = scores[start:stop]
            order = np.argsort(-span, kind="stable")  # stable: ties keep the caller's order
            reply = RecommendationReply(
                request_id=valid.request.request_id,
                user=valid.request.user,
                items=_items(products[order], span[order], valid.request.k),
                model=model,
                fallback=None,
                served_at=served_at,
            )
            answered.append((valid, reply))
        return answered
    products, scores = np.asarray(outputs["products"]), np.asarray(outputs["scores"])
    fallback = np.asarray(outputs["fallback"]).reshape(-1)
    for row, valid in enumerate(call.requests):
        reply = RecommendationReply(
            request_id=valid.request.request_id,
            user=valid.request.user,
            items=_items(products[row], scores[row], valid.request.k),
            model=model,
            fallback=FALLBACK_REASON if bool(fallback[row]) else None,
            served_at=served_at,
        )
        answered.append((valid, reply))
    return answered


def next_offsets(messages: list[Incoming]) -> dict[tuple[str, int], int]:
    """Offsets to store after a batch: per partition, the highest offset + 1."""
    offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic, message.partition)
        offsets[key] = max(offsets.get(key, -1), message.offset + 1)
    return offsets


def first_offsets(messages: list[Incoming]) -> dict[tuple[str, int], int]:
    """Per partition, the lowest offset of a batch: where to seek back to re-read it."""
    offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic, message.partition)
        offsets[key] = min(offsets.get(key, message.offset), message.offset)
    return offsets
