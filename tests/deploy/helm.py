"""helm for the chart tests, built once with `go install` into the project cache (like MinIO)."""

from __future__ import annotations

from pathlib import Path

from local.stack.provision import go_install

HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"


def helm_binary() -> Path:
    return go_install(HELM_MODULE, HELM_VERSION, "helm", f"building helm {HELM_VERSION} with go install")
