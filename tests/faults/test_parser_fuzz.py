"""Property-based fuzzing of the model server's parser: it never raises, and every malformed
payload becomes a dead letter with a kind and a reason, keeping the original bytes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from common.schemas import DeadLetterHeaders, RecommendationRequest
from modelserver.processing import DEFAULT_MAX_REQUEST_BYTES, DeadLetter, ErrorKind, Incoming, Valid, parse

SETTINGS = settings(max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["schema_version", "request_id", "user", "k", "products", "exclude_purchased", "sent_at"]
ids = st.text(min_size=1, max_size=12) | st.integers(min_value=0, max_value=10**9)
good_requests = st.builds(
    RecommendationRequest,
    request_id=st.text(min_size=1, max_size=36),
    user=ids,
    k=st.integers(min_value=1, max_value=100),
    products=st.none() | st.lists(ids, min_size=1, max_size=5),
    exclude_purchased=st.booleans(),
)


def incoming(value: bytes | None) -> Incoming:
    return Incoming(value=value, key=b"key", topic="requests", partition=1, offset=42)


def check_dead_letter(result: object, value: bytes | None) -> None:
    assert isinstance(result, DeadLetter)
    assert result.error and result.kind in (ErrorKind.NOT_JSON, ErrorKind.INVALID_REQUEST)
    headers = dict(result.record(DEFAULT_MAX_REQUEST_BYTES).headers)
    assert headers[DeadLetterHeaders.ERROR_KIND] == result.kind.value.encode()
    assert headers[DeadLetterHeaders.SOURCE_OFFSET] == b"42"
    assert result.source.value == value  # the DLQ gets the original bytes


@SETTINGS
@given(st.binary(max_size=300) | st.none())
def test_arbitrary_bytes_never_raise(value):
    result = parse(incoming(value))
    assert isinstance(result, Valid | DeadLetter)
    if isinstance(result, DeadLetter):
        check_dead_letter(result, value)


@SETTINGS
@given(json_values)
def test_arbitrary_json_never_raises_and_only_valid_requests_pass(document):
    value = json.dumps(document).encode()
    result = parse(incoming(value))
    if isinstance(result, Valid):
        # Only an object the schema accepts passes, and it parses to the same request.
        assert result.request == RecommendationRequest.model_validate(document)
    else:
        check_dead_letter(result, value)


@SETTINGS
@given(good_requests)
def test_every_well_formed_request_is_accepted_unchanged(request):
    result = parse(incoming(request.to_bytes()))
    assert isinstance(result, Valid) and result.request == request


@SETTINGS
@given(good_requests, st.sampled_from([*FIELDS, "unknown"]), json_values, st.data())
def test_a_request_with_one_field_spoilt_goes_to_the_dlq(request, field, replacement, data):
    document = json.loads(request.to_bytes())
    if field == "unknown":
        document[data.draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in FIELDS))] = replacement
    elif field == "k":
        document["k"] = data.draw(st.integers().filter(lambda k: not 1 <= k <= 100) | st.text() | st.none())
    elif field == "schema_version":
        document["schema_version"] = data.draw(st.integers().filter(lambda v: v != 1))
    elif field in ("request_id", "user"):
        document[field] = data.draw(st.lists(ids) | st.dictionaries(st.text(), ids) | st.booleans())
    elif field == "products":
        spoilt = st.text() | st.dictionaries(st.text(), ids, min_size=1) | st.booleans()
        document["products"] = data.draw(spoilt)
    elif field == "exclude_purchased":
        document["exclude_purchased"] = data.draw(st.lists(st.integers(), min_size=1) | st.text(min_size=2))
    else:  # sent_at
        document["sent_at"] = data.draw(st.text(min_size=1).filter(lambda t: not t.strip().isdigit()))
    value = json.dumps(document).encode()
    check_dead_letter(parse(incoming(value)), value)
