"""Pure processing: raw bytes to a reply or a dead letter, batching, outputs to replies."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from common.kafka import PRODUCER_MAX_MESSAGE_BYTES
from common.schemas import (
    MAX_ID_LENGTH,
    MAX_K,
    MAX_REQUEST_ID_LENGTH,
    MAX_TEXT_LENGTH,
    DeadLetterHeaders,
    ModelRef,
    RecommendationReply,
    RecommendationRequest,
    ScoredItem,
)
from modelserver.processing import (
    DEFAULT_MAX_REQUEST_BYTES,
    FALLBACK_REASON,
    MAX_REPLY_BYTES,
    DeadLetter,
    ErrorKind,
    Incoming,
    Signature,
    Valid,
    first_offsets,
    next_offsets,
    parse,
    plan,
    replies,
)

MODEL = ModelRef(name="recommender", instance="a", version=7)


def incoming(value: bytes | None, offset: int = 0, partition: int = 0) -> Incoming:
    return Incoming(value, b"key", "requests", partition, offset)


def request_bytes(**fields) -> bytes:
    return json.dumps({"request_id": "r1", "user": "u1", **fields}).encode()


def valid(**fields) -> Valid:
    item = parse(incoming(request_bytes(**fields)))
    assert isinstance(item, Valid), item
    return item


def test_a_good_request_parses_with_defaults():
    item = valid(k=3)
    assert item.request.k == 3 and item.request.exclude_purchased is True and item.request.products is None


@pytest.mark.parametrize(
    ("raw", "kind", "fragment"),
    [
        (b"not json at all", ErrorKind.NOT_JSON, "not JSON"),
        (b"\xff\xfe\x00garbage", ErrorKind.NOT_JSON, "not JSON"),
        (b"", ErrorKind.NOT_JSON, "empty"),
        (b"[1, 2]", ErrorKind.INVALID_REQUEST, "expected a JSON object"),
        (request_bytes(k=0), ErrorKind.INVALID_REQUEST, "k: Input should be greater than or equal to 1"),
        (request_bytes(k=101), ErrorKind.INVALID_REQUEST, "k: Input should be less than or equal to 100"),
        (request_bytes(k="5"), ErrorKind.INVALID_REQUEST, "k: Input should be a valid integer"),
        (request_bytes(kk=5), ErrorKind.INVALID_REQUEST, "kk: Extra inputs are not permitted"),
        (json.dumps({"user": "u1"}).encode(), ErrorKind.INVALID_REQUEST, "request_id: Field required"),
        (request_bytes(user=1.5), ErrorKind.INVALID_REQUEST, "user"),
        (request_bytes(products=[]), ErrorKind.INVALID_REQUEST, "products"),
    ],
)
def test_bad_requests_become_dead_letters_with_a_reason(raw, kind, fragment):
    item = parse(incoming(raw, offset=41, partition=1))
    assert isinstance(item, DeadLetter)
    assert item.kind is kind
    assert fragment in item.error
    headers = dict(item.record(DEFAULT_MAX_REQUEST_BYTES).headers)
    assert headers[DeadLetterHeaders.ERROR_KIND] == kind.value.encode()
    assert headers[DeadLetterHeaders.SOURCE_OFFSET] == b"41"
    assert headers[DeadLetterHeaders.SOURCE_PARTITION] == b"1"
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == b"requests"
    assert item.source.value == raw  # the original bytes, unchanged


def test_a_thousand_malformed_messages_all_become_dead_letters_and_good_ones_do_not():
    rng = random.Random(7)
    makers = [
        lambda i: f"garbage-{i}".encode(),
        lambda i: request_bytes(request_id=f"bad-{i}", k=rng.choice([0, 101, -3, 1000])),
        lambda i: request_bytes(request_id=f"bad-{i}", extra_field=i),
        lambda i: request_bytes(request_id=f"bad-{i}", user=None),
        lambda i: json.dumps({"request_id": f"bad-{i}", "user": "u", "k": "ten"}).encode(),
        lambda i: bytes(rng.randrange(256) for _ in range(20)),
    ]
    messages = [incoming(makers[i % len(makers)](i), offset=i) for i in range(1000)]
    messages += [
        incoming(request_bytes(request_id=f"good-{i}", user=f"u{i}"), offset=1000 + i) for i in range(50)
    ]
    rng.shuffle(messages)
    parsed = [parse(m) for m in messages]
    dead = [p for p in parsed if isinstance(p, DeadLetter)]
    good = [p for p in parsed if isinstance(p, Valid)]
    assert len(dead) == 1000 and all(d.error for d in dead)
    assert {d.kind for d in dead} == {ErrorKind.NOT_JSON, ErrorKind.INVALID_REQUEST}
    assert sorted(g.request.request_id for g in good) == sorted(f"good-{i}" for i in range(50))


def test_plan_groups_a_batch_into_one_call_per_signature():
    batch = [
        valid(request_id="a", user="u1"),
        valid(request_id="b", user=42, exclude_purchased=False),
        valid(request_id="c", user="u2", products=["p1", 2, "p3"]),
        valid(request_id="d", user="u3", k=4),
        valid(request_id="e", user=7, products=["p9"]),
    ]
    calls = {call.signature: call for call in plan(batch)}
    assert set(calls) == set(Signature)
    assert calls[Signature.RECOMMEND].inputs == {"users": ["u1", "u3"], "k": [10, 4]}
    assert calls[Signature.RECOMMEND_WITH_PURCHASED].inputs == {"users": ["42"], "k": [10]}
    score = calls[Signature.SCORE]
    assert score.inputs == {"users": ["u2", "u2", "u2", "7"], "products": ["p1", "2", "p3", "p9"]}
    assert score.spans == [(0, 3), (3, 4)]
    assert [v.request.request_id for v in score.requests] == ["c", "e"]


def test_recommend_outputs_become_replies_with_k_items_and_fallback():
    batch = [valid(request_id="r1", user=5, k=2), valid(request_id="r2", user="new", k=3)]
    (call,) = plan(batch)
    outputs = {
        "products": np.array([[b"p3", b"p1", b"p2", b"p4"], [b"p9", b"p8", b"", b""]], dtype=object),
        "scores": np.array([[0.9, 0.5, 0.4, 0.1], [3.0, 2.0, -np.inf, -np.inf]], dtype=np.float32),
        "fallback": np.array([False, True]),
    }
    (first, one), (_, two) = replies(call, outputs, MODEL, served_at=123)
    assert first.request.request_id == one.request_id == "r1"
    assert one.user == 5  # echoed as sent
    assert [(product, round(score, 3)) for product, score in one.items] == [("p3", 0.9), ("p1", 0.5)]
    assert one.fallback is None and one.model == MODEL and one.served_at == 123
    # Padding (empty ids, -inf scores) of a small catalogue never reaches a reply.
    assert [product for product, _ in two.items] == ["p9", "p8"]
    assert two.fallback == FALLBACK_REASON
    assert RecommendationReply.model_validate_json(two.to_bytes()).items[1] == ScoredItem(
        product="p8", score=2.0
    )


def test_scored_candidates_are_ranked_per_request():
    batch = [
        valid(request_id="c1", user="u", k=2, products=["x", "y", "z"]),
        valid(request_id="c2", user="v", k=5, products=["q"]),
    ]
    (call,) = plan(batch)
    pairs = replies(call, {"scores": np.array([0.1, 0.7, 0.4, 0.2], dtype=np.float32)}, MODEL)
    assert [product for product, _ in pairs[0][1].items] == ["y", "z"]
    assert [product for product, _ in pairs[1][1].items] == ["q"]


def test_offsets_to_store_and_to_rewind_are_per_partition():
    batch = [incoming(b"x", offset=o, partition=p) for p, o in [(0, 5), (0, 7), (1, 3), (0, 6), (1, 2)]]
    assert next_offsets(batch) == {("requests", 0): 8, ("requests", 1): 4}
    assert first_offsets(batch) == {("requests", 0): 5, ("requests", 1): 2}


def test_reply_for_every_request_of_a_mixed_batch_roundtrips_the_schema():
    batch = [valid(request_id=f"r{i}", user=f"u{i}", k=1) for i in range(4)]
    (call,) = plan(batch)
    outputs = {
        "products": np.array([[b"p1"]] * 4, dtype=object),
        "scores": np.ones((4, 1), dtype=np.float32),
        "fallback": np.zeros(4, dtype=bool),
    }
    for (valid_request, reply), user in zip(
        replies(call, outputs, MODEL, served_at=7), range(4), strict=True
    ):
        parsed = RecommendationReply.model_validate_json(reply.to_bytes())  # the contract's schema
        assert parsed == RecommendationReply(
            request_id=valid_request.request.request_id,
            user=f"u{user}",
            items=[ScoredItem(product="p1", score=1.0)],
            model=MODEL,
            served_at=7,
        )


@pytest.mark.parametrize(
    ("raw", "kind", "fragment"),
    [
        (
            b"x" * (DEFAULT_MAX_REQUEST_BYTES + 1),
            ErrorKind.TOO_LARGE,
            "over MODELSERVER_MAX_REQUEST_BYTES=65536",
        ),
        (b'{"request_id": "r", "user": "u", "k": NaN}', ErrorKind.NOT_JSON, "not JSON"),
        (b'{"request_id": "r", "user": "u", "k": Infinity}', ErrorKind.NOT_JSON, "not JSON"),
        (b'{"request_id": "r", "user": "u", "k": 3, "k": 4}', ErrorKind.INVALID_REQUEST, "duplicate key 'k'"),
        # Colons inside strings take the exact check's path: still caught, and nothing else is.
        (b'{"request_id": "a:b", "user": "u:1", "user": "u:2"}', ErrorKind.INVALID_REQUEST, "duplicate key"),
        (b'{"request_id": "r", "user": "u\x00"}', ErrorKind.NOT_JSON, "control character"),
        (b"[" * 10_000 + b"]" * 10_000, ErrorKind.NOT_JSON, "recursion limit"),
        (request_bytes(request_id="r" * 201), ErrorKind.INVALID_REQUEST, "at most 200 characters"),
        (request_bytes(user="u" * 257), ErrorKind.INVALID_REQUEST, "at most 256 characters"),
        (request_bytes(user=2**64), ErrorKind.INVALID_REQUEST, "less than 9223372036854775808"),
        (request_bytes(products=list(range(10_001))), ErrorKind.INVALID_REQUEST, "at most 10000 items"),
        (request_bytes(schema_version=2), ErrorKind.INVALID_REQUEST, "schema_version: Input should be 1"),
    ],
)
def test_hostile_requests_get_the_kind_and_a_reason_naming_the_limit(raw, kind, fragment):
    item = parse(incoming(raw))
    assert isinstance(item, DeadLetter)
    assert item.kind is kind
    assert fragment in item.error


def test_colons_inside_strings_do_not_make_a_good_request_bad():
    item = parse(incoming(request_bytes(request_id="order:1:2", user="tenant:7")))
    assert isinstance(item, Valid) and item.request.user == "tenant:7"


def test_the_request_byte_limit_is_a_parameter():
    raw = request_bytes(request_id="r" * 150)
    assert isinstance(parse(incoming(raw), max_request_bytes=len(raw)), Valid)
    assert parse(incoming(raw), max_request_bytes=len(raw) - 1).kind is ErrorKind.TOO_LARGE


def test_an_unexpected_error_while_parsing_costs_one_dead_letter(monkeypatch):
    def broken(document):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr("modelserver.processing.RecommendationRequest.model_validate", broken)
    item = parse(incoming(request_bytes()))
    assert isinstance(item, DeadLetter)
    assert item.kind is ErrorKind.INTERNAL_ERROR and item.error == "RuntimeError: a bug"


def test_a_dead_letter_of_a_large_message_keeps_a_prefix_and_says_where_the_whole_is():
    original = b"x" * 1_000_000
    letter = DeadLetter(Incoming(original, b"k" * 5000, "requests", 1, 77), ErrorKind.TOO_LARGE, "e" * 10_000)
    record = letter.record(max_value_bytes=1000)
    headers = dict(record.headers)
    assert record.value == original[:1000]
    assert record.key == b"k" * 1024
    assert headers[DeadLetterHeaders.ORIGINAL_SIZE] == b"1000000"
    assert headers[DeadLetterHeaders.TRUNCATED] == b"true"
    assert headers[DeadLetterHeaders.SOURCE_OFFSET] == b"77"
    assert headers[DeadLetterHeaders.SOURCE_PARTITION] == b"1"
    assert len(headers[DeadLetterHeaders.ERROR]) == 1024
    size = len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)
    assert size < 1000 + 3 * 1024
    whole = letter.record(max_value_bytes=len(original))
    assert whole.value == original and DeadLetterHeaders.TRUNCATED not in dict(whole.headers)
    assert letter.record(0).value == b""


def test_the_largest_possible_reply_is_under_its_bound_and_the_producer_limit():
    # Control characters are the costliest to encode (\uXXXX); every id at its longest.
    worst_id = "\x01" * MAX_ID_LENGTH
    batch = [
        Valid(
            incoming(b"{}"),
            RecommendationRequest(request_id="\x01" * MAX_REQUEST_ID_LENGTH, user=worst_id, k=MAX_K),
        )
    ]
    (call,) = plan(batch)
    outputs = {
        "products": np.array([[worst_id.encode()] * MAX_K], dtype=object),
        "scores": np.full((1, MAX_K), -1.2345678e-30, dtype=np.float32),
        "fallback": np.array([True]),
    }
    model = ModelRef(name="\x01" * MAX_TEXT_LENGTH, instance="a", version=2**63 - 1)
    ((_, reply),) = replies(call, outputs, model, served_at=2**63 - 1)
    assert len(reply.items) == MAX_K
    assert len(reply.to_bytes()) <= MAX_REPLY_BYTES < PRODUCER_MAX_MESSAGE_BYTES // 4


def test_products_longer_than_the_contract_allows_never_reach_a_reply():
    (call,) = plan([valid(k=3)])
    outputs = {
        "products": np.array([[b"p" * (MAX_ID_LENGTH + 1), b"p1", b"p2"]], dtype=object),
        "scores": np.array([[3.0, 2.0, 1.0]], dtype=np.float32),
        "fallback": np.array([False]),
    }
    ((_, reply),) = replies(call, outputs, MODEL)
    assert [product for product, _ in reply.items] == ["p1", "p2"]
