#!/usr/bin/env bash
# Make micropay certificates with rcgen (through the micropay-certs binary).
#
#   scripts/gen-certs.sh [--out DIR] [--days N] [--key-type ed25519|ecdsa-p256]
#                        [--server-name DNS]... [--server-ip IP]...
#                        [--force] [--renew-server] NAME...
#   scripts/gen-certs.sh [--out DIR] [--crl-days N] --revoke NAME [--revoke NAME]...
#
# Writes DIR/ca.pem + ca.key (made once, reused afterwards, never replaced),
# DIR/server.pem + server.key (made once; replaced only with --renew-server)
# and DIR/NAME.pem + NAME.key per person (replaced only with --force, which
# touches the people named and nothing else). Keys get mode 0600. The names
# ca, server, crl, localhost and the server's DNS names are reserved.
# --revoke NAME adds the serial of DIR/NAME.pem to DIR/crl.pem (keeping its
# entries) and re-signs it with the CA; servers and payees running with
# --crl DIR/crl.pem pick it up without a restart.
# `micropay-certs --help` says more.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build quietly; the binary runs in the caller's directory so that --out
# is relative to where the user is.
cargo build --quiet --release --manifest-path "$repo/Cargo.toml" --bin micropay-certs
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
exec "$target_dir/release/micropay-certs" "$@"
