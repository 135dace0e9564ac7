#!/bin/bash
# The soak (issue 14, item 6): SECONDS (default 600) of mixed traffic through one xvsd, with
# its memory, descriptors and frame pools watched. Prints a sample every 10 s and a verdict:
#
#   sudo bash bench/reliability/soak.sh [SECONDS]
#
# Topology, every piece with a unique prefix and removed on exit: xvsd (--workers 2) runs in a
# namespace of its own standing for the host, with an uplink (198.18.61.9/24) to an "outside"
# namespace (198.18.61.1: iperf3 and an HTTP server). Network `soak` (10.188.0.0/24) holds srv
# (veth: iperf3 TCP and UDP servers, HTTP), c1 (veth) and c2 (TAP, HTTP), and churning
# containers (TAP, the default), and service `web`
# (a VIP on port 80 over srv and c2). The traffic, each part in a loop until the end:
#   - TCP: c1 -> srv, iperf3 at 300 Mbit/s in 20 s runs;
#   - UDP: c2 -> srv, iperf3 at 20 Mbit/s in 20 s runs;
#   - ping: c1 -> c2 every 0.2 s;
#   - DNS: c1 asks the gateway for server (srv) every 0.2 s;
#   - the way out: c1 fetches from outside through masquerade every 0.5 s (a new NAT session
#     each time);
#   - the service: c1 fetches http://web/ (DNS to the VIP, balanced) every 0.5 s;
#   - churn: every 2 s a new container joins (with a DNS name), pings the gateway, is
#     resolved from c1 and leaves again, and its namespace is deleted.
# Verdict (exit 1 if any fails): xvsd's RSS grows < 1 % from the end of the warm-up (the first
# fifth, at least 120 s: below) to the end; the same number of file descriptors and threads; every
# frame of every worker's pool free or held by a port once traffic stops (stats: unaccounted
# 0, nothing held by stages); no veth or TAP left behind by the churn; every loop's failures
# counted (ping loss, DNS, HTTP and churn failures must stay under 1 %). SOAK_LOOPS="tcp udp
# dns nat svc churn" (the default) chooses the loops, to find which one a growth follows (the
# ping runs always; a loop left out fails its check). SOAK_WRAP="heaptrack
# -o FILE" (say) runs xvsd under a profiler; the RSS figures are then the wrapper's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${1:-600}
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root" >&2; exit 1; }
BIN="$ROOT/target/release"
[ -x "$BIN/xvsd" ] || { echo "soak.sh: build first: cargo build --release --workspace --bins" >&2; exit 1; }
for tool in iperf3 dig curl python3; do
    command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 1; }
done

P=sk$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-soak-$P.XXXXXX")
H=${P}h O=${P}o
XP=
LOOPS=()
cleanup() {
    set +e
    touch "$WORK/stop"
    [ ${#LOOPS[@]} -gt 0 ] && kill "${LOOPS[@]}" 2>/dev/null
    [ -n "$XP" ] && { kill "$XP" 2>/dev/null; sleep 0.5; kill -9 "$XP" 2>/dev/null; }
    for n in $(ip netns list | awk '{print $1}' | grep "^$P"); do
        ip netns pids "$n" | xargs -r kill -9
        ip netns del "$n"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

X() { "$BIN/xvsctl" --socket "$WORK/sock" "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
running() { [ ! -e "$WORK/stop" ]; }
count() { echo 1 >>"$WORK/$1"; }

# The host and the outside.
ip netns add "$H"
ip netns add "$O"
ip -n "$H" link set lo up
ip -n "$O" link set lo up
ip -n "$H" link add up0 type veth peer name o0 netns "$O"
ip -n "$H" addr add 198.18.61.2/24 dev up0 # the host keeps its own address on the uplink
ip -n "$H" link set up0 up
ip -n "$O" addr add 198.18.61.1/24 dev o0
ip -n "$O" link set o0 up
ip netns exec "$O" ethtool -K o0 tx off >/dev/null # full checksums toward AF_XDP (TESTBED.md)
ip netns exec "$H" ${SOAK_WRAP:-} "$BIN/xvsd" --socket "$WORK/sock" --state-dir "$WORK/state" --workers 2 \
    --log-level warn >"$WORK/xvsd.log" 2>&1 &
XP=$!
for _ in $(seq 100); do [ -S "$WORK/sock" ] && X ping >/dev/null 2>&1 && break; sleep 0.1; done
X ping >/dev/null

X uplink set up0 --ip 198.18.61.9/24 >/dev/null
X network create soak --subnet 10.188.0.0/24 >/dev/null
for c in srv c1 c2; do ip netns add "$P$c"; done
X network connect soak "${P}srv" --name server --ip 10.188.0.2 --port-type veth >/dev/null
X network connect soak "${P}c1" --name c1 --ip 10.188.0.3 --port-type veth >/dev/null
X network connect soak "${P}c2" --name c2 --ip 10.188.0.4 --port-type tap >/dev/null
X service create web --network soak --port tcp/80 >/dev/null
X service add-backend web 10.188.0.2:80 >/dev/null
X service add-backend web 10.188.0.4:80 >/dev/null

LIFE=$((DURATION + 60))
in_ns "${P}srv" timeout "$LIFE" iperf3 -s -p 5201 >/dev/null 2>&1 &
in_ns "${P}srv" timeout "$LIFE" iperf3 -s -p 5202 >/dev/null 2>&1 &
in_ns "${P}srv" timeout "$LIFE" python3 -m http.server 80 --bind 10.188.0.2 >/dev/null 2>&1 &
in_ns "${P}c2" timeout "$LIFE" python3 -m http.server 80 --bind 10.188.0.4 >/dev/null 2>&1 &
in_ns "$O" timeout "$LIFE" python3 -m http.server 8080 --bind 198.18.61.1 >/dev/null 2>&1 &
sleep 1.5
in_ns "${P}c1" ping -c 3 -W 1 10.188.0.2 >/dev/null

host_links() { ip -n "$H" -o link show | wc -l; }
links_before=$(host_links)

# The traffic.
tcp_loop() {
    while running; do
        if in_ns "${P}c1" timeout 30 iperf3 -c 10.188.0.2 -p 5201 -t 20 -b 300M -J >"$WORK/tcp.json" 2>/dev/null; then
            python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$WORK/tcp.json" >>"$WORK/tcp_bytes" || cp "$WORK/tcp.json" "$WORK/tcp-bad.json"
        else
            running && count tcp_fail
        fi
    done
}
udp_loop() {
    while running; do
        if in_ns "${P}c2" timeout 30 iperf3 -u -c 10.188.0.2 -p 5202 -t 20 -b 20M -J >"$WORK/udp.json" 2>/dev/null; then
            python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["end"]["sum"]; print(s["packets"], s["lost_packets"])' "$WORK/udp.json" >>"$WORK/udp_packets" || cp "$WORK/udp.json" "$WORK/udp-bad.json"
        else
            running && count udp_fail
        fi
    done
}
dns_loop() {
    while running; do
        if [ "$(in_ns "${P}c1" dig +short +time=1 +tries=1 @10.188.0.1 server)" = 10.188.0.2 ]; then count dns_ok; else count dns_fail; fi
        sleep 0.2
    done
}
http_loop() { # NAME URL (a URL on host "web" is the service: resolved at the gateway first)
    local url
    while running; do
        url=$2
        if [[ $url == http://web/* ]]; then
            url="http://$(in_ns "${P}c1" dig +short +time=1 +tries=1 @10.188.0.1 web)/"
        fi
        if [ "$(in_ns "${P}c1" curl -s -m 3 -o /dev/null -w '%{http_code}' "$url")" = 200 ]; then count "$1_ok"; else count "$1_fail"; fi
        sleep 0.5
    done
}
churn_loop() {
    local i=0
    while running; do
        i=$((i + 1))
        local ns="${P}n$((i % 4))"
        local ok=1
        ip netns add "$ns" 2>/dev/null || ok=0
        X network connect soak "$ns" --name "churn$((i % 4))" >/dev/null 2>&1 || ok=0
        in_ns "$ns" ping -c 1 -W 2 10.188.0.1 >/dev/null 2>&1 || ok=0
        [ -n "$(in_ns "${P}c1" dig +short +time=1 +tries=1 @10.188.0.1 "churn$((i % 4))")" ] || ok=0
        X network disconnect soak "$ns" >/dev/null 2>&1 || ok=0
        ip netns del "$ns" 2>/dev/null || ok=0
        if [ $ok = 1 ]; then count churn_ok; else count churn_fail; fi
        sleep 2
    done
}

LOOPS=()
want() { [[ " ${SOAK_LOOPS:-tcp udp dns nat svc churn} " == *" $1 "* ]]; }
if want tcp; then tcp_loop & LOOPS+=($!); fi
if want udp; then udp_loop & LOOPS+=($!); fi
if want dns; then dns_loop & LOOPS+=($!); fi
if want nat; then http_loop nat http://198.18.61.1:8080/ & LOOPS+=($!); fi
if want svc; then http_loop svc http://web/ & LOOPS+=($!); fi
if want churn; then churn_loop & LOOPS+=($!); fi
ip netns exec "${P}c1" ping -i 0.2 -w "$DURATION" -q 10.188.0.4 >"$WORK/ping.out" 2>&1 &
PING=$!

rss() { awk '/^VmRSS/ {print $2}' "/proc/$XP/status"; }
fds() { ls "/proc/$XP/fd" | wc -l; }
threads() { awk '/^Threads/ {print $2}' "/proc/$XP/status"; }
# Warm-up: until the tables hold their steady state. The longest-lived state per connection in
# this mix is TCP's TIME_WAIT (120 s): until then every HTTP fetch adds a session and the
# conntrack and LB tables fill; so the first fifth, at least 120 s (or the whole run if shorter).
warmup=$(( DURATION / 5 < 120 ? 120 : DURATION / 5 ))
[ "$warmup" -lt "$DURATION" ] || warmup=$(( DURATION / 2 ))
start=$(date +%s)
printf '%6s %10s %6s %8s %9s\n' seconds rss_kib fds threads sessions
rss_warm= fds_warm= thr_max=0
while :; do
    t=$(( $(date +%s) - start ))
    kill -0 "$XP" 2>/dev/null || { echo "soak.sh: xvsd died (log: last lines)"; tail -20 "$WORK/xvsd.log"; exit 1; }
    sessions=$(X conntrack/show --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["connections"]))' 2>/dev/null || echo '?')
    printf '%6d %10d %6d %8d %9s\n' "$t" "$(rss)" "$(fds)" "$(threads)" "$sessions"
    if [ -z "$rss_warm" ] && [ "$t" -ge "$warmup" ]; then
        rss_warm=$(rss) fds_warm=$(fds)
        cp "/proc/$XP/smaps" "$WORK/smaps.warm"
    fi
    [ "$(threads)" -gt "$thr_max" ] && thr_max=$(threads)
    [ "$t" -ge "$DURATION" ] && break
    sleep 10
done

# Stop the traffic, let the rings drain, and account for everything.
touch "$WORK/stop"
wait "$PING" 2>/dev/null || true
for _ in $(seq 40); do # the loops finish their current round (an iperf3 run: up to 30 s)
    alive=0
    for pid in "${LOOPS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 1
done
kill "${LOOPS[@]}" 2>/dev/null || true
sleep 2
rss_end=$(rss) fds_end=$(fds) thr_end=$(threads)
cp "/proc/$XP/smaps" "$WORK/smaps.end"
# Where the RSS grew: the mappings whose resident size changed most since the warm-up.
python3 - "$WORK/smaps.warm" "$WORK/smaps.end" <<'PY' >"$WORK/growth.txt"
import sys
def read(path):
    maps, cur = {}, None
    for line in open(path):
        f = line.split()
        if "-" in f[0] and not f[0].endswith(":"):
            lo, hi = f[0].split("-")
            cur = lo
            maps[cur] = [" ".join(f[5:]) or "[anon]", (int(hi, 16) - int(lo, 16)) // 1024, 0]
        elif f[0] == "Rss:":
            maps[cur][2] = int(f[1])
    return maps
a, b = read(sys.argv[1]), read(sys.argv[2])
rows = []
for k in set(a) | set(b):
    name, size, _ = b.get(k) or a.get(k)
    rows.append((b.get(k, [0, 0, 0])[2] - a.get(k, [0, 0, 0])[2], name, size, k))
for d, name, size, k in sorted(rows, key=lambda r: -abs(r[0]))[:6]:
    if d:
        print(f"  {d:+8d} KiB  {name} ({size} KiB mapping at {k})")
PY
links_after=$(host_links)
X stats --json >"$WORK/stats.json"
pools=$(python3 -c '
import json, sys
pools = json.load(open(sys.argv[1]))["pools"]
bad = [p for p in pools if p["unaccounted"] != 0 or p["in_stages"] != 0]
print(("ok " if not bad else "FAIL ") + "; ".join(
    "worker%d %d frames: %d free, %d in ports, %d in stages, %d unaccounted" % (
        p["worker"], p["capacity"], p["free"], p["in_ports"], p["in_stages"], p["unaccounted"])
    for p in pools))' "$WORK/stats.json")

n() { [ -f "$WORK/$1" ] && wc -l <"$WORK/$1" || echo 0; }
tcp_gb=$(awk '{s += $1} END {printf "%.1f", s / 1e9}' "$WORK/tcp_bytes" 2>/dev/null || echo 0)
udp=$(awk '{p += $1; l += $2} END {printf "%d packets, %d lost", p, l}' "$WORK/udp_packets" 2>/dev/null || echo "0 packets")
ping_line=$(grep -E 'packets transmitted' "$WORK/ping.out" || echo "no ping summary")
ping_loss=$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' "$WORK/ping.out")
growth=$(python3 -c "print(f'{($rss_end - $rss_warm) * 100 / $rss_warm:+.2f}')")

fail=0
verdict() { # CHECK FIGURE OK?
    printf '%-34s %-70s %s\n' "$1" "$2" "$([ "$3" = 1 ] && echo pass || echo FAIL)"
    [ "$3" = 1 ] || fail=1
}
under_1pct() { python3 -c "import sys; ok, bad = int(sys.argv[1]), int(sys.argv[2]); print(1 if ok + bad > 0 and bad * 100 < ok + bad else 0)" "$1" "$2"; }
echo
echo "soak of ${DURATION} s (warm-up ${warmup} s), xvsd --workers 2:"
verdict "RSS growth after warm-up (< 1 %)" "${rss_warm} KiB -> ${rss_end} KiB (${growth} %)" \
    "$(python3 -c "print(1 if abs($rss_end - $rss_warm) * 100 < $rss_warm else 0)")"
verdict "file descriptors" "${fds_warm} -> ${fds_end}" "$([ "$fds_end" -le "$fds_warm" ] && echo 1 || echo 0)"
verdict "threads (the end vs the most seen)" "${thr_end} at the end, at most ${thr_max}" "$([ "$thr_end" -le "$thr_max" ] && echo 1 || echo 0)"
verdict "frame pools accounted" "${pools#* }" "$([ "${pools%% *}" = ok ] && echo 1 || echo 0)"
verdict "host interfaces left by the churn" "$links_before before, $links_after after" \
    "$([ "$links_after" -eq "$links_before" ] && echo 1 || echo 0)"
verdict "TCP c1 -> srv (iperf3 runs)" "${tcp_gb} GB received, $(n tcp_fail) failed runs" "$([ "$(n tcp_fail)" = 0 ] && echo 1 || echo 0)"
verdict "UDP c2 (TAP) -> srv" "$udp, $(n udp_fail) failed runs" "$([ "$(n udp_fail)" = 0 ] && echo 1 || echo 0)"
verdict "ping c1 -> c2 (loss < 1 %)" "$ping_line" "$(python3 -c "print(1 if '$ping_loss' and float('$ping_loss') < 1 else 0)")"
verdict "DNS at the gateway" "$(n dns_ok) answered, $(n dns_fail) failed" "$(under_1pct "$(n dns_ok)" "$(n dns_fail)")"
verdict "HTTP to outside (masquerade)" "$(n nat_ok) ok, $(n nat_fail) failed" "$(under_1pct "$(n nat_ok)" "$(n nat_fail)")"
verdict "HTTP to the service VIP" "$(n svc_ok) ok, $(n svc_fail) failed" "$(under_1pct "$(n svc_ok)" "$(n svc_fail)")"
verdict "connect/disconnect churn" "$(n churn_ok) cycles, $(n churn_fail) failed" "$(under_1pct "$(n churn_ok)" "$(n churn_fail)")"
if [ -s "$WORK/growth.txt" ]; then
    echo "RSS changes since the warm-up, by mapping:"
    cat "$WORK/growth.txt"
fi
if [ $fail = 1 ]; then
    for f in tcp-bad udp-bad; do [ -f "$WORK/$f.json" ] && { echo "$f:"; head -c 600 "$WORK/$f.json"; echo; }; done
    echo "soak: FAILED (xvsd log: last lines)"
    tail -20 "$WORK/xvsd.log"
fi
exit $fail
