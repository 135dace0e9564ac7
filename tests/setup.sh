#!/bin/bash
# Installs what a fresh Debian machine lacks to build xvs and run its demo and tests
# (TESTBED.md's package list). Safe to run again: installs only what is missing.
#
#   bash tests/setup.sh [--bench]     # --bench: also the peers the harness measures (OVS)
set -euo pipefail

PKGS=(
  # building xsk-rs (libxdp-sys, libbpf-sys, bindgen)
  clang llvm libelf-dev zlib1g-dev m4 pkg-config make libbpf-dev
  # topologies and clients used by the demo and the end-to-end tests
  iproute2 ethtool iputils-ping iperf3 netsniff-ng tcpdump bind9-dnsutils curl
  python3-scapy nftables dnsmasq-base procps psmisc
  # the overlay test decodes VXLAN on the underlay
  tshark
  # the Docker test: a private dockerd (20.10) and an image made from busybox-static
  docker.io busybox-static
  # the CNI test: the reference plugins (tuning, portmap, host-local) in /usr/lib/cni
  containernetworking-plugins
  # the cluster test: a real etcd 3.4 (and etcdctl); building its client needs protoc
  etcd-server etcd-client protobuf-compiler libprotobuf-dev
)
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(openvswitch-switch)
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs packages): sudo bash $0" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain comes with the machine (rustup); make sure cargo is on PATH.
if ! command -v cargo >/dev/null; then
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
fi
command -v cargo >/dev/null || { echo "setup.sh: no cargo on this machine (rustup expected)" >&2; exit 1; }

# AF_XDP needs locked memory; CAP_IPC_LOCK covers it as root, but raise the soft limit anyway.
ulimit -l unlimited 2>/dev/null || true
echo "setup.sh: ready"
