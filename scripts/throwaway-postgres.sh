#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests and prints its URL.
#
#   eval "$(scripts/throwaway-postgres.sh)"   # exports MAILROBOT_TEST_DATABASE_URL,
#                                             # MAILROBOT_TEST_PG_DIR and MAILROBOT_TEST_PG_CA
#                                             # (the CA of the server's TLS certificate)
#   scripts/throwaway-postgres.sh stop "$MAILROBOT_TEST_PG_DIR"
#   DURABLE=1 scripts/throwaway-postgres.sh   # fsync and synchronous commit on
#
# Debian's `postgresql` package is installed when missing. The cluster lives in
# a temporary directory on a free loopback port, run by the `postgres` user
# (initdb refuses root); the robot's role `mailrobot` owns its databases and
# may create more (the tests make one per test), but is no superuser.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "== installing postgresql" >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

if ! command -v openssl >/dev/null; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

run_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else as_root runuser -u postgres -- "$@"; fi; }

if [ "${1:-}" = stop ]; then
  dir=${2:?usage: throwaway-postgres.sh stop DIR}
  run_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  as_root rm -rf "$dir"
  exit 0
fi

dir=$(mktemp -d /tmp/mailrobot-pg.XXXXXX)
chmod 755 "$dir"
as_root chown postgres "$dir" 2>/dev/null || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

run_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 >/dev/null
# A test machine's cluster: no fsync wait (nothing here must survive a power cut),
# room for many test databases and nodes at once. DURABLE=1 keeps PostgreSQL's
# own defaults (fsync, synchronous commit): what benchmarks measure against.
# TLS as a production server has it: a CA of the test's own signs the
# server's certificate (for 127.0.0.1 only, so verify-full by another name
# fails); sessions without sslmode negotiate it, as libpq's prefer does.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=mailrobot test CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 30 \
  -extfile "$dir/server.ext" -out "$dir/server.crt" >/dev/null 2>&1
chmod 600 "$dir/server.key" && as_root chown postgres "$dir/server.key" "$dir/server.crt" 2>/dev/null || true
chmod 644 "$dir/ca.crt"
tls="-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
if [ "${DURABLE:-0}" = 1 ]; then durability=""; fi
run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
  "-p $port -k $dir -c listen_addresses=127.0.0.1 $tls $durability -c max_connections=400 -c shared_buffers=128MB" \
  start >/dev/null
run_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE mailrobot LOGIN CREATEDB PASSWORD '$password'" \
  -c "CREATE DATABASE mailrobot OWNER mailrobot" >/dev/null

echo "export MAILROBOT_TEST_DATABASE_URL='postgres://mailrobot:$password@127.0.0.1:$port/mailrobot'"
echo "export MAILROBOT_TEST_PG_DIR='$dir'"
echo "export MAILROBOT_TEST_PG_CA='$dir/ca.crt'"
