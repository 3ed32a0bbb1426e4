"""The training pipeline's parameters as one typed object: the one place they are defined.

KFP shows each pipeline parameter on its own (name, type, default) and passes components typed
values, never an object. So `build_pipeline` turns these fields into the pipeline function's
signature; each component, whose source KFP ships to the container and whose signature it reads,
declares the parameters it needs and rebuilds the config from them (`PipelineConfig.of(locals())`);
the steps (pipelines/steps.py) take the config and build each component's settings from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from datapublisher.generate import PRESETS
from trainer.config import TrainConfig

_TRAIN = TrainConfig()
_DATA = PRESETS["default"]


class PipelineConfig(BaseModel):
    """Every pipeline parameter with its default (what a run gets that does not set it).

    A component passes only the parameters it declares; the others keep these defaults, so a step
    reads only the fields its component declares (the addresses' defaults are in-cluster names,
    so one read elsewhere fails the local-run test rather than passing silently).
    """

    # `model_name` is a parameter's name, not pydantic's `model_` namespace.
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    minio_endpoint: str = "minio:9000"
    minio_bucket: str = "recommender"
    minio_secure: bool = False
    minio_secret: str = "streaming-recommender-minio"  # the Kubernetes Secret with the MinIO keys
    kafka_bootstrap_servers: str = "kafka:9092"
    topic_model_updates: str = "model-updates"
    model_name: str = "recommender"
    serving_a_url: str = "http://serving-a:8501"
    serving_a_grpc: str = "serving-a:8500"
    serving_b_url: str = "http://serving-b:8501"
    serving_b_grpc: str = "serving-b:8500"
    publish_new_data: bool = False
    data_users: int = _DATA.users
    data_products: int = _DATA.products
    data_purchases: int = _DATA.purchases
    data_seed: int = 0
    keep_snapshots: int = 3
    epochs: int = _TRAIN.epochs
    embedding_dim: int = _TRAIN.embedding_dim
    batch_size: int = _TRAIN.batch_size
    learning_rate: float = _TRAIN.learning_rate
    gate_margin: float = 0.0
    gate_tolerance: float = 0.02

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> Self:
        """The config from a component's arguments (its `locals()`): the pipeline parameters among them."""
        return cls(**{name: value for name, value in arguments.items() if name in cls.model_fields})

    def train_config(self) -> TrainConfig:
        """The trainer's hyper-parameters; those that are not pipeline parameters keep its defaults."""
        return TrainConfig(
            epochs=self.epochs, embedding_dim=self.embedding_dim, batch_size=self.batch_size,
            learning_rate=self.learning_rate,
        )  # fmt: skip
