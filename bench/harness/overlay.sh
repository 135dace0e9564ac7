#!/bin/bash
# Overlays, side by side in one run: container to container across two host namespaces
# through xvs's VXLAN overlay (one xvsd per host, the uplink sharing the host's underlay
# interface, the VTEP on it) beside the kernel doing the same thing (on each host a Linux
# bridge with a kernel vxlan device of the same VNI, dstport 4789, the container on a veth in
# the bridge). Same machine, same clients, same VNI and addresses.
#
#   sudo bash bench/harness/overlay.sh [--secs N] [--workers N] [--port-type tap|veth] [--no-build]
#
# Rows (container on host A -> container on host B): UDP 64-byte packets per second, TCP 1
# stream, TCP 4 streams, ping round trip. Prints a table with the xvs/kernel ratio. The two
# host namespaces are joined by one veth pair (the underlay, MTU 1500: the overlays' MTU is
# 1450 on both sides). The kernel's veths keep their default offloads (as Docker's overlay
# has them); xvs's uplinks have tx checksum offload off (AF_XDP needs full checksums).
# xvs's endpoints are TAPs with offloads by default (--port-type veth: AF_XDP veths).
# Binaries: $XVS_BIN_DIR, else ${CARGO_TARGET_DIR:-target}/release.
# Everything it makes carries a unique prefix and is removed at the end, even on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=5
WORKERS=1
PORT_TYPE=tap
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --port-type) PORT_TYPE=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "overlay.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$PORT_TYPE" in tap|veth) ;; *) echo "overlay.sh: --port-type tap|veth" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "overlay.sh: needs root" >&2; exit 1; }
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

P=xv$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-overlay-$P.XXXXXX")
XVSD_PIDS=()
cleanup() {
  set +e
  for pid in "${XVSD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P"); do
    for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns"
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -p xvs-vswitchd -p xvs-ctl >/dev/null)
fi
BIN=${XVS_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
[ -x "$BIN/xvsd" ] && [ -x "$BIN/xvsctl" ] || { echo "overlay.sh: no xvsd/xvsctl in $BIN" >&2; exit 1; }

VNI=5000
ns() { ip netns add "$1"; ip -n "$1" link set lo up; }
# The underlay: HOST_A:ul0 (198.18.N.1) <-> HOST_B:ul0 (198.18.N.2), MTU 1500.
underlay() {
  ip link add ul0 netns "$1" type veth peer name ul0 netns "$2"
  ip -n "$1" addr add "$3.1/24" dev ul0; ip -n "$2" addr add "$3.2/24" dev ul0
  ip -n "$1" link set ul0 up; ip -n "$2" link set ul0 up
}
# iperf3's JSON (stdin) -> received Gbit/s.
gbps() { python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)'; }
wait_port() { for _ in $(seq 100); do ip netns exec "$1" ss -ltn | grep -q ":$2 " && return; sleep 0.05; done; }

# measure CLIENT_NS SERVER_NS SERVER_IP -> "udp_kpps tcp1 tcp4 ping_ms"
measure() {
  local c=$1 s=$2 ip=$3 r
  ip netns exec "$s" iperf3 -s -D -p 5201 >/dev/null; wait_port "$s" 5201
  # A warm-up ping: ARP and FDB learning on both sides before anything is timed.
  ip netns exec "$c" ping -c 3 -i 0.2 -W 1 -q "$ip" >/dev/null || true
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$ip" -u -l 64 -b 0 -t "$SECS" -J | python3 -c 'import json,sys
s=json.load(sys.stdin)["end"]["sum"]; print((s["packets"]-s["lost_packets"])/s["seconds"]/1e3)')
  local udp=$r
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$ip" -t "$SECS" -J | gbps)
  local tcp1=$r
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$ip" -t "$SECS" -P 4 -J | gbps)
  local tcp4=$r
  local ping
  ping=$(ip netns exec "$c" ping -c 50 -i 0.02 -q "$ip" | awk -F/ '/rtt/ {print $5}')
  echo "$udp $tcp1 $tcp4 ${ping:-0}"
}

echo "== kernel: a Linux bridge + vxlan (VNI $VNI, dstport 4789) on each host"
ns "${P}ka"; ns "${P}kb"; ns "${P}kca"; ns "${P}kcb"
underlay "${P}ka" "${P}kb" 198.18.72
for side in a b; do
  h="${P}k$side"; c="${P}kc$side"
  if [ "$side" = a ]; then local_ip=198.18.72.1; remote_ip=198.18.72.2; cip=10.210.0.11; else local_ip=198.18.72.2; remote_ip=198.18.72.1; cip=10.210.0.21; fi
  ip -n "$h" link add vx0 type vxlan id "$VNI" dstport 4789 local "$local_ip" dev ul0
  ip netns exec "$h" bridge fdb append 00:00:00:00:00:00 dev vx0 dst "$remote_ip"
  ip -n "$h" link add br0 type bridge
  ip -n "$h" link set vx0 master br0; ip -n "$h" link set vx0 up
  ip link add vc netns "$h" type veth peer name eth0 netns "$c"
  ip -n "$h" link set vc master br0; ip -n "$h" link set vc up; ip -n "$h" link set br0 up
  ip -n "$c" addr add "$cip/24" dev eth0; ip -n "$c" link set eth0 mtu 1450 up
done
KERNEL=$(measure "${P}kca" "${P}kcb" 10.210.0.21)
for n in ka kb kca kcb; do
  for pid in $(ip netns pids "${P}$n"); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "${P}$n"
done

echo "== xvs: two xvsd, VXLAN overlay between them ($WORKERS worker(s) each, $PORT_TYPE endpoints)"
ns "${P}xa"; ns "${P}xb"; ns "${P}xca"; ns "${P}xcb"
underlay "${P}xa" "${P}xb" 198.18.73
for side in a b; do
  ip netns exec "${P}x$side" ethtool -K ul0 tx off >/dev/null
  ip netns exec "${P}x$side" "$BIN/xvsd" --socket "$WORK/$side.sock" --state-dir "$WORK/state-$side" \
    --workers "$WORKERS" 2>"$WORK/xvsd-$side.log" &
  XVSD_PIDS+=($!)
done
ctl() { local side=$1; shift; "$BIN/xvsctl" --socket "$WORK/$side.sock" "$@"; }
for side in a b; do
  for _ in $(seq 200); do ctl "$side" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
for side in a b; do
  if [ "$side" = a ]; then vtep=198.18.73.11; peer=198.18.73.12; cip=10.210.0.11; else vtep=198.18.73.12; peer=198.18.73.11; cip=10.210.0.21; fi
  ctl "$side" uplink set ul0 --ip "$vtep/24" >/dev/null
  ctl "$side" vtep set --local "$vtep" >/dev/null
  ctl "$side" network create ov --driver overlay --subnet 10.210.0.0/24 --vni "$VNI" >/dev/null
  ctl "$side" vtep peer add ov "$peer" >/dev/null
  ctl "$side" network connect ov "${P}xc$side" --ip "$cip" --port-type "$PORT_TYPE" >/dev/null
done
XVS=$(measure "${P}xca" "${P}xcb" 10.210.0.21)
for side in a b; do
  ctl "$side" stats | awk '/DROP_REASON/,0' | grep -v " 0 " | sed "s/^/host $side: /" | head -20 >>"$WORK/drops" || true
  ctl "$side" vtep peer ls --json | python3 -c 'import json,sys
for p in json.load(sys.stdin):
    print("host %s: peer %s (VNI %d): tx %d rx %d packets" % (sys.argv[1], p["remote"], p["vni"], p["tx_packets"], p["rx_packets"]))' "$side" >>"$WORK/peers" || true
  # Where the underlay lost packets (the UDP row offers more than a worker takes).
  ctl "$side" stats --json | python3 -c 'import json,sys
for p in json.load(sys.stdin)["ports"]:
    if p["port"] == "ul0":
        extra = " ".join("%s %d" % kv for kv in sorted(p.get("backend", {}).items()) if kv[1])
        print("host %s: uplink ul0: rx %d tx %d packets, rx_drops %d tx_drops %d %s" % (sys.argv[1],
              p["rx_packets"], p["tx_packets"], p["rx_drops"], p["tx_drops"], extra))' "$side" >>"$WORK/peers" || true
done

python3 - "$KERNEL" "$XVS" "$SECS" "$WORKERS" "$PORT_TYPE" <<'EOF'
import sys
k = [float(x) for x in sys.argv[1].split()]
x = [float(x) for x in sys.argv[2].split()]
rows = [("container -> container UDP 64 B", "kpps", True),
        ("container -> container TCP, 1 stream", "Gbit/s", True),
        ("container -> container TCP, 4 streams", "Gbit/s", True),
        ("container -> container ping", "ms RTT", False)]
print(f"\n{'row (across two hosts, VXLAN)':<42} {'unit':<8} {'kernel':>10} {'xvs':>10} {'xvs/kernel':>11}")
for (name, unit, higher), kv, xv in zip(rows, k, x):
    ratio = (xv / kv if higher else kv / xv) if kv and xv else 0
    print(f"{name:<42} {unit:<8} {kv:>10.3f} {xv:>10.3f} {ratio:>10.2f}x")
print(f"\n(one run, {sys.argv[3]} s each; xvs: {sys.argv[4]} worker(s) per xvsd, {sys.argv[5]} endpoints;")
print(" ping ratio is kernel/xvs: >1 means xvs is faster)")
EOF
[ -s "$WORK/peers" ] && { echo; cat "$WORK/peers"; }
if [ -s "$WORK/drops" ]; then echo; echo "xvs drops during the run:"; cat "$WORK/drops"; fi
