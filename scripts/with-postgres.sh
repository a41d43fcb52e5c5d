#!/usr/bin/env bash
# scripts/with-postgres.sh CMD...: runs CMD with a throwaway PostgreSQL.
#
# Installs PostgreSQL from Debian's packages when it is missing, starts a
# fresh cluster in a temporary directory on a free loopback port (as the
# `postgres` user when run as root: PostgreSQL refuses to run as root),
# creates a role and a database, exports
#   MICROPAY_TEST_PG=postgres://USER:PASSWORD@127.0.0.1:PORT/DB
# (the role may create databases: each test makes its own) and
# MICROPAY_TEST_PG_RESTART (a shell command that crash-restarts the
# cluster, for the fault tests) and, when openssl is installed,
# MICROPAY_TEST_PG_SSLROOTCERT (the CA of the server certificate the
# cluster offers TLS with, for tests/pg_tls.rs), runs CMD, and
# always stops the cluster and removes the directory, exiting with CMD's
# exit code.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "with-postgres: installing PostgreSQL from Debian's packages" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "with-postgres: PostgreSQL is missing and installing it needs root" >&2
        exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin="$(find_bin)"
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    as_owner=(runuser -u postgres --)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/micropay-pg.XXXXXX")"
chmod 0755 "$work"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work"
fi
data="$work/data"
log="$work/postgres.log"
started=""

cleanup() {
    if [ -n "$started" ]; then
        "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
"${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$work/initdb.log" 2>&1 || {
    cat "$work/initdb.log" >&2
    exit 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# TLS, when openssl is here: a throwaway CA and a server certificate for
# 127.0.0.1 and localhost (ECDSA P-256), so that the tests can connect
# with sslmode=verify-full. Without openssl the cluster is plain TCP only.
ssl_opts=""
if command -v openssl >/dev/null 2>&1; then
    tls="$work/tls"
    mkdir -p "$tls"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=micropay-test-pg-ca -keyout "$tls/ca.key" -out "$tls/ca.pem"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj /CN=127.0.0.1 -keyout "$tls/server.key" -out "$tls/server.csr"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
        openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
            -CAcreateserial -days 2 -extfile "$tls/server.ext" -out "$tls/server.pem"
    } >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }
    chmod 0600 "$tls/server.key"
    chmod 0644 "$tls/ca.pem"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$tls"
    fi
    ssl_opts="-c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
fi

for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_free "$port" || continue
    if "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
        -o "-p $port -k $work -c fsync=on -c listen_addresses=127.0.0.1 -c max_connections=300 $ssl_opts" \
        start >/dev/null; then
        started=1
        break
    fi
done
if [ -z "$started" ]; then
    echo "with-postgres: PostgreSQL did not start:" >&2
    cat "$log" >&2 || true
    exit 1
fi

psql=("${as_owner[@]}" "$bin/psql" -h "$work" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
"${psql[@]}" -c "CREATE ROLE micropay LOGIN CREATEDB PASSWORD '$password'" >/dev/null
"${psql[@]}" -c "CREATE DATABASE micropay OWNER micropay" >/dev/null

export MICROPAY_TEST_PG="postgres://micropay:$password@127.0.0.1:$port/micropay"
# For the fault tests (tests/pg_faults.rs): a command that crash-restarts
# this cluster (`-m immediate`: no checkpoint, like a power cut for the
# clients) with the options it was started with.
printf -v restart '%q ' "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -m immediate -w -t 60 restart
export MICROPAY_TEST_PG_RESTART="$restart"
if [ -n "$ssl_opts" ]; then
    export MICROPAY_TEST_PG_SSLROOTCERT="$tls/ca.pem"
fi
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (MICROPAY_TEST_PG set)" >&2

set +e
"$@"
code=$?
set -e
exit "$code"
