"""Settings and pipeline parameters passed in code, never through os.environ."""

import os

import pytest

from common.settings import ConfigError, Settings
from pipelines.config import PipelineConfig
from trainer.config import TrainConfig


def test_kafka_properties_given_in_code_win_over_the_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    settings = Settings.load(kafka_properties={"bootstrap.servers": "code:9092"}, minio_bucket="b")
    assert settings.kafka == {"bootstrap.servers": "code:9092", "security.protocol": "SASL_SSL"}
    assert settings.minio_bucket == "b"
    assert Settings.load().kafka["bootstrap.servers"] == "env:9092"


def test_load_from_reads_variables_as_if_set_and_leaves_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("TOPIC_REQUESTS", "from-env")
    monkeypatch.delenv("MINIO_ENDPOINT", raising=False)
    before = dict(os.environ)
    variables = {
        "MINIO_ENDPOINT": "stack:9000",
        "MINIO_SECURE": "true",
        "KAFKA_BOOTSTRAP_SERVERS": "stack:9092",
    }
    settings = Settings.load_from(variables)
    assert (settings.minio_endpoint, settings.minio_secure) == ("stack:9000", True)
    assert settings.kafka["bootstrap.servers"] == "stack:9092"
    # What `variables` does not name still comes from the environment.
    assert settings.topic_requests == "from-env"
    assert dict(os.environ) == before
    with pytest.raises(ConfigError, match="MINIO_ENDPOINT"):
        Settings.load_from({"MINIO_ENDPOINT": "http://stack:9000"})


def test_the_training_defaults_are_the_trainers():
    config, train = PipelineConfig(), TrainConfig()
    assert config.train_config() == train
    for name in ("epochs", "embedding_dim", "batch_size", "learning_rate"):
        assert getattr(config, name) == getattr(train, name), name


def test_a_component_config_takes_only_the_pipeline_parameters_among_its_arguments():
    config = PipelineConfig.of({"minio_bucket": "b", "epochs": 2, "snapshot_id": "s1", "model": object()})
    assert (config.minio_bucket, config.epochs) == ("b", 2)
    assert config.model_fields_set == {"minio_bucket", "epochs"}
