"""The recurring training pipeline (KFP v2): data -> train -> evaluate (gate) -> export -> publish.

Components are lightweight `@dsl.component`s that import this project, so they run in the
project's image in a cluster (no pip install at run time) and in-process with `kfp.local`.
Endpoints, bucket, topics and hyper-parameters are typed pipeline parameters, defined once as
`pipelines.config.PipelineConfig`; MinIO credentials reach each task from a Kubernetes Secret
through `use_secret_as_env`.
"""

import inspect
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from pipelines import DEFAULT_IMAGE, PIPELINE_NAME
from pipelines.config import PipelineConfig

# Keys of the chart's MinIO Secret -> the variables the components read.
SECRET_KEYS = {"accessKey": "MINIO_ACCESS_KEY", "secretKey": "MINIO_SECRET_KEY"}


# Each component declares the pipeline parameters its step reads (KFP ships the function's source
# to the container and reads its signature there, so these lists cannot be generated) and hands
# them to the step as one `PipelineConfig`; upstream outputs and artifacts stay separate arguments.


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
    from pipelines.config import PipelineConfig
    from pipelines.steps import prepare_data_step

    return prepare_data_step(PipelineConfig.of(locals()))


def train_model(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    snapshot_id: str,
    epochs: int,
    embedding_dim: int,
    batch_size: int,
    learning_rate: float,
    model: Output[Model],
):
    """Train on the snapshot and write the SavedModel (with its metrics) as the Model artifact."""
    from pipelines.config import PipelineConfig
    from pipelines.steps import train_step

    model.metadata.update(train_step(PipelineConfig.of(locals()), snapshot_id, model.path))


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
    from pipelines.config import PipelineConfig
    from pipelines.steps import evaluate_step

    passed, _, figures, markdown = evaluate_step(PipelineConfig.of(locals()), model.path)
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

    from pipelines.config import PipelineConfig
    from pipelines.steps import export_step

    instance, version = export_step(PipelineConfig.of(locals()), model.path)
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
    from pipelines.config import PipelineConfig
    from pipelines.steps import publish_step

    return publish_step(PipelineConfig.of(locals()), instance, version)


# The pipeline's signature, made from PipelineConfig's fields (KFP reads it with inspect.signature,
# which honours `__signature__`): the UI shows each parameter with its type and default.
PIPELINE_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.annotation
        )
        for name, f in PipelineConfig.model_fields.items()
    ],
    return_annotation=None,
)


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline with every component running in `image` (the project's container image)."""
    # The image already has kfp and the project installed: nothing is pip-installed at run time.
    component = dsl.component(base_image=image, install_kfp_package=False)
    prepare, train, evaluate, export, publish = (
        component(fn) for fn in (prepare_data, train_model, evaluate_model, export_model, publish_model)
    )

    def recommender_pipeline(*channels: Any) -> None:
        # KFP calls this with one channel per parameter, positionally, in PIPELINE_SIGNATURE's order.
        params = dict(zip(PIPELINE_SIGNATURE.parameters, channels, strict=True))

        def inputs(task_component: Any, **upstream: Any) -> dict[str, Any]:
            """The pipeline parameters `task_component` declares, and its upstream outputs."""
            declared = task_component.component_spec.inputs
            return {name: params[name] for name in declared if name in params} | upstream

        data = prepare(**inputs(prepare))
        trained = train(**inputs(train, snapshot_id=data.output))
        gate = evaluate(**inputs(evaluate, model=trained.outputs["model"]))
        tasks = [data, trained, gate]
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            exported = export(**inputs(export, model=trained.outputs["model"]))
            published = publish(
                **inputs(publish, instance=exported.outputs["instance"], version=exported.outputs["version"])
            )
            tasks += [exported, published]
        for task in tasks:
            task.set_caching_options(False)  # every run must look at the data and the live model afresh
            kubernetes.use_secret_as_env(
                task, secret_name=params["minio_secret"], secret_key_to_env=SECRET_KEYS
            )

    recommender_pipeline.__signature__ = PIPELINE_SIGNATURE
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train the collaborative filter on the current snapshot, gate it on quality, "
        "export it to the idle TF-Serving instance and publish it on Kafka.",
    )(recommender_pipeline)
