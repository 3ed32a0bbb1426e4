"""Settings of `recommender modelserver` (environment variables, validated at start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.settings import ServingSettings


class ModelServerSettings(ServingSettings):
    """Where the model server listens and how it batches and calls TF-Serving.

    The serving endpoints themselves come from each ModelUpdate message (the contract), not
    from SERVING_*_URL, which only other components use.
    """

    modelserver_group_id: str = Field("recommender-modelserver", description="Consumer group of requests.")
    modelserver_protocol: Literal["grpc", "rest"] = Field("grpc", description="How to call TF-Serving.")
    modelserver_max_batch: int = Field(512, ge=1, le=10_000, description="Most requests per batch.")
    modelserver_max_wait_ms: int = Field(
        0, ge=0, le=10_000, description="After a batch's first request, how long to wait for more."
    )
    modelserver_max_request_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=512 * 1024,
        description="Larger requests are dead-lettered as too-large; a dead letter keeps this much.",
    )
    modelserver_call_timeout_s: float = Field(5.0, gt=0, description="Timeout of one predict call.")
    modelserver_serving_deadline_s: float = Field(
        20.0, gt=0, description="Retry a failing call until this deadline, then dead-letter the batch."
    )
    modelserver_switch_check_s: float = Field(
        30.0, gt=0, description="How long to check that a new instance answers before switching."
    )
    modelserver_http_host: str = Field("0.0.0.0", description="Bind address of the HTTP endpoints.")
    modelserver_http_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP endpoints.")
