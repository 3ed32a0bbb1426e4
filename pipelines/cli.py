"""`recommender pipeline compile|upload|schedule|run|bootstrap`: the training pipeline for the KFP UI,
locally, and once by itself to give a fresh release its first model."""

from __future__ import annotations

import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click_option_group import RequiredMutuallyExclusiveOptionGroup, optgroup
from pydantic import Field

from common.cli import OrderedGroup, settings_options
from common.settings import ServingSettings
from datapublisher.generate import PRESETS
from pipelines import DEFAULT_IMAGE, PIPELINE_NAME
from pipelines.release import (
    ReleaseConfig,
    ReleaseError,
    coerce_parameter,
    read_release_data,
    read_release_dir,
    release_config,
)

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = Path("recommender-pipeline.yaml")


class PipelineSettings(ServingSettings):
    kfp_host: str | None = Field(
        None, description="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80."
    )
    kfp_experiment: str = Field("streaming-recommender", description="Experiment for recurring runs.")
    pipeline_image: str = Field(DEFAULT_IMAGE, description="Image the components run in.")
    pipeline_root: Path = Field(
        Path(tempfile.gettempdir()) / "recommender-pipeline", description="Artifacts of local runs."
    )


class PipelineError(Exception):
    """A pipeline command failed for a reason the user can act on; the message is one line."""


def parse_interval(text: str) -> int:
    """'90s', '10m', '1h', '1d' -> seconds."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected an interval like 30s, 10m, 1h or 1d, got {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass(frozen=True)
class PipelineArgs:
    """One `recommender pipeline ACTION` command line, as `run` carries it out."""

    action: str
    overrides: dict[str, Any] = field(default_factory=dict)  # settings given as flags
    release: str | None = None
    namespace: str | None = None
    params_from: Path | None = None
    param: tuple[str, ...] = ()
    output: Path = DEFAULT_PACKAGE
    image: str | None = None
    name: str = PIPELINE_NAME
    version: str | None = None
    cron: str | None = None
    every: int | None = None
    publish_new_data: bool = False
    data_preset: str = "small"


command = OrderedGroup(
    "pipeline",
    short_help="compile, upload, schedule or run the training pipeline, or bootstrap a release",
    help="The KFP v2 training pipeline: data -> train -> evaluate (quality gate) -> export to the idle "
    "instance -> publish. KFP_HOST (or --host) names the KFP API for upload and schedule; --release NAME "
    "--namespace NS (or --params-from DIR, the release's ConfigMap mounted as a volume) takes the "
    "parameters and the image from a Helm release.",
)


@command.result_callback()
def _run_parsed(args: PipelineArgs) -> int:
    # Each action returns its parsed command line, so a test can parse one without running it.
    return run(args)


def _release_options(action: Callable[..., PipelineArgs]) -> Callable[..., PipelineArgs]:
    for option in reversed(
        [
            click.option(
                "--release",
                help="take the parameters and the image from this Helm release's pipeline ConfigMap "
                "(through the Kubernetes API; --param still wins)",
            ),
            click.option("--namespace", help="the release's namespace (required with --release)"),
            click.option(
                "--params-from",
                type=click.Path(path_type=Path),
                metavar="DIR",
                help="take the parameters from the release's pipeline ConfigMap mounted as a volume at DIR "
                "(one file per key; no Kubernetes API needed; --param still wins)",
            ),
            click.option(
                "--param", multiple=True, metavar="NAME=VALUE", help="a pipeline parameter (repeatable)"
            ),
        ]
    ):
        action = option(action)
    return action


_IMAGE_FROM_RELEASE = click.option(
    "--image", help="component image (default: the release's, else PIPELINE_IMAGE)"
)
_KFP_HOST = settings_options(PipelineSettings, kfp_host="--host")


@command.command("compile", short_help="write the pipeline package YAML for the KFP UI")
@click.option("--output", type=click.Path(path_type=Path), default=DEFAULT_PACKAGE, show_default=True)
@settings_options(PipelineSettings, pipeline_image="--image")
def compile_command(output: Path, overrides: dict[str, Any]) -> PipelineArgs:
    return PipelineArgs("compile", overrides, output=output)


@command.command("upload", short_help="create the pipeline, or a new version of it, on KFP")
@_KFP_HOST
@click.option("--name", default=PIPELINE_NAME, show_default=True, help="pipeline name")
@click.option("--version", help="version name (default: a timestamp)")
@_IMAGE_FROM_RELEASE
@_release_options
def upload_command(overrides: dict[str, Any], **options: Any) -> PipelineArgs:
    return PipelineArgs("upload", overrides, **options)


@command.command(
    "schedule",
    short_help="create a recurring run (max_concurrency=1, no catch-up)",
    help="Create a recurring run of the pipeline. Runs never overlap (max_concurrency=1: two runs would "
    "target the same idle instance) and missed intervals are not caught up.",
)
@optgroup.group("when", cls=RequiredMutuallyExclusiveOptionGroup)
@optgroup.option("--cron", help='KFP cron with seconds, e.g. "0 0 * * * *" (hourly)')
@optgroup.option("--every", type=parse_interval, metavar="INTERVAL", help="interval such as 30m, 1h, 1d")
@_KFP_HOST
@click.option("--name", default=f"{PIPELINE_NAME}-recurring", show_default=True)
@_IMAGE_FROM_RELEASE
@_release_options
def schedule_command(overrides: dict[str, Any], **options: Any) -> PipelineArgs:
    return PipelineArgs("schedule", overrides, **options)


@command.command("run", short_help="run the pipeline locally with kfp.local against the local stack")
@click.option("--local", is_flag=True, required=True, help="run with kfp.local (required)")
@click.option(
    "--every", type=parse_interval, metavar="INTERVAL", help="repeat every interval (e.g. 10m) until Ctrl-C"
)
@click.option("--publish-new-data", is_flag=True, help="generate and publish data first")
@_release_options
def run_command(local: bool, **options: Any) -> PipelineArgs:  # --local only says how it runs
    return PipelineArgs("run", **options)


@command.command(
    "bootstrap",
    short_help="give a fresh release its first model: data if there is none, then one local run",
    help="Make an empty bucket and empty topics serve a model, with no manual step (the Helm chart's "
    "bootstrap Job). Creates the bucket and topics if missing (as `recommender init`) and settles a publish "
    "a crash left pending. When models/serving.json then names a live model, nothing is trained and no "
    "data is published (so re-running it, e.g. on every helm upgrade, is cheap). Otherwise it publishes "
    "generated data if there is no current snapshot (data/current.json), runs the pipeline once locally "
    "(as `pipeline run --local`) and fails unless the run published a model. Either way, if the idle "
    "instance holds no model version, the live model is copied there, unannounced: TF-Serving answers "
    "only once a version exists, so until then that pod is never ready.",
)
@click.option(
    "--data-preset",
    type=click.Choice(sorted(PRESETS)),
    default="small",
    help="size of the data generated when there is none: small (2k users, 300 products, 40k purchases; "
    "trains in about a minute, the default) or default (50k users, 5k products, 1M purchases)",
)
@_release_options
def bootstrap_command(**options: Any) -> PipelineArgs:
    return PipelineArgs("bootstrap", **options)


def pipeline_signature() -> dict[str, str]:
    """Each pipeline parameter's KFP type (String, Integer, Float, Boolean)."""
    from pipelines.recommender_pipeline import build_pipeline  # kfp imports slowly: only when used

    return {name: spec.type for name, spec in (build_pipeline().component_spec.inputs or {}).items()}


def parse_params(pairs: Sequence[str], signature: dict[str, str] | None = None) -> dict[str, Any]:
    """NAME=VALUE pairs, typed by the pipeline's own parameter types."""
    signature = signature if signature is not None else pipeline_signature()
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in signature:
            raise PipelineError(f"unknown pipeline parameter {name!r}; known: {', '.join(sorted(signature))}")
        params[name] = coerce_parameter(name, value, signature[name])
    return params


def compile_package(output: Path, image: str, defaults: dict[str, Any] | None = None) -> Path:
    """Compile the pipeline; `defaults` replace parameter defaults (what a run made in the UI gets)."""
    from kfp import compiler

    from pipelines.recommender_pipeline import build_pipeline

    compiler.Compiler().compile(build_pipeline(image), str(output), pipeline_parameters=defaults or None)
    return output


ReleaseReader = Callable[[str, str], tuple[dict[str, str], str]]


def release_parameters(args: PipelineArgs, signature: dict[str, str], reader: ReleaseReader) -> ReleaseConfig:
    """The release's parameters and image when --release or --params-from is given, nothing otherwise."""
    if args.namespace and not args.release:
        raise PipelineError("--namespace only goes with --release")
    if args.release and args.params_from:
        raise PipelineError("--release and --params-from are two sources of the same parameters; give one")
    if args.params_from:
        data, source = read_release_dir(args.params_from)
        return release_config(data, signature, source)
    if not args.release:
        return ReleaseConfig()
    if not args.namespace:
        raise PipelineError("--release needs --namespace (the namespace the release is installed in)")
    data, source = reader(args.release, args.namespace)
    return release_config(data, signature, source)


def kfp_client(host: str | None) -> Any:
    """A kfp.Client for `host`; an unreachable endpoint is a one-line PipelineError."""
    import kfp

    if not host:
        raise PipelineError("no KFP endpoint: pass --host or set KFP_HOST")
    try:
        client = kfp.Client(host=host)
        client.get_kfp_healthz()
    except Exception as exc:  # kfp raises transport errors of several libraries
        raise PipelineError(
            f"cannot reach the KFP API at {host}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
    return client


def upload(client: Any, package: Path, name: str, version: str | None) -> str:
    """Create the pipeline, or a new version of it when one of that name exists."""
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        created = client.upload_pipeline(str(package), pipeline_name=name)
        return f"created pipeline {name} ({created.pipeline_id})"
    version = version or time.strftime("v%Y%m%d-%H%M%S")
    client.upload_pipeline_version(str(package), pipeline_version_name=version, pipeline_id=pipeline_id)
    return f"uploaded version {version} of pipeline {name} ({pipeline_id})"


def schedule(
    client: Any, package: Path, experiment: str, job_name: str, cron: str | None, every: int | None,
    params: dict[str, Any],
) -> str:  # fmt: skip
    experiment_id = client.create_experiment(experiment).experiment_id
    run = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron,
        interval_second=every,
        max_concurrency=1,  # overlapping runs would both target the same idle instance
        no_catchup=True,  # after a pause, run once rather than once per missed interval
        pipeline_package_path=str(package),
        params=params,
        enable_caching=False,
    )
    return f"recurring run {job_name} created ({run.recurring_run_id}) in experiment {experiment}"


def local_arguments(
    settings: PipelineSettings, params: dict[str, Any], publish_new_data: bool
) -> dict[str, Any]:
    """Pipeline arguments that point a local run at the environment's stack and instances."""
    return {
        "minio_endpoint": settings.minio_endpoint,
        "minio_bucket": settings.minio_bucket,
        "minio_secure": settings.minio_secure,
        "kafka_bootstrap_servers": settings.kafka["bootstrap.servers"],
        "topic_model_updates": settings.topic_model_updates,
        "model_name": settings.model_name,
        "serving_a_url": settings.serving_a_url,
        "serving_a_grpc": settings.serving_a_grpc,
        "serving_b_url": settings.serving_b_url,
        "serving_b_grpc": settings.serving_b_grpc,
        "publish_new_data": publish_new_data,
        **params,
    }


def run_local(settings: PipelineSettings, arguments: dict[str, Any]) -> dict[str, Any]:
    """One local run with kfp.local's SubprocessRunner in this environment; returns its outputs."""
    from kfp import local

    from pipelines.recommender_pipeline import build_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(settings.pipeline_root))
    task = build_pipeline(settings.pipeline_image)(**arguments)
    return dict(task.outputs) if task.outputs else {}


def run(
    args: PipelineArgs,
    client_factory: Callable[[str | None], Any] = kfp_client,
    release_reader: ReleaseReader = read_release_data,
) -> int:
    settings = PipelineSettings.load(**args.overrides)
    try:
        if args.action == "compile":
            path = compile_package(args.output, settings.pipeline_image)
            print(f"wrote {path}: upload it in the KFP UI (Pipelines -> Upload pipeline)")
            return 0
        signature = pipeline_signature()
        release = release_parameters(args, signature, release_reader)
        # Pipeline defaults < the release's ConfigMap < --param.
        params = {**release.parameters, **parse_params(args.param, signature)}
        if args.action == "run":
            return _run_local_loop(settings, params, args.publish_new_data, args.every)
        if args.action == "bootstrap":
            from pipelines.bootstrap import bootstrap  # it imports this module

            return bootstrap(settings, params, args.data_preset)
        image = args.image or release.image or settings.pipeline_image
        client = client_factory(settings.kfp_host)
        with tempfile.TemporaryDirectory() as tmp:
            # The release's values become the package's defaults, so runs made in the UI get them too.
            package = compile_package(Path(tmp) / "pipeline.yaml", image, params)
            if args.action == "upload":
                print(upload(client, package, args.name, args.version))
            else:
                print(
                    schedule(
                        client, package, settings.kfp_experiment, args.name, args.cron, args.every, params
                    )
                )
    except (PipelineError, ReleaseError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


def _run_local_loop(
    settings: PipelineSettings, params: dict[str, Any], publish_new_data: bool, every: int | None
) -> int:
    """One run, or one run every `every` seconds (the local equivalent of a recurring run)."""
    while True:
        started = time.monotonic()
        try:
            run_local(settings, local_arguments(settings, params, publish_new_data))
            print(f"pipeline run finished in {time.monotonic() - started:.0f}s", flush=True)
        except Exception as exc:  # a recurring run reports a failed run and goes on
            print(f"error: pipeline run failed: {exc}".splitlines()[0], file=sys.stderr, flush=True)
            if every is None:
                return 1
        if every is None:
            return 0
        pause = max(0.0, every - (time.monotonic() - started))
        print(f"next run in {pause:.0f}s (Ctrl-C stops)", flush=True)
        time.sleep(pause)
