#!/usr/bin/env bash
# The micropay story end to end, on a fresh machine with only the Rust
# toolchain: build, make certificates, start a server, register alice and
# bob, put bob online, alice pays bob directly, balances and histories, one
# refusal, the server's audit, and everything stopped again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Print a command as a person would type it (program name, quoted args).
run() { printf '$ %s' "$(basename "$1")"; shift_print "${@:2}"; "$@"; }
shift_print() { for a in "$@"; do printf ' %q' "$a"; done; printf '\n'; }

say "building (release; the first build takes a few minutes)"
cargo build --release --bins
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/micropay-demo.XXXXXX")"
server_pid=""
bob_pid=""
cleanup() {
    [ -n "$bob_pid" ] && kill "$bob_pid" 2>/dev/null && wait "$bob_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # wait_for FILE PATTERN: up to 20 s for PATTERN to appear in FILE
    for _ in $(seq 1 200); do
        if [ -s "$1" ] && grep -q "$2" "$1"; then return 0; fi
        sleep 0.1
    done
    echo "demo: timed out waiting for '$2' in $1" >&2
    cat "$1" >&2 || true
    return 1
}

say "certificates for alice and bob, made with rcgen into $work/certs"
run "$bin/micropay-certs" --out "$work/certs" alice bob

say "starting the server on a free loopback port (ledger: $work/ledger.db)"
"$bin/micropay-server" --cert "$work/certs/server.pem" --key "$work/certs/server.key" \
    --ca "$work/certs/ca.pem" --listen 127.0.0.1:0 --db "$work/ledger.db" \
    --ready-file "$work/server.addr" 2>"$work/server.log" &
server_pid=$!
wait_for "$work/server.addr" ":"
server="$(cat "$work/server.addr")"
echo "server listening on $server"

export MICROPAY_CERTS="$work/certs" MICROPAY_SERVER="$server"
alice() { run "$bin/micropay-client" --as alice "$@"; }
bob() { run "$bin/micropay-client" --as bob "$@"; }

say "alice and bob register (each account is bound to the key in their certificate)"
alice register
bob register

say "bob goes online and waits for payments"
"$bin/micropay-client" --as bob serve >"$work/bob.log" 2>&1 &
bob_pid=$!
wait_for "$work/bob.log" "online as"
cat "$work/bob.log"

say "alice looks who is online"
alice list

say "alice pays bob 250 directly, peer to peer; bob forwards it and the server settles it"
alice send bob 250 --memo "coffee and cake"
wait_for "$work/bob.log" "received 250"
echo "bob's listener says:"
tail -n 1 "$work/bob.log"

say "balances"
printf 'alice: '; "$bin/micropay-client" --as alice balance
printf 'bob:   '; "$bin/micropay-client" --as bob balance

say "histories"
alice history
bob history

say "a refusal: alice tries to pay bob more than she has"
set +e
alice send bob 1000000
code=$?
set -e
echo "(exit code $code: refused, nothing moved)"
[ "$code" -eq 1 ]
printf 'alice: '; "$bin/micropay-client" --as alice balance

say "bob goes offline (Ctrl-C), the server stops (SIGTERM)"
kill -INT "$bob_pid"; wait "$bob_pid" || true; bob_pid=""
kill -TERM "$server_pid"; wait "$server_pid"; server_pid=""
echo "server log:"
sed 's/^/  /' "$work/server.log"

say "audit of the ledger: every signature verifies, money is conserved"
run "$bin/micropay-server" audit --db "$work/ledger.db"

say "demo complete"
