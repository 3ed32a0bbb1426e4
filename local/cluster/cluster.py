"""A throwaway single-node Kubernetes on this machine, from source-built binaries (local/cluster/build.py).

Everything runs as host processes in one work directory: containerd (its own socket, root and
state), etcd, the API server, controller manager, scheduler, kubelet, kube-proxy and CoreDNS.
The node's network is a bridge the cluster creates, with one address (`NODE_IP`) on which the
control plane, CoreDNS and the tests' Kafka and MinIO listen, so pods reach them and the host
reaches pods. A FORWARD rule drops anything from the bridge to any other interface, and CoreDNS
answers only cluster names: no traffic leaves this machine. `down()` removes every pod, process,
mount, cgroup, iptables rule, network namespace and the bridge, then the work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from common.retry import Backoff, poll
from local.cluster.build import KUBERNETES_VERSION, kubernetes_bin_dir, provision_cluster
from local.cluster.pki import Authority, Pair, service_account_keys
from local.stack.servers import ManagedServer, StackError, free_port

BRIDGE = "srk8s0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
NODE_NAME = "srtest-node"
API_PORT = 6443
PAUSE_IMAGE = "localhost/pause:3.10"
CNI_BIN = "/usr/lib/cni"
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
# Global switches the node needs (bridged traffic through iptables, routing); restored by down().
SYSCTLS = {"net/bridge/bridge-nf-call-iptables": "1", "net/ipv4/ip_forward": "1"}
Probe = Callable[[], bool]
GUARD_RULE = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]


def _run(cmd: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()}")
    return result


class Process(ManagedServer):
    """One cluster component as a host process; ready when `probe` says so."""

    start_timeout = 120.0

    def __init__(
        self, workdir: Path, name: str, command: list[str], probe: Probe, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        super().__init__(workdir)
        self._command = command
        self._probe = probe
        self._env = env or {}

    def command(self) -> tuple[list[str], dict[str, str]]:
        return self._command, self._env

    def ready(self) -> bool:
        return bool(self._probe())


class Cluster:
    def __init__(self, workdir: Path, say: Callable[[str], None] = print) -> None:
        self.workdir = workdir.resolve()
        self.say = say
        self.processes: list[Process] = []
        self.state = self.workdir / "cluster.json"
        self.pki = self.workdir / "pki"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.containerd_socket = self.workdir / "containerd" / "containerd.sock"
        self.api_url = f"https://{NODE_IP}:{API_PORT}"

    # ------------------------------------------------------------------ up

    def up(self) -> None:
        missing = [
            tool
            for tool in ("containerd", "runc", "iptables", "conntrack", "ip")
            if shutil.which(tool) is None
        ]
        if missing or not Path(CNI_BIN, "bridge").exists():
            raise StackError(
                "the cluster needs containerd, runc, iptables, conntrack, iproute2 and the CNI plugins "
                "(apt-get install containerd runc iptables conntrack iproute2 containernetworking-plugins)"
            )
        self.binaries = provision_cluster()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._save({"sysctls": {name: Path("/proc/sys", name).read_text().strip() for name in SYSCTLS}})
        try:
            self._network()
            self._certificates()
            self._containerd()
            self._import_pause()
            self._etcd()
            self._control_plane()
            self._coredns()
            self._node()
            self._wait_node_ready()
        except BaseException:
            self.down()
            raise

    def _save(self, extra: dict) -> None:
        data = json.loads(self.state.read_text()) if self.state.exists() else {}
        self.state.write_text(json.dumps(data | extra))

    def _step(self, line: str) -> None:
        self.say(f"cluster: {line}")

    def _network(self) -> None:
        self._step(f"bridge {BRIDGE} with {NODE_IP}/24, forwarding only within it")
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        _run(["iptables", "-I", *GUARD_RULE])
        for name, value in SYSCTLS.items():
            Path("/proc/sys", name).write_text(value)
        cni = self.workdir / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-srk8s.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "srk8s",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.workdir / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            )
        )

    def _certificates(self) -> None:
        self._step("certificates")
        ca = Authority(self.pki)
        self.ca = ca.pair
        self.apiserver_cert = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            hosts=(
                NODE_IP,
                KUBERNETES_SERVICE_IP,
                "127.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        self.kubelet_serving = ca.issue("kubelet-serving", NODE_NAME, server=True, hosts=(NODE_IP, NODE_NAME))
        self.apiserver_kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver", ("system:masters",)
        )
        self.sa = service_account_keys(self.pki)
        clients = {
            "admin": ("admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
        }
        self.kubeconfigs = {}
        for name, (common_name, organizations) in clients.items():
            pair = ca.issue(name, common_name, organizations)
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            self._write_kubeconfig(path, pair)
            self.kubeconfigs[name] = path

    def _write_kubeconfig(self, path: Path, pair: Pair) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "srtest",
            "clusters": [
                {
                    "name": "srtest",
                    "cluster": {"server": self.api_url, "certificate-authority": str(self.ca.cert)},
                }
            ],
            "users": [
                {"name": "user", "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)}}
            ],
            "contexts": [{"name": "srtest", "context": {"cluster": "srtest", "user": "user"}}],
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)

    def _start(
        self, name: str, command: list[str], probe: Probe, env: dict[str, str] | None = None
    ) -> Process:
        self._step(f"starting {name}")
        process = Process(self.workdir / "logs", name, command, probe, env)
        self.processes.append(process)  # first, so down() stops it even if it never gets ready
        process.start()
        self._save({"pids": {p.name: p.pid for p in self.processes}})
        return process

    def _containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir(exist_ok=True)
        config = root / "config.toml"
        config.write_text(f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = "{self.containerd_socket}.debug"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This host refuses a negative oom_score_adj; without this runc cannot start a sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.workdir / "cni"}"
""")
        self._start(
            "containerd",
            ["containerd", "--config", str(config)],
            lambda: self._ctr("version", check=False).returncode == 0,
        )

    def _ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", NAMESPACE, *args], check, timeout
        )

    def import_image(self, archive: Path) -> None:
        """Import an image archive (`podman save --format docker-archive`) for the kubelet."""
        self._ctr("images", "import", "--all-platforms", str(archive))

    def _import_pause(self) -> None:
        self._step(f"pause image {PAUSE_IMAGE}")
        pause = self.binaries["pause"]
        if _run(["podman", "image", "exists", PAUSE_IMAGE], check=False).returncode != 0:
            container = _run(["buildah", "from", "scratch"]).stdout.strip()
            try:
                _run(["buildah", "copy", container, str(pause), "/pause"])
                _run(["buildah", "config", "--entrypoint", '["/pause"]', container])
                _run(["buildah", "commit", container, PAUSE_IMAGE])
            finally:
                _run(["buildah", "rm", container], check=False)
        self.save_and_import(PAUSE_IMAGE)

    def save_and_import(self, image: str) -> None:
        archive = self.workdir / "image.tar"
        _run(["podman", "save", "--format", "docker-archive", "-o", str(archive), image], timeout=900)
        try:
            self.import_image(archive)
        finally:
            archive.unlink(missing_ok=True)

    def _etcd(self) -> None:
        self.etcd_port = free_port()
        peer = free_port()
        self._start(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--name",
                "srtest",
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"srtest=http://127.0.0.1:{peer}",
            ],
            lambda: self._http(f"http://127.0.0.1:{self.etcd_port}/health"),
        )

    def _http(self, url: str, ca: Path | None = None, cert: Pair | None = None) -> bool:
        context = ssl.create_default_context(cafile=str(ca)) if ca else None
        if context and cert:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        try:
            response = httpx.get(url, timeout=2, verify=context or True)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def api_ready(self) -> bool:
        admin = Pair(self.pki / "admin.crt", self.pki / "admin.key")
        return self._http(f"{self.api_url}/readyz", ca=self.ca.cert, cert=admin)

    def _control_plane(self) -> None:
        bin_dir = self.binaries["kubernetes"]
        self._start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={NODE_IP}",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={self.ca.cert}",
                f"--tls-cert-file={self.apiserver_cert.cert}",
                f"--tls-private-key-file={self.apiserver_cert.key}",
                f"--kubelet-client-certificate={self.apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={self.apiserver_kubelet_client.key}",
                f"--kubelet-certificate-authority={self.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
            self.api_ready,
        )
        self._start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfigs['controller-manager']}",
                f"--authentication-kubeconfig={self.kubeconfigs['controller-manager']}",
                f"--authorization-kubeconfig={self.kubeconfigs['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.sa.key}",
                f"--root-ca-file={self.ca.cert}",
                f"--cluster-signing-cert-file={self.ca.cert}",
                f"--cluster-signing-key-file={self.pki / 'ca.key'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam",
            ],
            lambda: True,
        )
        self._start(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfigs['scheduler']}",
                f"--authentication-kubeconfig={self.kubeconfigs['scheduler']}",
                f"--authorization-kubeconfig={self.kubeconfigs['scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
            ],
            lambda: True,
        )

    def _coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        # Cluster names only, no forwarding: nothing resolves (or is sent) outside this machine.
        corefile.write_text(f"""cluster.local:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {self.kubeconfig}
        pods insecure
    }}
}}
.:53 {{
    bind {NODE_IP}
    errors
}}
""")
        self._start(
            "coredns",
            [str(self.binaries["coredns"]), "-conf", str(corefile)],
            lambda: _run(["ss", "-lun", "sport = :53"], check=False).stdout.count(NODE_IP) > 0,
        )

    def _node(self) -> None:
        bin_dir = self.binaries["kubernetes"]
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")  # pods get only the cluster's DNS
        config = self.workdir / "kubelet.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.ca.cert)},
                    },
                    "authorization": {"mode": "Webhook"},
                    "address": NODE_IP,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "clusterDomain": "cluster.local",
                    "clusterDNS": [NODE_IP],
                    "resolvConf": str(resolv),
                    "tlsCertFile": str(self.kubelet_serving.cert),
                    "tlsPrivateKeyFile": str(self.kubelet_serving.key),
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                }
            )
        )
        self._start(
            "kubelet",
            [
                str(bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfigs['kubelet']}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={self.workdir / 'kubelet'}",
            ],
            lambda: self._http("http://127.0.0.1:10248/healthz"),
        )
        self._start(
            "kube-proxy",
            [
                str(bin_dir / "kube-proxy"),
                f"--kubeconfig={self.kubeconfigs['kube-proxy']}",
                f"--hostname-override={NODE_NAME}",
                f"--cluster-cidr={POD_CIDR}",
                "--proxy-mode=iptables",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
            ],
            lambda: True,
        )

    def _wait_node_ready(self) -> None:
        self._step(f"waiting for node {NODE_NAME} to be Ready")
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig)))

        def ready() -> bool:
            try:
                node = api.read_node(NODE_NAME)
            except Exception:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

        if not poll(ready, Backoff(0.5), 180):
            kubelet = next(p for p in self.processes if p.name == "kubelet")
            raise StackError(f"node {NODE_NAME} not Ready after 180 s; kubelet log:\n{kubelet.log_tail(40)}")
        self._step(f"Kubernetes {KUBERNETES_VERSION} ready: KUBECONFIG={self.kubeconfig}")

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Stop everything and remove every trace; safe to call on a half-started cluster."""
        self._step("stopping")
        self._remove_pods()
        state = json.loads(self.state.read_text()) if self.state.exists() else {}
        by_name = {p.name: p for p in self.processes}
        for name in (
            "kube-proxy",
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "coredns",
            "etcd",
        ):
            if name in by_name:
                by_name[name].stop()
            elif name in state.get("pids", {}):
                _kill_group(state["pids"][name])
        kube_proxy = kubernetes_bin_dir() / "kube-proxy"
        if kube_proxy.exists():  # its iptables chains
            _run([str(kube_proxy), "--cleanup"], check=False)
        self._kill_shims()
        if "containerd" in by_name:
            by_name["containerd"].stop()
        elif "containerd" in state.get("pids", {}):
            _kill_group(state["pids"]["containerd"])
        self._unmount()
        self._remove_cgroups()
        with contextlib.suppress(StackError):
            _run(["iptables", "-D", *GUARD_RULE])
        _remove_kube_chains()
        _run(["ip", "link", "del", BRIDGE], check=False)
        for name, value in state.get("sysctls", {}).items():
            Path("/proc/sys", name).write_text(value)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._step("stopped; nothing left behind")

    def _remove_pods(self) -> None:
        if not self.containerd_socket.exists():
            return
        # Every CRI container (pod sandboxes included) through ctr: kill, wait for the tasks to end.
        listed = self._ctr("containers", "list", "--quiet", check=False)
        for container in listed.stdout.split():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
        poll(lambda: not self._ctr("tasks", "list", "--quiet", check=False).stdout.strip(), Backoff(0.5), 30)
        for container in listed.stdout.split():
            self._ctr("tasks", "delete", "--force", container, check=False)
            self._ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        marker = str(self.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if "containerd-shim" in cmdline and marker in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount(self) -> None:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        prefixes = (str(self.workdir), "/run/netns/cni-")
        for mount in sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True):
            _run(["umount", "-l", mount], check=False)
        for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
            netns.unlink(missing_ok=True)

    def _remove_cgroups(self) -> None:
        roots = [Path("/sys/fs/cgroup")] + [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
        for root in roots:
            for top in ("kubepods", "kubepods.slice"):
                base = root / top
                if base.is_dir():
                    for directory in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if directory.is_dir():
                            with contextlib.suppress(OSError):
                                directory.rmdir()
                    with contextlib.suppress(OSError):
                        base.rmdir()


def _remove_kube_chains() -> None:
    """The KUBE-* chains kubelet makes (KUBE-FIREWALL, the canaries), which kube-proxy --cleanup
    leaves: the jumps to them from the built-in chains, then the chains."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _run([tool, "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in rules:
                parts = rule.split()
                jumps_to_kube = "-j" in parts and parts[parts.index("-j") + 1].startswith("KUBE-")
                if parts[:1] == ["-A"] and not parts[1].startswith("KUBE-") and jumps_to_kube:
                    _run([tool, "-t", table, "-D", *parts[1:]], check=False)
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                _run([tool, "-t", table, "-F", chain], check=False)
            for chain in chains:
                _run([tool, "-t", table, "-X", chain], check=False)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
