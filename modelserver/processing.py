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
from pydantic_core import from_json, to_json

from common.errors import describe_exception, describe_validation_error
from common.schemas import (
    MAX_ID_LENGTH,
    MAX_K,
    MAX_REQUEST_ID_LENGTH,
    MAX_TEXT_LENGTH,
    SCHEMA_VERSION,
    DeadLetterHeaders,
    ModelRef,
    RecommendationRequest,
    now_ms,
)


class ErrorKind(StrEnum):
    """Values of the `error-kind` header (docs/contracts.md)."""

    NOT_JSON = "not-json"
    TOO_LARGE = "too-large"
    INVALID_REQUEST = "invalid-request"
    SERVING_FAILED = "serving-failed"
    REPLY_UNDELIVERABLE = "reply-undeliverable"
    INTERNAL_ERROR = "internal-error"


DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
MAX_DLQ_KEY_BYTES = 1024
MAX_REASON_BYTES = 1024
# The largest reply `Reply.to_bytes` can make from a request and a model within the contract's
# limits: JSON escapes a control character as \uXXXX (6 bytes), an item adds at most 64 bytes
# of punctuation and score. A test builds that worst case; the producer's limit is far above it.
MAX_REPLY_BYTES = (
    512 + 6 * (MAX_REQUEST_ID_LENGTH + MAX_ID_LENGTH + MAX_TEXT_LENGTH) + MAX_K * (64 + 6 * MAX_ID_LENGTH)
)


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
class Record:
    """A record ready to produce (the loop picks the topic)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _bounded(data: bytes, limit: int) -> bytes:
    return data if len(data) <= limit else data[:limit]


@dataclass(frozen=True)
class DeadLetter:
    """A rejected request for the DLQ: the original key and bytes, with the reason in headers."""

    source: Incoming
    kind: ErrorKind
    error: str

    def record(self, max_value_bytes: int) -> Record:
        """The DLQ record, at most `max_value_bytes` of the original value plus ~3 KiB.

        A longer original keeps its first bytes and says so (`truncated`, `original-size`); the
        whole of it stays readable at its source offset for the request topic's retention.
        """
        value = self.source.value or b""
        kept = _bounded(value, max_value_bytes)
        headers = [
            (DeadLetterHeaders.ERROR, _bounded(self.error.encode(), MAX_REASON_BYTES)),
            (DeadLetterHeaders.ERROR_KIND, self.kind.value.encode()),
            (DeadLetterHeaders.SOURCE_TOPIC, self.source.topic.encode()),
            (DeadLetterHeaders.SOURCE_PARTITION, str(self.source.partition).encode()),
            (DeadLetterHeaders.SOURCE_OFFSET, str(self.source.offset).encode()),
            (DeadLetterHeaders.ORIGINAL_SIZE, str(len(value)).encode()),
        ]
        if len(kept) < len(value):
            headers.append((DeadLetterHeaders.TRUNCATED, b"true"))
        key = None if self.source.key is None else _bounded(self.source.key, MAX_DLQ_KEY_BYTES)
        return Record(key, kept if self.source.value is not None else None, headers)


@dataclass(frozen=True)
class Valid:
    source: Incoming
    request: RecommendationRequest


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    document: dict = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _has_duplicate_keys(value: bytes, document: dict) -> str | None:
    # Every key/value pair needs a ':' byte, so with no more ':' bytes than distinct top-level
    # keys there is no duplicate (the common case: one count instead of a second parse).
    if value.count(b":") <= len(document):
        return None
    try:
        json.loads(value, object_pairs_hook=_reject_duplicate_keys)
    except ValueError as exc:
        return str(exc)
    return None


def parse(message: Incoming, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> Valid | DeadLetter:
    """Validate one request; anything but a well-formed request becomes a dead letter."""
    try:
        return _parse(message, max_request_bytes)
    except Exception as exc:  # a bug here must cost one message a dead letter, never the loop
        return DeadLetter(message, ErrorKind.INTERNAL_ERROR, describe_exception(exc))


def _parse(message: Incoming, max_request_bytes: int) -> Valid | DeadLetter:
    if not message.value:
        return DeadLetter(message, ErrorKind.NOT_JSON, "empty message")
    if len(message.value) > max_request_bytes:
        return DeadLetter(
            message,
            ErrorKind.TOO_LARGE,
            f"request is {len(message.value)} bytes, over MODELSERVER_MAX_REQUEST_BYTES={max_request_bytes}",
        )
    try:
        # pydantic-core's parser: a fifth of json.loads' CPU. NaN and Infinity are not JSON.
        document = from_json(message.value, allow_inf_nan=False)
    except ValueError as exc:
        return DeadLetter(message, ErrorKind.NOT_JSON, f"not JSON: {exc}")
    if not isinstance(document, dict):
        return DeadLetter(
            message, ErrorKind.INVALID_REQUEST, f"expected a JSON object, got {type(document).__name__}"
        )
    duplicate = _has_duplicate_keys(message.value, document)
    if duplicate:
        return DeadLetter(message, ErrorKind.INVALID_REQUEST, f"ambiguous JSON: {duplicate}")
    try:
        return Valid(message, RecommendationRequest.model_validate(document))
    except ValidationError as exc:
        return DeadLetter(message, ErrorKind.INVALID_REQUEST, describe_validation_error(exc, "request"))


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


@dataclass(frozen=True)
class Reply:
    """A reply in the shape of the contract's `RecommendationReply`, serialized without a model.

    Validating ~10 `ScoredItem` models per reply cost the model server more CPU than the model
    call; these values come from our own code, and the tests validate the bytes against the schema.
    """

    request_id: str
    user: str | int
    items: list[tuple[str, float]]  # (product, score), best first
    model: ModelRef
    fallback: str | None
    served_at: int

    def to_bytes(self) -> bytes:
        document = {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "user": self.user,
            "items": [{"product": product, "score": score} for product, score in self.items],
            "model": {
                "name": self.model.name,
                "instance": self.model.instance,
                "version": self.model.version,
            },
            "fallback": self.fallback,
            "served_at": self.served_at,
        }
        return to_json(document)  # the bytes json.dumps gives, in a sixth of the time


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _items(products: list, scores: list[float], k: int) -> list[tuple[str, float]]:
    # Padding (product "", see docs/contracts.md), non-finite scores and ids longer than the
    # contract allows never reach a reply, which keeps every reply under MAX_REPLY_BYTES.
    items = []
    for product, score in zip(products, scores, strict=True):
        if len(items) == k:
            break
        name = _text(product)
        if name and len(name) <= MAX_ID_LENGTH and math.isfinite(score):
            items.append((name, score))
    return items


def replies(
    call: PredictCall, outputs: dict[str, np.ndarray], model: ModelRef, served_at: int | None = None
) -> list[tuple[Valid, Reply]]:
    """Turn one call's outputs into a reply per request, best items first, `k` at most."""
    served_at = now_ms() if served_at is None else served_at
    answered = []
    if call.signature is Signature.SCORE:
        scores = np.asarray(outputs["scores"]).reshape(-1)
        for valid, (start, stop) in zip(call.requests, call.spans, strict=True):
            products = np.asarray(call.inputs["products"][start:stop], dtype=object)
            span = scores[start:stop]
            order = np.argsort(-span, kind="stable")  # stable: ties keep the caller's order
            reply = Reply(
                request_id=valid.request.request_id,
                user=valid.request.user,
                items=_items(products[order].tolist(), span[order].tolist(), valid.request.k),
                model=model,
                fallback=None,
                served_at=served_at,
            )
            answered.append((valid, reply))
        return answered
    # One tolist() per output: converting row by row, or element by element, costs far more.
    products = np.asarray(outputs["products"]).tolist()
    scores = np.asarray(outputs["scores"]).tolist()
    fallback = np.asarray(outputs["fallback"]).reshape(-1).tolist()
    for row, valid in enumerate(call.requests):
        reply = Reply(
            request_id=valid.request.request_id,
            user=valid.request.user,
            items=_items(products[row], scores[row], valid.request.k),
            model=model,
            fallback=FALLBACK_REASON if fallback[row] else None,
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
