#!/bin/bash
# The way out, side by side in one run: xvs masquerade and published ports beside the kernel
# doing the same thing Docker's way (a router namespace with a Linux bridge, ip_forward and
# nftables masquerade + DNAT). Same machine, same clients, same sizes.
#
#   sudo bash bench/harness/nat.sh [--secs N] [--workers N] [--no-build]
#
# Rows (container -> outside, masqueraded): TCP 1 stream, TCP 4 streams, UDP 64-byte packets
# per second, ping round trip; (outside -> published port, DNAT): TCP 1 stream and TCP
# connections per second (connect, 1 byte, close), also beside Docker's docker-proxy when it
# is installed (/usr/sbin/docker-proxy, from docker.io). Prints a table with the xvs/kernel ratio.
# Everything it makes carries a unique prefix and is removed at the end, even on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=5
WORKERS=2
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "nat.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "nat.sh: needs root" >&2; exit 1; }
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

P=xn$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-nat-$P.XXXXXX")
XVSD_PID=
cleanup() {
  set +e
  [ -n "$XVSD_PID" ] && kill -TERM "$XVSD_PID" 2>/dev/null && wait "$XVSD_PID" 2>/dev/null
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P"); do
    for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -p xvs-vswitchd -p xvs-ctl >/dev/null)
fi
XVSCTL="$ROOT/target/release/xvsctl"

ns() { ip netns add "$1"; ip -n "$1" link set lo up; }
# veth A:IFA(ADDR_A) <-> B:IFB(ADDR_B), tx checksum offload off (AF_XDP needs full checksums).
pair() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  [ -n "$3" ] && ip -n "$1" addr add "$3" dev "$2"
  [ -n "$6" ] && ip -n "$4" addr add "$6" dev "$5"
  ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
  ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
  ip netns exec "$4" ethtool -K "$5" tx off >/dev/null
}
# iperf3's JSON (stdin) -> received Gbit/s.
gbps() { python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)'; }
wait_port() { for _ in $(seq 100); do ip netns exec "$1" ss -ltn | grep -q ":$2 " && return; sleep 0.05; done; }


# measure OUTSIDE_NS OUTSIDE_IP CONTAINER_NS PUBLISHED_IP -> "tcp1 tcp4 udp_pps ping_ms in_tcp cps"
measure() {
  local o=$1 oip=$2 c=$3 pub=$4 r
  ip netns exec "$o" iperf3 -s -D -p 5201 >/dev/null; wait_port "$o" 5201
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$oip" -t "$SECS" -J | gbps)
  local tcp1=$r
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$oip" -t "$SECS" -P 4 -J | gbps)
  local tcp4=$r
  r=$(ip netns exec "$c" timeout 60 iperf3 -c "$oip" -u -l 64 -b 0 -t "$SECS" -J | python3 -c 'import json,sys
s=json.load(sys.stdin)["end"]["sum"]; print((s["packets"]-s["lost_packets"])/s["seconds"]/1e3)')
  local udp=$r
  local ping
  ping=$(ip netns exec "$c" ping -c 50 -i 0.02 -q "$oip" | awk -F/ '/rtt/ {print $5}')
  ip netns exec "$c" iperf3 -s -D -p 5201 >/dev/null; wait_port "$c" 5201
  r=$(ip netns exec "$o" timeout 60 iperf3 -c "$pub" -p 8080 -t "$SECS" -J | gbps)
  local intcp=$r
  ip netns exec "$c" timeout 120 python3 "$ROOT/bench/harness/cps.py" server 7000 >/dev/null 2>&1 &
  wait_port "$c" 7000
  local cps
  cps=$(ip netns exec "$o" timeout 60 python3 "$ROOT/bench/harness/cps.py" client "$pub" 8081 "$SECS")
  echo "$tcp1 $tcp4 $udp $ping $intcp $cps"
}

echo "== kernel: bridge + nftables masquerade/DNAT in a router namespace"
ns "${P}kr"; ns "${P}ko"; ns "${P}kc"
pair "${P}kr" up0 198.18.60.1/24 "${P}ko" eth0 198.18.60.2/24
ip -n "${P}kr" link add br0 type bridge; ip -n "${P}kr" addr add 10.150.1.1/24 dev br0; ip -n "${P}kr" link set br0 up
pair "${P}kr" vc "" "${P}kc" eth0 10.150.1.2/24
ip -n "${P}kr" link set vc master br0
ip -n "${P}kc" route add default via 10.150.1.1
ip netns exec "${P}kr" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "${P}kr" nft -f - <<'EOF'
table ip nat {
  chain pre { type nat hook prerouting priority -100; iifname "up0" tcp dport 8080 dnat to 10.150.1.2:5201; iifname "up0" tcp dport 8081 dnat to 10.150.1.2:7000; }
  chain post { type nat hook postrouting priority 100; oifname "up0" masquerade; }
}
EOF
KERNEL=$(measure "${P}ko" 198.18.60.2 "${P}kc" 198.18.60.1)
# Docker's own userland proxy (docker-proxy, what publishes a port when hairpin NAT is off or
# for localhost) in the router namespace, to the same container servers. It reports readiness
# on descriptor 3 (dockerd's pipe) and closes it: without one open, that is its own listener.
PROXY="0 0"
if [ -x /usr/sbin/docker-proxy ]; then
  echo "== docker-proxy in the router namespace"
  ip netns exec "${P}kr" /usr/sbin/docker-proxy -proto tcp -host-ip 198.18.60.1 -host-port 8090 \
    -container-ip 10.150.1.2 -container-port 5201 3>/dev/null &
  ip netns exec "${P}kr" /usr/sbin/docker-proxy -proto tcp -host-ip 198.18.60.1 -host-port 8091 \
    -container-ip 10.150.1.2 -container-port 7001 3>/dev/null &
  ip netns exec "${P}kc" timeout 120 python3 "$ROOT/bench/harness/cps.py" server 7001 >/dev/null 2>&1 &
  wait_port "${P}kr" 8090; wait_port "${P}kr" 8091; wait_port "${P}kc" 7001
  ptcp=$(ip netns exec "${P}ko" timeout 60 iperf3 -c 198.18.60.1 -p 8090 -t "$SECS" -J | gbps)
  pcps=$(ip netns exec "${P}ko" timeout 60 python3 "$ROOT/bench/harness/cps.py" client 198.18.60.1 8091 "$SECS")
  PROXY="$ptcp $pcps"
fi
for n in kr ko kc; do
  for pid in $(ip netns pids "${P}$n"); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "${P}$n"
done

echo "== xvs: masquerade and published ports in the datapath ($WORKERS workers)"
ns "${P}xh"; ns "${P}xo"; ns "${P}xc"
pair "${P}xh" up0 198.18.61.1/24 "${P}xo" eth0 198.18.61.2/24
export XVS_SOCKET=$WORK/xvsd.sock
ip netns exec "${P}xh" "$ROOT/target/release/xvsd" --socket "$XVS_SOCKET" --state-dir "$WORK/state" \
  --workers "$WORKERS" 2>"$WORK/xvsd.log" &
XVSD_PID=$!
for _ in $(seq 100); do [ -S "$XVS_SOCKET" ] && break; sleep 0.05; done
"$XVSCTL" uplink set up0 --ip 198.18.61.9/24 >/dev/null
"$XVSCTL" network create bench --subnet 10.151.1.0/24 >/dev/null
"$XVSCTL" network connect bench "${P}xc" --publish 8080:5201 --publish 8081:7000 >/dev/null
XVS=$(measure "${P}xo" 198.18.61.2 "${P}xc" 198.18.61.9)
"$XVSCTL" stats | awk '/DROP_REASON/,0' | grep -v " 0 " | head -20 >"$WORK/drops" || true
# How much of the inbound TCP reached the container's TAP coalesced (software GRO).
"$XVSCTL" stats --json | python3 -c 'import json,sys
for p in json.load(sys.stdin)["ports"]:
    b = p.get("backend", {})
    if "tx_coalesced" in b:
        print("TAP %s: %d frames written as %d super-frames" % (p["port"], b["tx_coalesced"], b["tx_super_frames"]))' >"$WORK/gro" || true

python3 - "$KERNEL" "$XVS" "$SECS" "$WORKERS" "$PROXY" <<'EOF'
import sys
p = [float(x) for x in sys.argv[5].split()]
k = [float(x) for x in sys.argv[1].split()] + p
x = [float(x) for x in sys.argv[2].split()]
x += x[4:6]
rows = [("container -> outside TCP, 1 stream", "Gbit/s", True),
        ("container -> outside TCP, 4 streams", "Gbit/s", True),
        ("container -> outside UDP 64 B", "kpps", True),
        ("container -> outside ping", "ms RTT", False),
        ("outside -> published port TCP", "Gbit/s", True),
        ("outside -> published port connections", "conn/s", True),
        ("published TCP, beside docker-proxy", "Gbit/s", True),
        ("published connections, beside docker-proxy", "conn/s", True)]
print(f"\n{'row':<42} {'unit':<8} {'kernel':>10} {'xvs':>10} {'xvs/kernel':>11}")
for (name, unit, higher), kv, xv in zip(rows, k, x):
    ratio = (xv / kv if higher else kv / xv) if kv and xv else 0
    print(f"{name:<42} {unit:<8} {kv:>10.3f} {xv:>10.3f} {ratio:>10.2f}x")
print(f"\n(one run, {sys.argv[3]} s each, xvs with {sys.argv[4]} workers; ping ratio is kernel/xvs: >1 means xvs is faster;")
print(" the docker-proxy rows' kernel column is docker-proxy's figure, 0 when it is not installed)")
EOF
[ -s "$WORK/gro" ] && cat "$WORK/gro"
if [ -s "$WORK/drops" ]; then echo; echo "xvs drops during the run:"; cat "$WORK/drops"; fi
