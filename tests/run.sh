#!/bin/bash
# Runs every test: unit and property tests, then the end-to-end tests (root: namespaces, veths,
# AF_XDP, TAP) against the real xvsd and xvsctl binaries. The README's test command.
#
#   sudo bash tests/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash tests/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

start=$(date +%s)
echo "== build (release: the end-to-end tests drive target/release/xvsd and xvsctl)"
cargo build --release --workspace --bins

echo "== tests"
# One test binary at a time keeps the 2-core machine's timing-sensitive tests honest; tests
# within a binary run in parallel (each uses its own namespaces, devices and xvsd).
cargo test --release --workspace --no-fail-fast -- --test-threads 4

echo "== end-to-end tests of networks again with xvsd --workers 2 and 4 (a network's ports spread)"
# The first pass starts xvsd with --workers 1 unless a test says otherwise; these passes
# spread each network's TAP endpoints over 2 and 4 workers (cross-worker writes, hand-offs,
# shared MAC learning, published ports and services' replies on the endpoint's worker).
XVS_TEST_WORKERS=2 cargo test --release -p xvs-tests --no-fail-fast \
  --test network_basic --test tap_endpoints --test services --test nat --test cni \
  --test docker --test port_security --test network_restart --test floods -- --test-threads 4
XVS_TEST_WORKERS=4 cargo test --release -p xvs-tests --no-fail-fast \
  --test network_basic --test tap_endpoints --test services -- --test-threads 4

echo "== fuzz: a short bounded run of every target (fuzz/run.sh; the long runs are by hand)"
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
bash fuzz/run.sh --seconds "${XVS_FUZZ_SECONDS:-5}"

echo "== done in $(( $(date +%s) - start )) s"
