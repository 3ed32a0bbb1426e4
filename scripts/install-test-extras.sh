#!/usr/bin/env bash
# Optional system packages for the browser test (Chromium), the image and compose tests (podman/buildah
# on a debootstrap base) and the cluster test (containerd, iptables, CNI plugins, gcc for the pause
# binary). Debian/Ubuntu, as root. Without them those tests skip with a visible reason.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-test-extras: needs root and apt-get; skipping (browser and image tests will be skipped)"
  exit 0
fi
missing=()
for pair in chromium:chromium podman:podman buildah:buildah runc:runc debootstrap:debootstrap \
    containerd:containerd iptables:iptables conntrack:conntrack gcc:gcc ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-extras: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# crun fails on this kind of host's cgroups; runc works. Ulimits cannot be raised in the sandbox.
conf=/etc/containers/containers.conf
if [ ! -f "$conf" ]; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$conf"
  echo "install-test-extras: wrote $conf"
fi
