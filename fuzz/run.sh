#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time (CI's short run):
#   fuzz/run.sh [--seconds N]        (default 10 seconds per target)
# Prints each target's executions, executions per second and whether it crashed; exits 1 if
# any target crashed (its input is in fuzz/artifacts/TARGET/). Needs the nightly toolchain
# and cargo-fuzz (cargo install cargo-fuzz). New corpus entries go to
# fuzz/target/run-corpus/TARGET (kept between runs, never checked in); the checked-in seeds
# in fuzz/corpus/TARGET are read only. Build parallelism: CARGO_BUILD_JOBS.
set -euo pipefail
cd "$(dirname "$0")"

seconds=10
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
    esac
done

targets=$(cargo +nightly fuzz list)
start=$(date +%s)
cargo +nightly fuzz build
echo "built in $(( $(date +%s) - start )) s"

failed=0
printf '%-16s %12s %10s  %s\n' target executions exec/s result
for t in $targets; do
    work="target/run-corpus/$t"
    mkdir -p "$work" "corpus/$t"
    log="target/run-$t.log"
    if cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH: $(grep -o 'artifacts/[^ ]*' "$log" | head -1) (log: fuzz/$log)"
        failed=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf '%-16s %12s %10s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
done
echo "total $(( $(date +%s) - start )) s"
exit $failed
