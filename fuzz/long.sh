#!/usr/bin/env bash
# The long fuzz run (issue 14: at least 10M executions per target), one target after another:
#   fuzz/long.sh [--runs N] [--sanitizer address|none] [TARGET...]   (default 10000000, none,
#                                                                     every target)
# Each target runs from its checked-in seeds plus the corpus its earlier runs grew
# (fuzz/target/run-corpus/TARGET) until it has executed N inputs. Prints, and appends to
# fuzz/target/long-report.md, one row per target: executions, seconds, exec/s, coverage
# (libFuzzer's edge count), features, corpus size, and whether it crashed (the input is then
# in fuzz/artifacts/TARGET/). Without a sanitizer the targets run 2-3x faster; they are safe
# Rust apart from the frame pool, whose unsafe code the short CI run covers under ASan. Builds
# into fuzz/target/long, apart from run.sh's ASan build, so that both can run at once.
set -euo pipefail
cd "$(dirname "$0")"

runs=10000000
sanitizer=none
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        -*) echo "usage: $0 [--runs N] [--sanitizer address|none] [TARGET...]" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

report=target/long-report.md
mkdir -p target
cargo +nightly fuzz build -s "$sanitizer" --target-dir target/long
[ -s "$report" ] || printf '| target | executions | seconds | exec/s | coverage | features | corpus | sanitizer | result |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n' >"$report"

failed=0
for t in "${targets[@]}"; do
    work="target/run-corpus/$t"
    mkdir -p "$work" "corpus/$t"
    log="target/long-$t.log"
    start=$(date +%s)
    if cargo +nightly fuzz run -s "$sanitizer" --target-dir target/long "$t" "$work" "corpus/$t" -- \
        -runs="$runs" -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH: $(grep -o 'artifacts/[^ ]*' "$log" | head -1)"
        failed=1
    fi
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    row="| \`$t\` | ${execs:-?} | $secs | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $sanitizer | $result |"
    echo "$row" | tee -a "$report"
done
exit $failed
