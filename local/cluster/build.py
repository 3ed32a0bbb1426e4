"""Build a single-node Kubernetes from source, once, into the project cache.

`go install` cannot build Kubernetes: k8s.io/kubernetes replaces its staging modules (k8s.io/api,
k8s.io/client-go, ...) with local paths. A wrapper module requires k8s.io/kubernetes and replaces
each staging module with its published version (v0.<minor>.<patch>), then builds the commands.
etcd is built the same way (its server module replaces its sibling modules with local paths too),
CoreDNS with `go install`; the pause image's binary is compiled from the Kubernetes module's pause.c.
containerd, runc, the CNI plugins and iptables are Debian packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from local.stack.provision import (
    MARKER,
    ProvisionError,
    _require_tool,
    _run_with_progress,
    cache_dir,
    go_install,
)

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"  # the 3.6 line Kubernetes 1.34 is tested with
COREDNS_MODULE = "github.com/coredns/coredns"
COREDNS_VERSION = "v1.15.0"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


def _staging_replaces(go: str, env: dict[str, str]) -> list[str]:
    """`replace` lines for each k8s.io/<staging> v0.0.0 the Kubernetes module requires."""
    downloaded = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
    )
    if downloaded.returncode != 0:
        raise ProvisionError(
            f"go mod download k8s.io/kubernetes@{KUBERNETES_VERSION}: {downloaded.stderr.strip()}"
        )
    go_mod = Path(json.loads(downloaded.stdout)["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0$", go_mod, re.MULTILINE)))
    published = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    return [f"replace {module} => {module} {published}" for module in staging]


def _version_flags() -> str:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    package = "k8s.io/component-base/version"
    # Helm checks a chart's kubeVersion against the API server's /version, which these set.
    return " ".join(
        f"-X {package}.{name}={value}"
        for name, value in (
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )


def kubernetes_bin_dir() -> Path:
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / "bin"


def kubernetes_binaries() -> Path:
    """Folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy."""
    bin_dir = kubernetes_bin_dir()
    home = bin_dir.parent
    if (home / MARKER).exists() and all((bin_dir / c).exists() for c in COMMANDS):
        return bin_dir
    go = _require_tool("go", "build Kubernetes from the Go module proxy")
    env = {**os.environ, "CGO_ENABLED": "0"}
    source = home / "src"
    source.mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text(
        "module local/kubernetes\n\ngo 1.24\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\n" + "\n".join(_staging_replaces(go, env)) + "\n"
    )
    # Importing each command's app package keeps the requirements `go mod tidy` needs.
    (source / "main.go").write_text(
        "package main\n\nimport (\n"
        + "".join(f'\t_ "k8s.io/kubernetes/cmd/{command}/app"\n' for command in COMMANDS)
        + ")\n\nfunc main() {}\n"
    )
    _run_with_progress(
        [go, "mod", "tidy"], f"downloading the Kubernetes {KUBERNETES_VERSION} modules", env, source
    )
    bin_dir.mkdir(exist_ok=True)
    for command in COMMANDS:
        _run_with_progress(
            [
                go,
                "build",
                "-trimpath",
                "-ldflags",
                _version_flags(),
                "-o",
                str(bin_dir / command),
                f"k8s.io/kubernetes/cmd/{command}",
            ],
            f"building {command} {KUBERNETES_VERSION}",
            env,
            source,
        )
    (home / MARKER).touch()
    return bin_dir


def etcd_binary() -> Path:
    """etcd from go.etcd.io/etcd/server/v3 through a wrapper module (`go install` refuses the
    module's replace directives)."""
    home = cache_dir() / f"etcd-{ETCD_VERSION}"
    target = home / "etcd"
    if (home / MARKER).exists() and target.exists():
        return target
    go = _require_tool("go", "build etcd from the Go module proxy")
    env = {**os.environ, "CGO_ENABLED": "0"}
    source = home / "src"
    source.mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text(
        f"module local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    (source / "main.go").write_text(
        'package main\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n\nfunc main() {}\n'
    )
    _run_with_progress([go, "mod", "tidy"], f"downloading the etcd {ETCD_VERSION} modules", env, source)
    _run_with_progress(
        [go, "build", "-trimpath", "-o", str(target), "go.etcd.io/etcd/server/v3"],
        f"building etcd {ETCD_VERSION}",
        env,
        source,
    )
    (home / MARKER).touch()
    return target


def coredns_binary() -> Path:
    return go_install(
        COREDNS_MODULE, COREDNS_VERSION, "coredns", f"building CoreDNS {COREDNS_VERSION} with go install"
    )


def pause_binary() -> Path:
    """The pod sandbox's process, from the Kubernetes module's pause.c (no registry serves the image)."""
    home = cache_dir() / f"pause-{KUBERNETES_VERSION}"
    target = home / "pause"
    if (home / MARKER).exists() and target.exists():
        return target
    kubernetes_binaries()  # the module is in the Go module cache from then on
    go = _require_tool("go", "find the Kubernetes module")
    listed = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        capture_output=True,
        text=True,
        cwd=cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / "src",
    )
    source = Path(listed.stdout.strip()) / "build" / "pause" / "linux" / "pause.c"
    if listed.returncode != 0 or not source.exists():
        raise ProvisionError(f"pause.c not found in the Kubernetes module: {listed.stderr.strip()}")
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        gcc = _require_tool("gcc", "compile the pause binary (apt-get install gcc libc6-dev)")
        _run_with_progress(
            [gcc, "-Os", "-static", "-DVERSION=" + KUBERNETES_VERSION, "-o", f"{tmp}/pause", str(source)],
            "compiling pause",
        )
        shutil.move(f"{tmp}/pause", target)
    (home / MARKER).touch()
    return target


def provision_cluster() -> dict[str, Path]:
    return {
        "kubernetes": kubernetes_binaries(),
        "etcd": etcd_binary(),
        "coredns": coredns_binary(),
        "pause": pause_binary(),
    }
