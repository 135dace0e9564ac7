#!/bin/bash
# The demo: installs what is missing, builds, starts xvsd, builds a small topology of
# namespaces and shows real traffic through it. The README's first command.
#
#   sudo bash tests/demo.sh            # everything it made is removed at the end
#
# Part 1 (Open vSwitch style): bridge demo0 with three namespaces on AF_XDP ports; ping,
#   iperf3, fdb/show, show, stats, trace.
# Part 2 (Docker style): network web with two sandboxes named by DNS; ping by name, dig.
# Part 3 (the way out): an uplink shared with the host: an "outside" namespace (198.18.0.0/15)
#   reaches both the host's own address and xvs's on the same interface; a container reaches
#   the outside masqueraded to xvs's address; the outside reaches a published port and the
#   container sees the real client address; conntrack/show lists the connections.
# Part 4 (overlays): a VXLAN network between xvs and a Linux kernel vxlan device standing for
#   another host: ping both ways, iperf3, vtep show.
# Part 5 (services): a virtual IP on network web balanced over three backends that answer
#   their own names: from web1 (round robin), by DNS (the VIP, tasks.www), from the outside
#   through the service's published port; each backend sees the real client; drain.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash tests/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
echo "== building xvsd and xvsctl (release)"
cargo build --release -p xvs-vswitchd -p xvs-ctl

P=xd$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))   # unique prefix for everything made here
WORK=$(mktemp -d "/tmp/xvs-demo-$P.XXXXXX")
export XVS_SOCKET=$WORK/xvsd.sock
XVSD_PID=
XVSCTL=$ROOT/target/release/xvsctl

cleanup() {
  set +e
  if [ -n "$XVSD_PID" ]; then
    "$XVSCTL" network disconnect web "${P}web1" >/dev/null 2>&1
    "$XVSCTL" network disconnect web "${P}web2" >/dev/null 2>&1
    "$XVSCTL" network disconnect web "${P}web3" >/dev/null 2>&1
    "$XVSCTL" network disconnect ov "${P}ov1" >/dev/null 2>&1
    for i in 1 2 3; do "$XVSCTL" network disconnect web "${P}svc$i" >/dev/null 2>&1; done
    kill -TERM "$XVSD_PID" 2>/dev/null; wait "$XVSD_PID" 2>/dev/null
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P"); do
    for pid in $(ip netns pids "$ns"); do kill -KILL "$pid"; done
    ip netns del "$ns"
  done
  sleep 0.2
  for dev in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$P"); do
    ip link del "$dev" 2>/dev/null
  done
  rm -rf "$WORK" /etc/netns/"$P"* 2>/dev/null
}
trap cleanup EXIT

run() { echo; echo "\$ $*"; "$@"; }

echo "== starting xvsd (socket $XVS_SOCKET, state $WORK/state, log $WORK/xvsd.log)"
"$ROOT/target/release/xvsd" --socket "$XVS_SOCKET" --state-dir "$WORK/state" \
  --log-level info 2>"$WORK/xvsd.log" &
XVSD_PID=$!
for _ in $(seq 50); do [ -S "$XVS_SOCKET" ] && break; sleep 0.1; done
run "$XVSCTL" ping

echo; echo "== part 1: bridge demo0, three namespaces on AF_XDP ports"
run "$XVSCTL" add-br demo0
for i in 1 2 3; do
  ns=${P}ns$i; host=${P}h$i
  ip netns add "$ns"
  ip link add "$host" type veth peer name eth0 netns "$ns"
  ip -n "$ns" link set eth0 address "02:00:00:00:00:0$i"
  ip -n "$ns" addr add "10.250.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null   # see TESTBED.md: no CHECKSUM_PARTIAL
  ip link set "$host" up
  run "$XVSCTL" add-port demo0 "$host"
done
run ip netns exec "${P}ns1" ping -c 3 -i 0.2 10.250.0.2
run ip netns exec "${P}ns1" ping -c 3 -i 0.2 10.250.0.3
run ip netns exec "${P}ns2" ping -c 3 -i 0.2 10.250.0.3
timeout 30 ip netns exec "${P}ns3" iperf3 -s -1 >/dev/null 2>&1 &
for _ in $(seq 50); do
  ip netns exec "${P}ns3" ss -ltn | grep -q ':5201 ' && break
  sleep 0.1
done
run ip netns exec "${P}ns1" iperf3 -c 10.250.0.3 -t 3 -f g
run "$XVSCTL" fdb/show demo0
run "$XVSCTL" show
run "$XVSCTL" stats
run "$XVSCTL" trace demo0 "in_port=${P}h1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:03,udp,nw_src=10.250.0.1,nw_dst=10.250.0.3,tp_src=1234,tp_dst=53"

echo; echo "== part 2: a Docker-style network with DNS, on TAP endpoints with offloads"
run "$XVSCTL" network create web --subnet 10.251.0.0/24
for i in 1 2; do
  ip netns add "${P}web$i"
  ip -n "${P}web$i" link set lo up
done
run "$XVSCTL" network connect web "${P}web1" --name api --alias api.internal
run "$XVSCTL" network connect web "${P}web2" --name db
run "$XVSCTL" network ls
run ip netns exec "${P}web1" ping -c 2 -i 0.2 db
run ip netns exec "${P}web2" ping -c 2 -i 0.2 10.251.0.1
run ip netns exec "${P}web2" dig +short @10.251.0.1 api.internal
# Bulk TCP between the two TAP endpoints (the default port type): GSO super-frames cross whole.
ip netns exec "${P}web2" iperf3 -s -1 >/dev/null 2>&1 &
sleep 0.5
run ip netns exec "${P}web1" timeout 20 iperf3 -c db -t 2
run "$XVSCTL" network inspect web

echo; echo "== part 3: the way out: an uplink shared with the host, masquerade, a published port"
ip netns add "${P}out"
ip -n "${P}out" link set lo up
ip link add "${P}up" type veth peer name eth0 netns "${P}out"
ip -n "${P}out" addr add 198.18.77.2/24 dev eth0
ip -n "${P}out" link set eth0 up
ip netns exec "${P}out" ethtool -K eth0 tx off >/dev/null   # full checksums toward AF_XDP
ip addr add 198.18.77.1/24 dev "${P}up"     # the host's own address on it
ip link set "${P}up" up
run "$XVSCTL" uplink set "${P}up" --ip 198.18.77.9/24
run ip netns exec "${P}out" ping -c 2 -i 0.2 198.18.77.9    # xvs's own address
run ip netns exec "${P}out" ping -c 2 -i 0.2 198.18.77.1    # the host's, same interface
# Masquerade: web1 reaches the outside, which sees xvs's address.
timeout 30 ip netns exec "${P}out" python3 -m http.server 9000 --bind 198.18.77.2 \
  >"$WORK/outside-http.log" 2>&1 & disown
for _ in $(seq 50); do
  ip netns exec "${P}out" ss -ltn | grep -q ':9000 ' && break
  sleep 0.1
done
run ip netns exec "${P}web1" ping -c 2 -i 0.2 198.18.77.2
run ip netns exec "${P}web1" curl -s -o /dev/null -w "HTTP %{http_code} from the outside\n" http://198.18.77.2:9000/
echo "outside's log (the client is xvs's address):"; tail -n 1 "$WORK/outside-http.log"
# A published port: the outside reaches web3's port 80 on xvs's 8080; web3 sees the real client.
ip netns add "${P}web3"
ip -n "${P}web3" link set lo up
run "$XVSCTL" network connect web "${P}web3" --publish 8080:80
timeout 30 ip netns exec "${P}web3" python3 -m http.server 80 >"$WORK/web3-http.log" 2>&1 & disown
for _ in $(seq 50); do
  ip netns exec "${P}web3" ss -ltn | grep -q ':80 ' && break
  sleep 0.1
done
run ip netns exec "${P}out" curl -s -o /dev/null -w "HTTP %{http_code} from web3\n" http://198.18.77.9:8080/
echo "web3's log (the client is the outside's own address):"; tail -n 1 "$WORK/web3-http.log"
run ip netns exec "${P}web1" ping -c 1 -t 1 198.18.77.2 || true   # TTL 1: answered by the gateway
run "$XVSCTL" conntrack/show
run "$XVSCTL" uplink show
run "$XVSCTL" network disconnect web "${P}web3"

echo; echo "== part 4: an overlay: a VXLAN network to a Linux kernel vxlan device on the outside"
# The outside namespace stands for another host: a kernel vxlan device of the same VNI
# (dstport 4789) in a Linux bridge with a container; xvs's VTEP is its uplink address.
ip -n "${P}out" link add vx0 type vxlan id 5001 dstport 4789 local 198.18.77.2 dev eth0
ip -n "${P}out" link add br0 type bridge
ip -n "${P}out" link set vx0 master br0
ip -n "${P}out" link set vx0 up
ip -n "${P}out" link set br0 up
ip netns exec "${P}out" bridge fdb append 00:00:00:00:00:00 dev vx0 dst 198.18.77.9
ip netns add "${P}kc"
ip -n "${P}kc" link set lo up
ip -n "${P}out" link add kc0 type veth peer name eth0 netns "${P}kc"
ip -n "${P}out" link set kc0 master br0
ip -n "${P}out" link set kc0 up
ip -n "${P}kc" link set eth0 mtu 1450
ip -n "${P}kc" addr add 10.252.0.20/24 dev eth0
ip -n "${P}kc" link set eth0 up
run "$XVSCTL" vtep set --local 198.18.77.9
run "$XVSCTL" network create ov --driver overlay --subnet 10.252.0.0/24 --vni 5001
run "$XVSCTL" vtep peer add ov 198.18.77.2
ip netns add "${P}ov1"
ip -n "${P}ov1" link set lo up
run "$XVSCTL" network connect ov "${P}ov1" --ip 10.252.0.10 --name ov1
run ip netns exec "${P}ov1" ping -c 3 -i 0.2 10.252.0.20     # xvs -> kernel vxlan
run ip netns exec "${P}kc" ping -c 3 -i 0.2 10.252.0.10      # kernel vxlan -> xvs
run ip netns exec "${P}ov1" ping -c 2 -i 0.2 10.252.0.1      # the overlay's gateway, on this host
timeout 30 ip netns exec "${P}kc" iperf3 -s -1 >/dev/null 2>&1 &
for _ in $(seq 50); do
  ip netns exec "${P}kc" ss -ltn | grep -q ':5201 ' && break
  sleep 0.1
done
run ip netns exec "${P}ov1" timeout 20 iperf3 -c 10.252.0.20 -t 2
run "$XVSCTL" vtep show
run "$XVSCTL" network disconnect ov "${P}ov1"

echo; echo "== part 5: a service: a virtual IP on network web over three backends"
# Three backends on web, each an HTTP server answering its own name and logging its clients.
for i in 1 2 3; do
  ip netns add "${P}svc$i"
  ip -n "${P}svc$i" link set lo up
  "$XVSCTL" network connect web "${P}svc$i" --ip "10.251.0.10$i" --name "svc$i" >/dev/null
  timeout 60 ip netns exec "${P}svc$i" python3 "$ROOT/tests/scripts/name_server.py" "svc$i" 8080 \
    "$WORK/svc$i.log" >/dev/null 2>&1 & disown
done
for i in 1 2 3; do
  for _ in $(seq 50); do
    ip netns exec "${P}svc$i" ss -ltn | grep -q ':8080 ' && break
    sleep 0.1
  done
done
run "$XVSCTL" service create www --network web --port tcp/80:8080 --publish 8088 --health tcp --interval 2
for i in 1 2 3; do run "$XVSCTL" service add-backend www "10.251.0.10$i"; done
VIP=$("$XVSCTL" service inspect www --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vip"])')
run ip netns exec "${P}web2" dig +short @10.251.0.1 www          # the VIP
run ip netns exec "${P}web2" dig +short @10.251.0.1 tasks.www    # the backends
echo; echo "\$ six requests from web1 to http://$VIP/ (round robin):"
for _ in $(seq 6); do ip netns exec "${P}web1" curl -s -m 5 "http://$VIP/"; done
echo; echo "\$ three requests from the outside to xvs's published port 8088:"
for _ in $(seq 3); do ip netns exec "${P}out" curl -s -m 5 http://198.18.77.9:8088/; done
echo "svc1's log (the clients' own addresses: web1, then the outside):"; cat "$WORK/svc1.log"
run "$XVSCTL" service rm-backend www 10.251.0.101 --drain
echo; echo "\$ three requests after svc1 is drained:"
for _ in $(seq 3); do ip netns exec "${P}web1" curl -s -m 5 "http://$VIP/"; done
run "$XVSCTL" service inspect www
run "$XVSCTL" service rm www
for i in 1 2 3; do "$XVSCTL" network disconnect web "${P}svc$i" >/dev/null; done
run "$XVSCTL" uplink del

echo; echo "== demo done; cleaning up (xvsd log: last lines)"
tail -n 5 "$WORK/xvsd.log"
