"""The recurring training pipeline (KFP v2): data -> train -> evaluate (gate) -> export -> publish.

Components are lightweight `@dsl.component`s that import this project, so they run in the
project's image in a cluster (no pip install at run time) and in-process with `kfp.local`.
Endpoints, bucket, topics and hyper-parameters are typed pipeline parameters; MinIO
credentials reach each task from a Kubernetes Secret through `use_secret_as_env`.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from pipelines import DEFAULT_IMAGE, PIPELINE_NAME

# Keys of the chart's MinIO Secret -> the variables the components read.
SECRET_KEYS = {"accessKey": "MINIO_ACCESS_KEY", "secretKey": "MINIO_SECRET_KEY"}


def prepare_data(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    publish_new_data: bool,
    data_users: int,
    data_products: int,
    data_purchases: int,
    data_seed: int,
    keep_snapshots: int,
) -> str:
    """Optionally publish a fresh generated snapshot; return the id of the current one."""
    from pipelines.steps import prepare_data_step

    return prepare_data_step(
        minio_endpoint, minio_bucket, minio_secure, publish_new_data,
        data_users, data_products, data_purchases, data_seed, keep_snapshots,
    )  # fmt: skip


def train_model(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    snapshot_id: str,
    epochs: int,
    embedding_dim: int,
    batch_size: int,
    learning_rate: float,
    mlp_units: int,
    model: Output[Model],
):
    """Train on the snapshot and write the SavedModel (with its metrics) as the Model artifact."""
    from pipelines.steps import train_step

    model.metadata.update(
        train_step(
            minio_endpoint, minio_bucket, minio_secure, snapshot_id,
            epochs, embedding_dim, batch_size, learning_rate, mlp_units, model.path,
        )
    )  # fmt: skip


def evaluate_model(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    gate_margin: float,
    gate_tolerance: float,
    model: Input[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> bool:
    """The quality gate: beat popularity by the margin, stay within tolerance of the live model.

    Returns only the decision (its reason is in the report): kfp.local resolves a condition
    on a task's single `Output`, not on a named output.
    """
    from pipelines.steps import evaluate_step

    passed, _, figures, markdown = evaluate_step(
        minio_endpoint, minio_bucket, minio_secure, gate_margin, gate_tolerance, model.path
    )
    for name, value in figures.items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as handle:
        handle.write(markdown)
    return passed


def export_model(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    kafka_bootstrap_servers: str,
    topic_model_updates: str,
    model: Input[Model],
) -> NamedTuple("Export", [("instance", str), ("version", int)]):
    """Upload the SavedModel to the idle instance's prefix; the completion marker goes last.

    A publish that a crash left pending is settled first from `model-updates` (hence Kafka).
    """
    from collections import namedtuple

    from pipelines.steps import export_step

    instance, version = export_step(
        minio_endpoint, minio_bucket, minio_secure, kafka_bootstrap_servers, topic_model_updates, model.path
    )
    return namedtuple("Export", ["instance", "version"])(instance, version)


def publish_model(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    kafka_bootstrap_servers: str,
    topic_model_updates: str,
    model_name: str,
    serving_a_url: str,
    serving_a_grpc: str,
    serving_b_url: str,
    serving_b_grpc: str,
    gate_margin: float,
    gate_tolerance: float,
    instance: str,
    version: int,
) -> str:
    """Wait for the instance to load the version, canary it, then announce it on Kafka."""
    from pipelines.steps import publish_step

    return publish_step(
        minio_endpoint, minio_bucket, minio_secure, kafka_bootstrap_servers, topic_model_updates,
        model_name, serving_a_url, serving_a_grpc, serving_b_url, serving_b_grpc,
        gate_margin, gate_tolerance, instance, version,
    )  # fmt: skip


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline with every component running in `image` (the project's container image)."""
    # The image already has kfp and the project installed: nothing is pip-installed at run time.
    component = dsl.component(base_image=image, install_kfp_package=False)
    prepare, train, evaluate, export, publish = (
        component(fn) for fn in (prepare_data, train_model, evaluate_model, export_model, publish_model)
    )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train the collaborative filter on the current snapshot, gate it on quality, "
        "export it to the idle TF-Serving instance and publish it on Kafka.",
    )
    def recommender_pipeline(
        minio_endpoint: str = "minio:9000",
        minio_bucket: str = "recommender",
        minio_secure: bool = False,
        minio_secret: str = "streaming-recommender-minio",
        kafka_bootstrap_servers: str = "kafka:9092",
        topic_model_updates: str = "model-updates",
        model_name: str = "recommender",
        serving_a_url: str = "http://serving-a:8501",
        serving_a_grpc: str = "serving-a:8500",
        serving_b_url: str = "http://serving-b:8501",
        serving_b_grpc: str = "serving-b:8500",
        publish_new_data: bool = False,
        data_users: int = 50_000,
        data_products: int = 5_000,
        data_purchases: int = 1_000_000,
        data_seed: int = 0,
        keep_snapshots: int = 3,
        epochs: int = 6,
        embedding_dim: int = 32,
        batch_size: int = 8192,
        learning_rate: float = 0.005,
        mlp_units: int = 0,
        gate_margin: float = 0.0,
        gate_tolerance: float = 0.02,
    ) -> None:
        storage = {
            "minio_endpoint": minio_endpoint,
            "minio_bucket": minio_bucket,
            "minio_secure": minio_secure,
        }
        data = prepare(
            **storage, publish_new_data=publish_new_data, data_users=data_users, data_products=data_products,
            data_purchases=data_purchases, data_seed=data_seed, keep_snapshots=keep_snapshots,
        )  # fmt: skip
        trained = train(
            **storage, snapshot_id=data.output, epochs=epochs, embedding_dim=embedding_dim,
            batch_size=batch_size, learning_rate=learning_rate, mlp_units=mlp_units,
        )  # fmt: skip
        gate = evaluate(
            **storage, gate_margin=gate_margin, gate_tolerance=gate_tolerance, model=trained.outputs["model"]
        )
        tasks = [data, trained, gate]
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            exported = export(
                **storage, kafka_bootstrap_servers=kafka_bootstrap_servers,
                topic_model_updates=topic_model_updates, model=trained.outputs["model"],
            )  # fmt: skip
            published = publish(
                **storage, kafka_bootstrap_servers=kafka_bootstrap_servers,
                topic_model_updates=topic_model_updates, model_name=model_name,
                serving_a_url=serving_a_url, serving_a_grpc=serving_a_grpc, serving_b_url=serving_b_url,
                serving_b_grpc=serving_b_grpc, gate_margin=gate_margin, gate_tolerance=gate_tolerance,
                instance=exported.outputs["instance"], version=exported.outputs["version"],
            )  # fmt: skip
            tasks += [exported, published]
        for task in tasks:
            task.set_caching_options(False)  # every run must look at the data and the live model afresh
            kubernetes.use_secret_as_env(task, secret_name=minio_secret, secret_key_to_env=SECRET_KEYS)

    return recommender_pipeline
