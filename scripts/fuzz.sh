#!/usr/bin/env bash
# Fuzzes micropay's request decoder for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]        (default 60)
#
# Installs cargo-fuzz if it is missing, seeds fuzz/corpus/decode_request
# with the request lines of docs/PROTOCOL.md, and runs the decode_request
# target on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags). Crashes land in fuzz/artifacts/decode_request/.
#
# Environment: MICROPAY_FUZZ_SANITIZER (default "address"; "none" is
# faster and needs no sanitizer runtime), MICROPAY_FUZZ_JOBS (default 1).
# Run it under `nice` on a shared machine.
set -euo pipefail

secs="${1:-60}"
case "$secs" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
sanitizer="${MICROPAY_FUZZ_SANITIZER:-address}"
jobs="${MICROPAY_FUZZ_JOBS:-1}"
case "$jobs" in
    ''|*[!0-9]*) echo "fuzz.sh: MICROPAY_FUZZ_JOBS must be a number" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

corpus=fuzz/corpus/decode_request
mkdir -p "$corpus"
seed() { printf '%s' "$2" > "$corpus/seed-$1"; }
sig=6d7285abe2f8feb493443f4aac7e5b29c8e8fb6c8e5e7686bc93790a1cdc4b80507c59e6bb55c226db69c8bdb445dd3aecf622d9be4b93ea09428350d5eec508
payment='{"id":"00112233445566778899aabbccddeeff","payer":"alice","payee":"bob","amount":250,"expires_at":1800000000,"memo":"lunch","signature":"'"$sig"'"}'
seed register  '{"id":1,"op":"register"}'
seed locate    '{"id":2,"op":"locate","name":"bob"}'
seed pay-bare  '{"id":3,"op":"pay"}'
seed online    '{"id":4,"op":"online","port":9000,"address":"127.0.0.1"}'
seed offline   '{"op":"offline"}'
seed list      '{"id":5,"op":"list"}'
seed balance   '{"id":6,"op":"balance"}'
seed history   '{"id":7,"op":"history","limit":20,"before_seq":100}'
seed status    '{"id":8,"op":"status","payment_id":"00112233445566778899aabbccddeeff"}'
seed settle    '{"id":9,"op":"settle","payment":'"$payment"'}'
seed pay       '{"id":10,"op":"pay","payment":'"$payment"'}'
seed settle-nomemo '{"id":11,"op":"settle","payment":{"id":"ffeeddccbbaa99887766554433221100","payer":"carol-2","payee":"0","amount":18446744073709551615,"expires_at":0,"signature":""}}'

parallel=()
if [ "$jobs" -gt 1 ]; then parallel=(--jobs "$jobs"); fi

export RUSTC_BOOTSTRAP=1
exec cargo fuzz run --sanitizer "$sanitizer" "${parallel[@]}" decode_request "$corpus" -- \
    -max_total_time="$secs" -max_len=20000 -dict=fuzz/decode_request.dict -print_final_stats=1
