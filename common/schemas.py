"""Message and record schemas: the code side of docs/contracts.md.

All messages are UTF-8 JSON objects carrying `schema_version`. Requests reject unknown
fields (the documented policy), so a typo such as `kk` is reported instead of ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

SCHEMA_VERSION = 1
MAX_K = 100
# Contract limits (docs/contracts.md, "Limits"). With them a reply's size has a bound well under
# any producer's message.max.bytes (see modelserver.processing.MAX_REPLY_BYTES).
MAX_ID_LENGTH = 256  # characters of a user or product id
MAX_REQUEST_ID_LENGTH = 200
MAX_CANDIDATES = 10_000  # candidate `products` of one request
MAX_TEXT_LENGTH = 2048  # model names, instance URLs and gRPC targets in model updates

# Integer ids are 64-bit, so an id's text in a reply is bounded too.
UserId = (
    Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)] | Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
)
ProductId = UserId
BoundedText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_LENGTH)]
Instance = Literal["a", "b"]
INSTANCES: tuple[Instance, ...] = ("a", "b")


def now_ms() -> int:
    return int(time.time() * 1000)


def other_instance(instance: Instance) -> Instance:
    return "b" if instance == "a" else "a"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class RecommendationRequest(_Message):
    request_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)]
    user: UserId
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 10
    products: Annotated[list[ProductId], Field(min_length=1, max_length=MAX_CANDIDATES)] | None = None
    exclude_purchased: StrictBool = True
    sent_at: StrictInt = Field(default_factory=now_ms)


class ScoredItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product: ProductId
    score: float


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    instance: Instance
    version: StrictInt


class RecommendationReply(_Message):
    request_id: StrictStr
    user: UserId
    items: list[ScoredItem]
    model: ModelRef
    fallback: StrictStr | None = None
    served_at: StrictInt = Field(default_factory=now_ms)


class ModelMetrics(BaseModel):
    """Evaluation figures of one model export (leave-one-out, full ranking)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    hr_at_10: float = Field(ge=0, le=1)
    ndcg_at_10: float = Field(ge=0, le=1)
    popularity_hr_at_10: float = Field(ge=0, le=1)
    popularity_ndcg_at_10: float = Field(ge=0, le=1)


class ModelUpdate(_Message):
    model: BoundedText
    instance: Instance
    url: Annotated[BoundedText, Field(pattern=r"^https?://[^\s/]+")]
    grpc: Annotated[BoundedText, Field(pattern=r"^[^\s/]+:[0-9]+$")]
    version: StrictInt
    published_at: StrictInt = Field(default_factory=now_ms)
    metrics: ModelMetrics


class ServingRecord(_Message):
    """`models/serving.json`: the instance and version live now, or being announced.

    While `pending` is set, a publish of this record is in progress or was cut short: `pending`
    is the exact model update being produced, and `previous` is the whole record it replaces
    (to put back if the update never reached `model-updates`). Whether the model servers route
    here is then known only from that topic, so no reader may pick an idle instance from it.
    """

    model: StrictStr
    instance: Instance
    version: StrictInt
    published_at: StrictInt
    metrics: ModelMetrics
    previous: ServingRecord | None = None
    pending: ModelUpdate | None = None


class SnapshotPointer(_Message):
    """`data/current.json`: the snapshot readers should use."""

    snapshot_id: StrictStr
    path: StrictStr
    rows: StrictInt
    users: StrictInt
    products: StrictInt
    created_at: StrictInt


class DeadLetterHeaders:
    """Header names on `recommendation-requests-dlq` records (values are UTF-8)."""

    ERROR = "error"
    ERROR_KIND = "error-kind"
    SOURCE_TOPIC = "source-topic"
    SOURCE_PARTITION = "source-partition"
    SOURCE_OFFSET = "source-offset"
    ORIGINAL_SIZE = "original-size"  # bytes of the original value
    TRUNCATED = "truncated"  # "true" when the value is only the original's first bytes
