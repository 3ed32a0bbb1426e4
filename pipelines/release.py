"""The pipeline's parameters for a Helm release, read from the ConfigMap the chart renders.

The chart (templates/pipeline-configmap.yaml) writes one ConfigMap per release whose keys are the
pipeline's parameter names (plus `image`, the component image), so `recommender pipeline
schedule --release NAME --namespace NS` needs no address typed by hand. The mapping is a pure
function of the ConfigMap's data; the two ways of getting that data are kept apart and thin: the
Kubernetes API (`--release`), or the ConfigMap mounted as a volume (`--params-from DIR`, what the
chart's bootstrap Job does, so it needs no API access).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The chart labels the ConfigMap with these; the release's instance label finds it whatever
# nameOverride/fullnameOverride made of its name.
COMPONENT_LABEL = "app.kubernetes.io/component=pipeline-parameters"
PART_OF_LABEL = "app.kubernetes.io/part-of=streaming-recommender"
IMAGE_KEY = "image"

_BOOLEANS = {"true": True, "false": False}


class ReleaseError(Exception):
    """The release's parameters cannot be read or do not fit the pipeline; one line."""


@dataclass(frozen=True)
class ReleaseConfig:
    """What a release tells the pipeline: typed parameter values and the component image."""

    parameters: dict[str, Any] = field(default_factory=dict)
    image: str | None = None


def coerce_parameter(name: str, text: str, kind: str) -> Any:
    """A parameter's text as the pipeline's type (`kind` is KFP's: String, Integer, Float, Boolean)."""
    try:
        match kind:
            case "Integer":
                return int(text)
            case "Float":
                return float(text)
            case "Boolean":
                return _BOOLEANS[text.strip().lower()]
            case _:
                return text
    except (ValueError, KeyError):
        raise ReleaseError(f"pipeline parameter {name}: {text!r} is not a valid {kind.lower()}") from None


def release_config(data: Mapping[str, str], signature: Mapping[str, str], source: str) -> ReleaseConfig:
    """Map the ConfigMap's data to typed pipeline parameters and the image.

    `signature` maps each pipeline parameter to its KFP type. A key the pipeline does not take is
    an error rather than ignored: it means the chart and this CLI disagree (e.g. different
    versions), and a silently dropped address is the failure this ConfigMap exists to prevent.
    """
    unknown = sorted(set(data) - set(signature) - {IMAGE_KEY})
    if unknown:
        raise ReleaseError(
            f"{source} has keys the pipeline does not take: {', '.join(unknown)} "
            "(are the chart and the recommender CLI of the same version?)"
        )
    parameters = {
        name: coerce_parameter(name, text, signature[name])
        for name, text in data.items()
        if name != IMAGE_KEY
    }
    return ReleaseConfig(parameters=parameters, image=data.get(IMAGE_KEY) or None)


def read_release_data(release: str, namespace: str, api: Any = None) -> tuple[dict[str, str], str]:
    """The data of the release's pipeline ConfigMap and a name for it, through the Kubernetes API.

    `api` is a CoreV1Api; by default one from the kubeconfig or, inside a pod, the service account.
    Needs `list` on ConfigMaps in `namespace`.
    """
    from kubernetes import client, config  # only when --release is used
    from kubernetes.client.exceptions import ApiException

    if api is None:
        try:
            config.load_config()
        except Exception as exc:  # ConfigException, or a malformed kubeconfig
            raise ReleaseError(f"no Kubernetes configuration (kubeconfig or in-cluster): {exc}") from None
        api = client.CoreV1Api()
    selector = f"app.kubernetes.io/instance={release},{COMPONENT_LABEL},{PART_OF_LABEL}"
    try:
        found = api.list_namespaced_config_map(namespace, label_selector=selector).items
    except ApiException as exc:
        raise ReleaseError(
            f"cannot list ConfigMaps in namespace {namespace}: {exc.status} {exc.reason}"
        ) from None
    except Exception as exc:  # urllib3 transport errors
        raise ReleaseError(f"cannot reach the Kubernetes API: {type(exc).__name__}: {exc}") from None
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ReleaseError(
            f"{what} pipeline ConfigMap for release {release!r} in namespace {namespace} "
            f"(labels {selector}); is the release installed there with this chart version?"
        )
    configmap = found[0]
    return dict(configmap.data or {}), f"ConfigMap {namespace}/{configmap.metadata.name}"


def read_release_dir(directory: Path) -> tuple[dict[str, str], str]:
    """The data of a pipeline ConfigMap mounted as a volume (one file per key) and a name for it.

    The kubelet also puts hidden `..data` and `..<timestamp>` entries there (how it swaps a
    ConfigMap's files at once); they are not keys.
    """
    if not directory.is_dir():
        raise ReleaseError(f"{directory} is not a directory (mount the release's pipeline ConfigMap there)")
    data = {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if not path.name.startswith("..") and path.is_file()
    }
    if not data:
        raise ReleaseError(f"{directory} holds no parameters: is the release's pipeline ConfigMap mounted?")
    return data, f"the ConfigMap mounted at {directory}"
