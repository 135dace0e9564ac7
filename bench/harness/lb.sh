#!/bin/bash
# Load balancing, side by side in one run: an xvs service (a VIP on the network, balanced
# round robin over three backends in the datapath) beside the kernel doing the same thing
# kube-proxy's way (its nftables mode's layout in a router namespace: prerouting sends VIP:port
# to a service chain whose `numgen inc mod 3` vmap picks an endpoint chain that DNATs; the
# client's address kept, no masquerade). Same machine, same clients, same backends, same sizes.
#
#   sudo bash bench/harness/lb.sh [--secs N] [--workers N] [--bin-dir DIR] [--no-build]
#
# Rows (client -> VIP, three backends behind it): TCP 1 connection, TCP 3 connections at
# once (three clients started together: round robin puts each on its own backend; their
# Gbit/s summed), TCP connections per second (connect, 1 byte, close), and the same with 4
# clients at once (summed). Prints a table with the xvs/kernel ratio, then xvs's view of the
# web service, the connections each backend was given on both sides (nftables counters, xvs
# backend totals) and xvs's drops (ports and non-zero drop reasons).
#
# The TCP rows use a one-connection bulk sender (bench/harness/bulk.py), not iperf3: iperf3 opens a
# control connection and then its data connection(s), and a per-connection balancer (rr, or
# nftables numgen) sends them to different backends, so the test never starts.
#
# Kernel: router namespace with a Linux bridge br0 10.160.1.1/24 holding the backends
# (10.160.1.2-4, default route via the router, so replies come back through it for the
# un-DNAT); the client on its own subnet (10.160.2.2/24 on a second veth from the router) so
# that the backends' replies cannot bypass the router at L2. The kernel's veths keep their
# default offloads (as a kube-proxy node's veths have them).
# xvs: xvsd in a host namespace, network bench 10.161.1.0/24, backends and client joined with
# `xvsctl network connect` (TAP endpoints, xvsd's default), services `web` (tcp/80:5201) and
# `cps` (tcp/81:7000), scheduler rr; the client reaches the VIP directly (xvs answers its ARP).
# Everything it makes carries a unique prefix and is removed at the end, even on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=5
WORKERS=2
BUILD=1
BIN=$ROOT/target/release
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --bin-dir) BIN=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "lb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "lb.sh: needs root" >&2; exit 1; }
# shellcheck source=/dev/null
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

P=xl$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-lb-$P.XXXXXX")
XVSD_PID=
cleanup() {
  local rc=$?
  set +e
  [ -n "$XVSD_PID" ] && kill -TERM "$XVSD_PID" 2>/dev/null && wait "$XVSD_PID" 2>/dev/null
  if [ "$rc" != 0 ] && [ -s "$WORK/xvsd.log" ]; then echo "xvsd's log:" >&2; tail -20 "$WORK/xvsd.log" >&2; fi
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
if [ ! -x "$BIN/xvsd" ] || [ ! -x "$BIN/xvsctl" ]; then echo "lb.sh: no xvsd/xvsctl in $BIN" >&2; exit 1; fi
XVSCTL="$BIN/xvsctl"
# Servers outlive every row of their side, and no longer (the cleanup kills them anyway).
LIFE=$(( SECS * 10 + 60 ))

ns() { ip netns add "$1"; ip -n "$1" link set lo up; }
# veth A:IFA(ADDR_A) <-> B:IFB(ADDR_B), default offloads.
pair() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  [ -n "$3" ] && ip -n "$1" addr add "$3" dev "$2"
  [ -n "$6" ] && ip -n "$4" addr add "$6" dev "$5"
  ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
}
wait_port() { for _ in $(seq 100); do ip netns exec "$1" ss -ltn | grep -q ":$2 " && return; sleep 0.05; done; }
# sum: the numbers on stdin, one a line, added.
sum() { python3 -c 'import sys; print(sum(float(l) for l in sys.stdin if l.strip()))'; }


# once CLIENT_NS CMD... -> CMD's output; on failure a warning and 0 (the row reads 0).
once() {
  local c=$1 r
  shift
  if r=$(ip netns exec "$c" timeout 60 "$@") && [ -n "$r" ]; then echo "$r"
  else echo "lb.sh: client failed in $c: $*" >&2; echo 0; fi
}
# parallel N CLIENT_NS CMD... -> CMD run N times at once in CLIENT_NS, their outputs summed;
# if any of them fails, a warning and 0.
parallel() {
  local n=$1 c=$2 i pids=() bad=0
  shift 2
  for i in $(seq "$n"); do
    ip netns exec "$c" timeout 60 "$@" >"$WORK/par.$i" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || bad=1; done
  for i in $(seq "$n"); do [ -s "$WORK/par.$i" ] || bad=1; done
  if [ "$bad" = 0 ]; then cat "$WORK"/par.* | sum
  else echo "lb.sh: a client failed in $c: $*" >&2; echo 0; fi
  rm -f "$WORK"/par.*
}

# measure CLIENT_NS WEB_VIP CPS_VIP BACKEND_NS... -> "tcp1 tcp3 cps cps4"
# The backends serve bulk.py on 5201 and cps.py on 7000; WEB_VIP:80 leads to 5201 and
# CPS_VIP:81 to 7000. After each connection-rate row the split is sampled (split_after).
measure() {
  local c=$1 vip=$2 cvip=$3 b
  shift 3
  for b in "$@"; do
    ip netns exec "$b" timeout "$LIFE" python3 "$ROOT/bench/harness/bulk.py" server 5201 >/dev/null 2>&1 &
    ip netns exec "$b" timeout "$LIFE" python3 "$ROOT/bench/harness/cps.py" server 7000 >/dev/null 2>&1 &
  done
  for b in "$@"; do wait_port "$b" 5201; wait_port "$b" 7000; done
  local tcp1 tcp3 cps cps4
  tcp1=$(once "$c" python3 "$ROOT/bench/harness/bulk.py" client "$vip" 80 "$SECS")
  tcp3=$(parallel 3 "$c" python3 "$ROOT/bench/harness/bulk.py" client "$vip" 80 "$SECS")
  cps=$(once "$c" python3 "$ROOT/bench/harness/cps.py" client "$cvip" 81 "$SECS")
  split_after 1
  cps4=$(parallel 4 "$c" python3 "$ROOT/bench/harness/cps.py" client "$cvip" 81 "$SECS")
  split_after 4
  echo "$tcp1 $tcp3 $cps $cps4"
}

echo "== kernel: kube-proxy's nftables way (DNAT numgen inc mod 3 in a router namespace)"
ns "${P}kr"; ns "${P}kc"
ip -n "${P}kr" link add br0 type bridge; ip -n "${P}kr" addr add 10.160.1.1/24 dev br0; ip -n "${P}kr" link set br0 up
for i in 1 2 3; do
  ns "${P}kb$i"
  pair "${P}kr" "vb$i" "" "${P}kb$i" eth0 "10.160.1.$((i + 1))/24"
  ip -n "${P}kr" link set "vb$i" master br0
  ip -n "${P}kb$i" route add default via 10.160.1.1
done
pair "${P}kr" vc 10.160.2.1/24 "${P}kc" eth0 10.160.2.2/24
ip -n "${P}kc" route add default via 10.160.2.1
ip netns exec "${P}kr" sysctl -qw net.ipv4.ip_forward=1
# kube-proxy's layout: VIP:port -> a service chain, where numgen picks an endpoint chain, which
# DNATs. Its counter is the connections that backend was given (a nat chain sees only the first
# packet of a connection).
{
  echo "table ip lb {"
  echo "  chain pre { type nat hook prerouting priority -100;"
  echo "    ip daddr 10.160.1.100 tcp dport 80 goto svc-web"
  echo "    ip daddr 10.160.1.100 tcp dport 81 goto svc-cps"
  echo "  }"
  for svc in web:5201 cps:7000; do
    s=${svc%:*}
    echo "  chain svc-$s { numgen inc mod 3 vmap { 0 : goto $s-1, 1 : goto $s-2, 2 : goto $s-3 }; }"
    for i in 1 2 3; do echo "  chain $s-$i { counter meta l4proto tcp dnat to 10.160.1.$((i + 1)):${svc#*:}; }"; done
  done
  echo "}"
} >"$WORK/lb.nft"
ip netns exec "${P}kr" nft -f "$WORK/lb.nft"
split_after() { ip netns exec "${P}kr" nft -j list table ip lb >"$WORK/split.k.$1"; }
# ARP for the gateways, before anything is timed.
ip netns exec "${P}kc" ping -c 2 -i 0.2 -W 1 -q 10.160.2.1 >/dev/null || true
KERNEL=$(measure "${P}kc" 10.160.1.100 10.160.1.100 "${P}kb1" "${P}kb2" "${P}kb3")
for ns in $(ip netns list | awk '{print $1}' | grep "^${P}k"); do
  for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "$ns"
done

echo "== xvs: services web and cps, rr over three backends in the datapath ($WORKERS workers)"
ns "${P}xh"; ns "${P}xc"
export XVS_SOCKET=$WORK/xvsd.sock
ip netns exec "${P}xh" "$BIN/xvsd" --socket "$XVS_SOCKET" --state-dir "$WORK/state" \
  --workers "$WORKERS" 2>"$WORK/xvsd.log" &
XVSD_PID=$!
for _ in $(seq 100); do [ -S "$XVS_SOCKET" ] && break; sleep 0.05; done
"$XVSCTL" network create bench --subnet 10.161.1.0/24 >/dev/null
addr() { python3 -c 'import json,sys; print(json.load(sys.stdin)["address"].split("/")[0])'; }
BACKENDS=()
for i in 1 2 3; do
  ns "${P}xb$i"
  BACKENDS+=("$("$XVSCTL" --json network connect bench "${P}xb$i" | addr)")
done
"$XVSCTL" network connect bench "${P}xc" >/dev/null
"$XVSCTL" service create web --network bench --port tcp/80:5201 --scheduler rr >/dev/null
"$XVSCTL" service create cps --network bench --port tcp/81:7000 --scheduler rr >/dev/null
for b in "${BACKENDS[@]}"; do
  "$XVSCTL" service add-backend web "$b" >/dev/null
  "$XVSCTL" service add-backend cps "$b" >/dev/null
done
VIP=$("$XVSCTL" --json service inspect web | python3 -c 'import json,sys; print(json.load(sys.stdin)["vip"])')
VIP_CPS=$("$XVSCTL" --json service inspect cps | python3 -c 'import json,sys; print(json.load(sys.stdin)["vip"])')
echo "   backends ${BACKENDS[*]}, VIP web $VIP, VIP cps $VIP_CPS"
split_after() { "$XVSCTL" --json service inspect cps >"$WORK/split.x.$1"; }
ip netns exec "${P}xc" ping -c 2 -i 0.2 -W 1 -q 10.161.1.1 >/dev/null || true
XVS=$(measure "${P}xc" "$VIP" "$VIP_CPS" "${P}xb1" "${P}xb2" "${P}xb3")
"$XVSCTL" --json service inspect web >"$WORK/web.json"
"$XVSCTL" stats | awk '/DROP_REASON/,0' | grep -v " 0 " | head -20 >"$WORK/drops" || true
# Ports that dropped (the per-port table above the drop reasons).
"$XVSCTL" stats | awk 'NR == 1 { h = $0; next } NF == 0 { exit } $5 != 0 || $8 != 0 { if (!n++) print h; print }' \
  >"$WORK/portdrops" || true

python3 - "$KERNEL" "$XVS" "$SECS" "$WORKERS" <<'EOF'
import sys
k = [float(x) for x in sys.argv[1].split()]
x = [float(x) for x in sys.argv[2].split()]
rows = [("client -> VIP TCP, 1 connection", "Gbit/s"),
        ("client -> VIP TCP, 3 connections", "Gbit/s"),
        ("client -> VIP connections", "conn/s"),
        ("client -> VIP connections, 4 clients", "conn/s")]
print(f"\n{'row':<42} {'unit':<8} {'kernel':>10} {'xvs':>10} {'xvs/kernel':>11}")
for (name, unit), kv, xv in zip(rows, k, x):
    ratio = xv / kv if kv and xv else 0
    print(f"{name:<42} {unit:<8} {kv:>10.3f} {xv:>10.3f} {ratio:>10.2f}x")
print(f"\n(one run, {sys.argv[3]} s each, xvs with {sys.argv[4]} workers; kernel = nftables DNAT"
      " numgen inc mod 3, xvs = service scheduler rr; three backends each)")
EOF
python3 - "$WORK" <<'EOF'
import json, sys
w = sys.argv[1]
web = json.load(open(f"{w}/web.json"))
print(f"\nxvs service {web['name']}: vip {web['vip']} {web['port']} {web['scheduler']}"
      " (active: sessions still held; a closed one is kept 10 s)")
print(f"  {'BACKEND':<22} {'STATE':<8} {'HEALTH':<7} {'ACTIVE':>7} {'TOTAL':>7}")
for b in web["backends"]:
    print(f"  {b['addr']:<22} {b['state']:<8} {b['health']:<7} {b['active']:>7} {b['total']:>7}")
def kernel(path):  # endpoint chain -> its counter's packets (= connections)
    n = {}
    for o in json.load(open(path))["nftables"]:
        r = o.get("rule")
        if r and not r["chain"].startswith(("svc-", "pre")):
            n[r["chain"]] = next(e["counter"]["packets"] for e in r["expr"] if "counter" in e)
    return n
def xvs(path):
    return [b["total"] for b in json.load(open(path))["backends"]]
k1, k4 = kernel(f"{w}/split.k.1"), kernel(f"{w}/split.k.4")
x1, x4, xw = xvs(f"{w}/split.x.1"), xvs(f"{w}/split.x.4"), xvs(f"{w}/web.json")
print("\nconnections given to each backend (web: both TCP rows; cps: the 1-client row, the 4-client row)")
print(f"  {'':<10} {'kernel web':>10} {'cps 1':>8} {'cps 4':>8}   {'xvs web':>8} {'cps 1':>8} {'cps 4':>8}")
for i in range(3):
    kw, kc1, kc4 = k4[f"web-{i+1}"], k1[f"cps-{i+1}"], k4[f"cps-{i+1}"] - k1[f"cps-{i+1}"]
    print(f"  backend {i+1:<2} {kw:>10} {kc1:>8} {kc4:>8}   {xw[i]:>8} {x1[i]:>8} {x4[i] - x1[i]:>8}")
EOF
echo
if [ -s "$WORK/drops" ] || [ -s "$WORK/portdrops" ]; then
  echo "xvs drops during the run:"; cat "$WORK/portdrops" "$WORK/drops"
else
  echo "xvs drops during the run: none"
fi
