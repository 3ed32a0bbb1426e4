"""Typed settings read from environment variables, validated once at start-up.

Every component builds its own settings class on top of these pieces. A bad value
raises `ConfigError` whose message is one line naming the variable; the CLI prints
that line and exits 2. Secrets are `SecretStr` so they never show in a repr or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import describe_validation_error

KAFKA_ENV_PREFIX = "KAFKA_"

# librdkafka properties whose values are secrets: masked wherever settings are shown.
SECRET_KAFKA_PROPERTIES = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl_key",
    }
)


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message is one readable line."""


def kafka_properties_from_env(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Map every `KAFKA_FOO_BAR=value` variable onto the librdkafka property `foo.bar`.

    This is how TLS/SASL settings reach the clients without code changes, e.g.
    `KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `KAFKA_SASL_MECHANISM=SCRAM-SHA-512`,
    `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CA_LOCATION`. `overrides` (properties)
    win over the variables.
    """
    env = os.environ if environ is None else environ
    props = _kafka_variables(env) | dict(overrides or {})
    props.setdefault("bootstrap.servers", "127.0.0.1:9092")
    return props


def _kafka_variables(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(KAFKA_ENV_PREFIX) and len(name) > len(KAFKA_ENV_PREFIX)
    }


def redact_kafka_properties(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("**********" if k in SECRET_KAFKA_PROPERTIES else v) for k, v in props.items()}


class KafkaClientProperties(dict[str, str]):
    """librdkafka properties whose repr masks secrets, so logging settings is safe."""

    def __repr__(self) -> str:
        return repr(redact_kafka_properties(self))

    __str__ = __repr__


class Settings(BaseSettings):
    """Base of every component's settings: the Kafka topics and the MinIO bucket."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    minio_endpoint: str = Field("127.0.0.1:9000", description="MinIO host:port, no scheme.")
    minio_access_key: SecretStr = Field(SecretStr("minioadmin"), description="MinIO access key.")
    minio_secret_key: SecretStr = Field(SecretStr("minioadmin"), description="MinIO secret key.")
    minio_secure: bool = Field(False, description="Use HTTPS to reach MinIO.")
    minio_ca_file: str | None = Field(
        None, description="PEM bundle to trust for MinIO over HTTPS; default the system's."
    )
    minio_bucket: str = Field("recommender", description="Bucket holding data and models.")

    topic_requests: str = Field("recommendation-requests", description="Requests, keyed by user.")
    topic_replies: str = Field("recommendations", description="Replies, keyed by request id.")
    topic_dlq: str = Field("recommendation-requests-dlq", description="Rejected requests.")
    topic_model_updates: str = Field("model-updates", description="Compacted, keyed by model name.")

    log_level: str = Field("INFO", description="Python logging level.")

    # librdkafka properties given in code (`load(kafka_properties=...)`), over the `KAFKA_*` variables.
    # Private, so no variable sets it and it is not a setting of its own.
    _kafka_overrides: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("minio_endpoint")
    @classmethod
    def _endpoint_has_no_scheme(cls, value: str) -> str:
        if "://" in value or not value:
            raise ValueError("expected host:port without a scheme, e.g. 127.0.0.1:9000")
        return value

    @field_validator("minio_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        # Checked here so a wrong path fails at start-up, not at the first request.
        if value and not os.path.isfile(value):
            raise ValueError("no such file")
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def kafka(self) -> KafkaClientProperties:
        """librdkafka properties from the `KAFKA_*` variables (read when asked)."""
        return KafkaClientProperties(kafka_properties_from_env(overrides=self._kafka_overrides))

    @classmethod
    def load(cls, *, kafka_properties: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read the environment, with `overrides` (field values) and `kafka_properties` (librdkafka
        properties) over it; raise `ConfigError` with one line per bad variable."""
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_invalid_configuration(exc, cls.model_config.get("env_prefix", ""))) from None
        settings._kafka_overrides = dict(kafka_properties or {})
        return settings

    @classmethod
    def load_from(cls, variables: Mapping[str, str]) -> Self:
        """`load` as if `variables` (upper-case names) were set in the environment, without setting
        them: os.environ is the whole process's, and every later child process would inherit them."""
        prefix = cls.model_config.get("env_prefix", "")
        fields = {
            name: variables[(prefix + name).upper()]
            for name in cls.model_fields
            if (prefix + name).upper() in variables
        }
        return cls.load(kafka_properties=_kafka_variables(variables), **fields)


def _invalid_configuration(exc: ValidationError, env_prefix: str) -> str:
    """`invalid configuration: VARIABLE: problem (got value)`; secrets and keys are not shown."""

    def clause(field: str, error: ErrorDetails) -> str:
        value = error.get("input")
        shown = "" if value is None or "secret" in field or "key" in field else f" (got {value!r})"
        return f"{(env_prefix + field).upper()}: {error['msg']}{shown}"

    return "invalid configuration: " + describe_validation_error(exc, "settings", clause)


class ServingSettings(Settings):
    """Where the two serving instances answer; shared by everything that calls them."""

    model_name: str = Field("recommender", description="Model name inside TF-Serving.")
    serving_a_url: str = Field("http://127.0.0.1:8501", description="REST base of instance a.")
    serving_a_grpc: str = Field("127.0.0.1:8500", description="gRPC host:port of instance a.")
    serving_b_url: str = Field("http://127.0.0.1:8511", description="REST base of instance b.")
    serving_b_grpc: str = Field("127.0.0.1:8510", description="gRPC host:port of instance b.")

    @field_validator("serving_a_url", "serving_b_url")
    @classmethod
    def _is_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s):// URL, e.g. http://serving-a:8501")
        return value.rstrip("/")

    def rest_url(self, instance: str) -> str:
        return self.serving_a_url if instance == "a" else self.serving_b_url

    def grpc_target(self, instance: str) -> str:
        return self.serving_a_grpc if instance == "a" else self.serving_b_grpc
