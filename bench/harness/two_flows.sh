#!/bin/bash
# Worker scaling: two independent 64 B flows, each through its own xvs bridge (so each bridge,
# and its two AF_XDP ports, can live on its own worker), measured with xvsd --workers 1 and then
# --workers 2 in the same run. Prints each flow's delivered pps and the aggregate ratio.
#
#   sudo bash bench/harness/two_flows.sh [SECONDS]     # window per measurement, default 4
#
# Each flow: ns a<k> (v1, 198.18.0.1) -> bridge b<k> -> ns b<k> (v2, 198.18.0.2); trafgen in
# a<k> floods 64 B UDP to port 9, dropped at v2's ingress by an nftables netdev rule after the
# device counts it (as bench/src/bin/xvs-harness/measure.rs does). Everything carries a unique
# prefix and is removed on exit; trafgen is bounded in time and count.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WINDOW=${1:-4}
[ "$(id -u)" = 0 ] || { echo "two_flows.sh: needs root" >&2; exit 1; }
BIN="$ROOT/target/release"
[ -x "$BIN/xvsd" ] || { echo "two_flows.sh: build first: cargo build --release --workspace --bins" >&2; exit 1; }

P=tf$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-two-flows-$P.XXXXXX")
XP=
cleanup() {
  set +e
  [ -n "$XP" ] && { kill "$XP" 2>/dev/null; wait "$XP" 2>/dev/null; }
  for n in $(ip netns list | awk '{print $1}' | grep "^$P"); do
    ip netns pids "$n" | xargs -r kill -9
    ip netns del "$n"
  done
  for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$P"); do
    ip link del "$l" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

for k in 1 2; do
  for i in 1 2; do
    ns=${P}$([ $i = 1 ] && echo a || echo b)$k
    ip netns add "$ns"
    ip link add "${P}p$k$i" type veth peer name "v$i" netns "$ns"
    ip -n "$ns" link set "v$i" address "02:00:00:00:0$i:0$i"
    ip -n "$ns" addr add "198.18.0.$i/24" dev "v$i"
    ip -n "$ns" link set "v$i" up
    ip -n "$ns" link set lo up
    ip link set "${P}p$k$i" up
    ip netns exec "$ns" ethtool -K "v$i" tx off >/dev/null
  done
  printf 'table netdev sink {\n chain in {\n  type filter hook ingress device v2 priority 0;\n  udp dport 9 drop\n }\n}\n' |
    ip netns exec "${P}b$k" nft -f -
done
cat >"$WORK/t.cfg" <<'EOF'
{ 0x02,0x00,0x00,0x00,0x02,0x02, 0x02,0x00,0x00,0x00,0x01,0x01, 0x08,0x00,
  0x45,0x00, const16(46), const16(0), 0x40,0x00, 64, 17, csumip(14,33),
  198,18,0,1, 198,18,0,2, const16(9), const16(9), const16(26), const16(0), fill(0x41, 18) }
EOF

rx() { ip netns exec "${P}b$1" cat /sys/class/net/v2/statistics/rx_packets; }

measure() {
  local w=$1 sock="$WORK/xvsd-$1.sock"
  "$BIN/xvsd" --socket "$sock" --state-dir "$WORK/state-$w" --workers "$w" 2>"$WORK/xvsd-$w.log" &
  XP=$!
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  for k in 1 2; do
    XVS_SOCKET=$sock "$BIN/xvsctl" add-br "${P}br$k"
    XVS_SOCKET=$sock "$BIN/xvsctl" add-port "${P}br$k" "${P}p${k}1"
    XVS_SOCKET=$sock "$BIN/xvsctl" add-port "${P}br$k" "${P}p${k}2"
  done
  for k in 1 2; do
    ip netns exec "${P}a$k" ping -c 3 -i 0.2 -W 1 198.18.0.2 >/dev/null
    ip netns exec "${P}b$k" ping -c 1 -W 1 198.18.0.1 >/dev/null
  done
  local gens=()
  for k in 1 2; do
    ip netns exec "${P}a$k" timeout -s INT $((WINDOW + 5)) trafgen -c "$WORK/t.cfg" -o v1 -P 1 \
      -n 50000000 -q --no-sock-mem >/dev/null 2>&1 &
    gens+=($!)
  done
  sleep 2
  local r1 r2 s1 s2
  r1=$(rx 1); r2=$(rx 2)
  sleep "$WINDOW"
  s1=$(( ($(rx 1) - r1) / WINDOW )); s2=$(( ($(rx 2) - r2) / WINDOW ))
  for k in 1 2; do ip netns pids "${P}a$k" | xargs -r kill -9; done
  for g in "${gens[@]}"; do wait "$g" 2>/dev/null || true; done
  kill "$XP"; wait "$XP" 2>/dev/null || true; XP=
  echo "workers=$w  flow1 $s1 pps  flow2 $s2 pps  aggregate $((s1 + s2)) pps"
  AGG=$((s1 + s2))
}

AGG=0
measure 1; one=$AGG
measure 2; two=$AGG
awk -v a="$one" -v b="$two" 'BEGIN { printf "aggregate pps, 2 workers / 1 worker: %.2fx (target 1.6x)\n", b / a }'
