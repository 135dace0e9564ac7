#!/bin/bash
# The side-by-side harness: xvs vs the Linux bridge and OVS userspace, same machine, same run.
#
#   sudo bash bench/harness/run.sh [--quick] [--runs N] [--window S] [--only xvs,lbr,...]
#                                  [--workers N[,M]] [--publish] [--no-build]
#
# Builds the harness (and xvsd/xvsctl, if they build) in release mode, then runs
# target/release/xvs-harness, which prints the table and writes bench/results/latest.{json,svg}.
# Rows: xvs, lbr, lbr-txoff, ovs-afxdp, ovs-afpacket-tso. A default run (3 runs per row) takes
# about 8 minutes; --quick (1 short run) about 2.
#
# Everything the run creates carries a unique prefix; this trap removes whatever is left if the
# harness itself could not (killed, crashed: the release profile aborts on panic).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "run.sh: needs root (namespaces, veths, AF_XDP): sudo bash $0 $*" >&2
  exit 1
fi

BUILD=1
ARGS=()
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    *) ARGS+=("$a") ;;
  esac
done

PREFIX=xh$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))
WORK=$(mktemp -d "/tmp/xvs-harness-$PREFIX.XXXXXX")

cleanup() {
  local rc=$? ns pid f comm dev
  set +e
  local nss
  nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX")
  for ns in $nss; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for f in "$WORK"/xvs-*/xvsd.pid "$WORK"/ovs-*/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null)
    comm=$(cat "/proc/$pid/comm" 2>/dev/null)
    case "$comm" in
      xvsd | ovsdb-server | ovs-vswitchd)
        echo "run.sh: stopping leftover $comm ($pid)" >&2
        kill -TERM "$pid" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do [ -d "/proc/$pid" ] || break; sleep 0.3; done
        kill -KILL "$pid" 2>/dev/null
        ;;
    esac
  done
  for dev in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^$PREFIX"); do
    echo "run.sh: removing leftover device $dev" >&2
    ip link del "$dev" 2>/dev/null
  done
  for ns in $nss; do
    echo "run.sh: removing leftover namespace $ns" >&2
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

cargo_() {
  # Under sudo, build as the invoking user so target/ stays theirs.
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    sudo -u "$SUDO_USER" -H bash -c 'cd "$0" && PATH="$HOME/.cargo/bin:$PATH" cargo "$@"' "$ROOT" "$@"
  else
    (cd "$ROOT" && PATH="$HOME/.cargo/bin:$PATH" cargo "$@")
  fi
}

if [ "$BUILD" = 1 ]; then
  cargo_ build --release -p xvs-bench --bin xvs-harness
  if ! cargo_ build --release -p xvs-vswitchd -p xvs-ctl; then
    echo "run.sh: xvsd/xvsctl did not build; the xvs row will say unavailable" >&2
  fi
fi

set +e
"$ROOT/target/release/xvs-harness" --prefix "$PREFIX" --work-dir "$WORK" --root "$ROOT" \
  ${ARGS[@]+"${ARGS[@]}"}
rc=$?
set -e
exit $rc
