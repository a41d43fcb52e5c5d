#!/usr/bin/env bash
# Crash safety, for longer than the test suite runs it: the real server is
# killed with SIGKILL at random moments during streams of settlements from
# several clients and restarted on the same database, ROUNDS times; then
# every payment whose receipt a client received must be in the ledger with
# the same receipt, nothing applied twice, balances summing to the grants,
# and `micropay-server audit` clean.
#
#   scripts/crash-test.sh [ROUNDS]        (default 25)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
rounds="${1:-25}"
case "$rounds" in
    ''|*[!0-9]*|0*) echo "usage: scripts/crash-test.sh [ROUNDS]  (ROUNDS: a whole number from 1, default 25; got '$rounds')" >&2; exit 2 ;;
esac
echo "crash test: $rounds SIGKILL rounds"
MICROPAY_CRASH_ROUNDS="$rounds" cargo test --release --test restart_crash \
    acknowledged_settlements_survive_sigkill -- --nocapture
