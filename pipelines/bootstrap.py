"""`recommender pipeline bootstrap`: a fresh release gets its first model with no manual step.

The Helm chart runs this as a plain Job on every install and upgrade. `helm install --wait` can
finish only once both serving instances and the model servers are ready, and none of them is
ready before a model exists: TF-Serving opens its ports only once a version is in its model
folder, and the model server's /readyz needs a live model. So the Job must not be a post-install
hook (Helm starts those only after --wait), and it must leave a version on *both* instances.

Steps, each one line on stdout:
1. the bucket and topics exist (the model server's init container may not have run yet);
2. a publish a crash left pending is settled; a live model in `models/serving.json` means
   there is nothing to train (an upgrade);
3. without a current snapshot, generated data is published;
4. the pipeline runs once locally, exactly as `recommender pipeline run --local`, with the
   release's parameters; a run that published no model is a failure;
5. an idle instance with no model version gets an unannounced copy of the live model, so its
   pod becomes ready; the next pipeline run exports a newer version there as usual.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from common.kafka import ensure_topics
from common.schemas import ServingRecord, other_instance
from common.snapshots import current_pointer
from common.storage import (
    COMPLETION_MARKER,
    SERVING_RECORD,
    ObjectStore,
    model_version_prefix,
)
from datapublisher.generate import PRESETS, generate_purchases
from datapublisher.snapshots import publish_snapshot
from modelpublisher.publisher import PublishError, settle_pending
from pipelines.cli import PipelineError, PipelineSettings, local_arguments, run_local
from recommender.init import InitSettings
from trainer.upload import upload_export

# Where the bootstrap and the pipeline's steps must look at the same thing: the bootstrap reads
# the environment (like every component of the release), the run gets the release's parameters.
SHARED_PARAMETERS = (
    "minio_endpoint", "minio_bucket", "minio_secure", "kafka_bootstrap_servers", "topic_model_updates",
    "model_name",
)  # fmt: skip


def say(line: str) -> None:
    print(f"bootstrap: {line}", flush=True)


def bootstrap(settings: PipelineSettings, params: dict[str, Any], preset: str) -> int:
    """The steps of the module docstring; raises PipelineError (one line) when one fails."""
    _check_same_target(settings, params)
    store = ObjectStore.from_settings(settings)
    _init(store)
    try:
        live = settle_pending(settings, store)
    except PublishError as exc:
        raise PipelineError(f"cannot settle the pending publish: {exc}") from None
    if live is not None:
        say(f"instance {live.instance} version {live.version} is live: nothing to train")
        _ensure_standby(settings, store, live)
        return 0
    say("no live model yet")
    current = current_pointer(store)
    if current is None:
        size = PRESETS[preset]
        pointer = publish_snapshot(store, generate_purchases(size.users, size.products, size.purchases))
        say(f"no current snapshot: published generated data ({preset} preset): snapshot "
            f"{pointer.snapshot_id}, {pointer.rows:,} rows")  # fmt: skip
    else:
        say(f"training on the current snapshot {current.snapshot_id} ({current.rows:,} rows)")
    # Pipeline defaults < the release's ConfigMap < --param.
    arguments = local_arguments(settings, params, publish_new_data=False)
    say("running the pipeline locally: prepare data, train, evaluate (quality gate), export, publish")
    started = time.monotonic()
    try:
        run_local(settings, arguments)
    except Exception as exc:  # kfp.local reports a failed task as a RuntimeError, the rest as they come
        raise PipelineError(f"the pipeline run failed: {exc}") from None
    record = store.get_model(SERVING_RECORD, ServingRecord)
    if record is None or record.pending is not None:
        raise PipelineError(
            "the pipeline run published no model (its quality gate line above says why); "
            "the serving instances stay unready until one is published"
        )
    say(f"pipeline run finished in {time.monotonic() - started:.0f}s: instance {record.instance} "
        f"version {record.version} is live")  # fmt: skip
    _ensure_standby(settings, store, record)
    return 0


def _check_same_target(settings: PipelineSettings, params: dict[str, Any]) -> None:
    # A mismatch would make the live-model check look at one bucket or topic and the run write to
    # another. The chart renders both from the same values, so this only catches hand-made setups.
    environment = local_arguments(settings, {}, publish_new_data=False)
    differ = [name for name in SHARED_PARAMETERS if name in params and params[name] != environment[name]]
    if differ:
        shown = "; ".join(f"{name}: {params[name]!r} vs {environment[name]!r}" for name in differ)
        raise PipelineError(
            f"the release's parameters and this environment point at different places ({shown}); "
            "set the environment to match, or override with --param"
        )


def _init(store: ObjectStore) -> None:
    """What `recommender init` does (idempotent); the model server's init container may run it too."""
    settings = InitSettings.load()
    store.ensure_bucket()
    created = ensure_topics(settings, settings.topic_partitions, settings.topic_replication_factor)
    say(f"bucket {store.bucket} ready; topics created: {', '.join(created) or 'none (all existed)'}")


def _ensure_standby(settings: PipelineSettings, store: ObjectStore, live: ServingRecord) -> None:
    """Copy the live model to the idle instance when that holds no version; never announced."""
    idle = other_instance(live.instance)
    if store.model_versions(idle):
        return
    source = model_version_prefix(live.instance, live.version)
    with tempfile.TemporaryDirectory() as tmp:
        if not store.download_prefix(source, Path(tmp)):
            raise PipelineError(f"the live model's files under {source} are gone; cannot copy it to {idle}")
        # upload_export writes its own marker last; the copied one would go up with the files.
        (Path(tmp) / COMPLETION_MARKER).unlink(missing_ok=True)
        instance, version = upload_export(store, Path(tmp), settings)
    say(f"copied the live model to the idle instance {instance} as version {version} (not announced), "
        "so that its serving pod can become ready")  # fmt: skip
