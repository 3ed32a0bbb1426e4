"""`recommender-local cluster provision|up|down`: a throwaway single-node Kubernetes built from source."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.cli import OrderedGroup
from local.cluster.build import KUBERNETES_VERSION, provision_cluster
from local.cluster.cluster import Cluster
from local.stack.provision import cache_dir
from local.stack.servers import StackError

DEFAULT_WORKDIR = Path("/var/tmp/srk8s")  # short: containerd's socket path must stay under 108 bytes

command = OrderedGroup(
    "cluster",
    short_help="run a throwaway single-node Kubernetes (as root)",
    help=f"Build Kubernetes {KUBERNETES_VERSION}, CoreDNS and the pause binary once into {cache_dir()} "
    "(containerd, runc, the CNI plugins, iptables and etcd are Debian packages), then start (up) or "
    "remove (down) a single-node cluster on a bridge of its own: containerd, etcd, the control plane, "
    "kubelet, kube-proxy and CoreDNS as host processes. `down` leaves no process, pod, mount, cgroup, "
    "iptables rule or network device behind.",
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@command.command("provision", short_help="build the Kubernetes binaries, CoreDNS and pause; start nothing")
def provision_command() -> int:
    for name, path in provision_cluster().items():
        print(f"{name}: {path}")
    return 0


@command.command("up", short_help="start the cluster and wait until its node is Ready")
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR, show_default=True)
def up_command(workdir: Path) -> int:
    if (workdir / "cluster.json").exists():
        _say(f"error: a cluster already runs in {workdir}; `recommender-local cluster down` first")
        return 1
    try:
        cluster = Cluster(workdir, say=_say)
        cluster.up()
    except StackError as exc:
        _say(f"error: {exc}")
        return 1
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


@command.command("down", short_help="stop the cluster and remove everything it made")
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR, show_default=True)
def down_command(workdir: Path) -> int:
    Cluster(workdir, say=_say).down()
    return 0
