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
GO_ENV = {**os.environ, "CGO_ENABLED": "0"}  # static binaries
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


def _wrapper_module(home: Path, name: str, requirement: str, imports: list[str], replaces: list[str]) -> Path:
    """A module in `home`/src that requires `requirement` ("module version"), with `replaces`, and
    imports `imports` (so `go mod tidy` keeps what they need); tidied. Returns its folder."""
    go = _require_tool("go", f"build {name} from the Go module proxy")
    source = home / "src"
    source.mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text(
        f"module local/{name}\n\ngo 1.24\n\nrequire {requirement}\n\n" + "".join(f"{r}\n" for r in replaces)
    )
    (source / "main.go").write_text(
        "package main\n\nimport (\n" + "".join(f'\t_ "{i}"\n' for i in imports) + ")\n\nfunc main() {}\n"
    )
    _run_with_progress([go, "mod", "tidy"], f"downloading the modules of {requirement}", GO_ENV, source)
    return source


def _go_build(source: Path, package: str, target: Path, label: str, *flags: str) -> None:
    go = _require_tool("go", "build from the Go module proxy")
    _run_with_progress([go, "build", "-trimpath", *flags, "-o", str(target), package], label, GO_ENV, source)


def kubernetes_bin_dir() -> Path:
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / "bin"


def kubernetes_binaries() -> Path:
    """Folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy."""
    bin_dir = kubernetes_bin_dir()
    home = bin_dir.parent
    if (home / MARKER).exists() and all((bin_dir / c).exists() for c in COMMANDS):
        return bin_dir
    source = _wrapper_module(
        home,
        "kubernetes",
        f"k8s.io/kubernetes {KUBERNETES_VERSION}",
        # Each command's app package, not the command: a main package cannot be imported.
        [f"k8s.io/kubernetes/cmd/{command}/app" for command in COMMANDS],
        _staging_replaces(_require_tool("go", "build Kubernetes"), GO_ENV),
    )
    bin_dir.mkdir(exist_ok=True)
    for command in COMMANDS:
        _go_build(
            source, f"k8s.io/kubernetes/cmd/{command}", bin_dir / command,
            f"building {command} {KUBERNETES_VERSION}", "-ldflags", _version_flags(),
        )  # fmt: skip
    (home / MARKER).touch()
    return bin_dir


def etcd_binary() -> Path:
    """etcd from go.etcd.io/etcd/server/v3 through a wrapper module (`go install` refuses the
    module's replace directives)."""
    home = cache_dir() / f"etcd-{ETCD_VERSION}"
    target = home / "etcd"
    if (home / MARKER).exists() and target.exists():
        return target
    source = _wrapper_module(
        home,
        "etcd",
        f"go.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        ["go.etcd.io/etcd/server/v3/etcdmain"],
        [],
    )
    _go_build(source, "go.etcd.io/etcd/server/v3", target, f"building etcd {ETCD_VERSION}")
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
