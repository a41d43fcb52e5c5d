#!/usr/bin/env bash
# micropay settle on PostgreSQL (1 and 2 servers) and on SQLite, beside
# pgbench's TPC-B on the same PostgreSQL instance, in one run; prints one
# table (and writes every figure as JSON into $OUT, default a temporary
# directory that is removed).
#
#   scripts/pgbench-compare.sh                   # starts a throwaway cluster
#   scripts/with-postgres.sh scripts/pgbench-compare.sh
#
# Environment (all optional):
#   BIN_DIR   where micropay-bench and micropay-server are (default: build
#             them with `cargo build --release` and use target/release)
#   DURATION  seconds each measurement lasts (default 10, at most 120)
#   CLIENTS   pgbench clients (default 16, as in issue 12)
#   SCALE     pgbench scale factor (default 1: one branch row, which every
#             TPC-B transaction updates, as every micropay commit batch
#             locks its one ledger_meta row)
#   OUT       keep the JSON figures in this directory
#
# pgbench runs against the database MICROPAY_TEST_PG names (its role needs
# CREATEDB: micropay-bench works in fresh databases of its own). fsync is
# on in the cluster with-postgres.sh starts, and SQLite runs with
# synchronous=FULL: every figure is for durable commits.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -z "${MICROPAY_TEST_PG:-}" ]; then
    exec "$repo/scripts/with-postgres.sh" "$0" "$@"
fi

duration="${DURATION:-10}"
clients="${CLIENTS:-16}"
scale="${SCALE:-1}"
case "$scale" in ''|*[!0-9]*|0) echo "SCALE must be a whole number from 1" >&2; exit 2 ;; esac
case "$duration" in ''|*[!0-9]*|0) echo "DURATION must be 1..120 seconds" >&2; exit 2 ;; esac
case "$clients" in ''|*[!0-9]*|0) echo "CLIENTS must be a whole number from 1" >&2; exit 2 ;; esac
[ "$duration" -le 120 ] || { echo "DURATION must be 1..120 seconds" >&2; exit 2; }

if [ -z "${BIN_DIR:-}" ]; then
    (cd "$repo" && cargo build --release --bin micropay-bench --bin micropay-server)
    target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
    BIN_DIR="$target/release"
fi
bench="$BIN_DIR/micropay-bench"
[ -x "$bench" ] || { echo "no $bench" >&2; exit 1; }

pgbench_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/pgbench"
[ -x "$pgbench_bin" ] || pgbench_bin="$(command -v pgbench)"

out="${OUT:-}"
if [ -z "$out" ]; then
    out="$(mktemp -d "${TMPDIR:-/tmp}/pgbench-compare.XXXXXX")"
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

echo "pgbench TPC-B: -s $scale -c $clients -j 2 -T $duration ..." >&2
"$pgbench_bin" -i -q -s "$scale" "$MICROPAY_TEST_PG" >"$out/pgbench-init.log" 2>&1
timeout $((duration + 60)) "$pgbench_bin" -c "$clients" -j 2 -T "$duration" -b tpcb-like \
    "$MICROPAY_TEST_PG" >"$out/pgbench.log" 2>&1
pgbench_tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out/pgbench.log" | head -n 1)"
pgbench_lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out/pgbench.log" | head -n 1)"

# One micropay-bench settle run; NAME then extra flags.
run() {
    local name="$1"
    shift
    echo "micropay-bench settle $name ..." >&2
    timeout $((duration + 180)) "$bench" settle -q --duration "$duration" \
        --server-bin "$BIN_DIR/micropay-server" --json "$out/$name.json" "$@" >/dev/null
}
run sqlite
run pg1 --db "$MICROPAY_TEST_PG" --servers 1
run pg2 --db "$MICROPAY_TEST_PG" --servers 2
pg2_tps="$(jq -r '.throughput_per_s' "$out/pg2.json")"
half="$(jq -rn --argjson t "$pg2_tps" '$t / 2 | floor')"
run pg2-half --db "$MICROPAY_TEST_PG" --servers 2 --rate "$half"

row() {
    jq -r --arg name "$1" --arg what "$2" \
        '"| \($what) | \(.throughput_per_s | floor) /s | \(.latency.p50_us / 1000) / \(.latency.p99_us / 1000) ms | \(.server_cpu_us_per_op | floor) µs | \(.audit_clean) |"' \
        "$out/$1.json"
}
echo
echo "| run | throughput | p50 / p99 | server CPU per op | audit clean |"
echo "|---|---|---|---|---|"
echo "| pgbench TPC-B (-s $scale -c $clients -j 2, no TLS, no signatures) | $pgbench_tps tps | avg $pgbench_lat ms | | |"
row sqlite "micropay settle, SQLite, 1 server"
row pg1 "micropay settle, PostgreSQL, 1 server"
row pg2 "micropay settle, PostgreSQL, 2 servers"
row pg2-half "micropay settle, PostgreSQL, 2 servers at $half/s offered"
echo
jq -rn --argjson pg2 "$pg2_tps" --argjson pgb "$pgbench_tps" \
    --argjson sq "$(jq -r .throughput_per_s "$out/sqlite.json")" \
    '"PostgreSQL 2 servers / pgbench tps: \($pg2 / $pgb * 100 | floor) % (target ≥ 200 %)\nPostgreSQL 2 servers / SQLite:       \($pg2 / $sq * 100 | floor) % (target ≥ 60 %)"'
echo "p99 at half load: $(jq -r '.latency.p99_us / 1000' "$out/pg2-half.json") ms (target < 10 ms)"
