#!/bin/bash
# Instructions per packet of each datapath bench, counted by callgrind: repeatable on these
# noisy shared machines, where criterion's wall-clock numbers of the same build vary by tens of
# percent between runs. Each bench runs twice (N and 2N bursts of 32); the difference divided
# by the extra packets cancels start-up.
#
#   bash bench/harness/instructions.sh [--baseline PATH] [--bursts N]
#
# --baseline PATH: an `instructions` example binary built from an older commit (build it
# there with `cargo build --release -p xvs-bench --example instructions`); its column and the
# ratio new/old are printed beside this build's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=""
N=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) BASE=$2; shift 2 ;;
    --bursts) N=$2; shift 2 ;;
    *) echo "usage: $0 [--baseline PATH] [--bursts N]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
(cd "$ROOT" && cargo build -q --release -p xvs-bench --example instructions)
NEW=$ROOT/target/release/examples/instructions

count() { # BIN BENCH BURSTS -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_packet() { # BIN BENCH
  local a b
  a=$(count "$1" "$2" "$N")
  b=$(count "$1" "$2" $((2 * N)))
  echo $(( (b - a) * 10 / (N * 32) )) | sed 's/\(.\)$/.\1/'
}

printf '%-10s %12s' bench "instr/pkt"
[ -n "$BASE" ] && printf ' %12s %7s' baseline ratio
echo
for b in classify l2_1k l2_64k pipeline; do
  new=$(per_packet "$NEW" "$b")
  printf '%-10s %12s' "$b" "$new"
  if [ -n "$BASE" ]; then
    old=$(per_packet "$BASE" "$b")
    printf ' %12s %7s' "$old" "$(python3 -c "print(f'{$new/$old:.2f}')")"
  fi
  echo
done
