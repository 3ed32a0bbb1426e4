"""Settings of `recommender client` (environment variables, validated at start-up)."""

from __future__ import annotations

from pydantic import Field

from common.settings import Settings


class ClientSettings(Settings):
    client_timeout_s: float = Field(10.0, gt=0, description="How long `recommend` waits for its reply.")
    client_drain_s: float = Field(30.0, ge=0, description="How long `load` waits for late replies.")
