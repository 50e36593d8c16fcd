#!/usr/bin/env bash
# ci-postgres.sh starts a throwaway PostgreSQL cluster on 127.0.0.1 for the store's tests and
# prints the shell lines that point the tests at it:
#
#   eval "$(scripts/ci-postgres.sh)"          # start; exports VERDICT_TEST_POSTGRES
#   trap 'scripts/ci-postgres.sh stop' EXIT   # stop it and delete its files afterwards
#
# It installs Debian's postgresql if initdb is missing, runs the server as the postgres system
# user when started as root (PostgreSQL refuses to run as root) and as the caller otherwise,
# keeps everything (data, socket, log) in one temporary directory, and listens on the first
# free port from VERDICT_PG_PORT (default 55432). Only the export lines go to stdout; progress
# goes to stderr.
set -euo pipefail

log() { echo "ci-postgres: $*" >&2; }

if [ "${1:-}" = "stop" ]; then
  dir="${VERDICT_TEST_POSTGRES_DATA:-}"
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    log "nothing to stop (VERDICT_TEST_POSTGRES_DATA is not a directory)"
    exit 0
  fi
  pgctl="$(cat "$dir/pg_ctl_path" 2>/dev/null || true)"
  as=()
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  if [ -n "$pgctl" ]; then "${as[@]}" "$pgctl" -D "$dir/data" -m fast -w stop >&2 || true; fi
  rm -rf "$dir"
  log "stopped and removed $dir"
  exit 0
fi

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start=$(date +%s)
if [ -z "$(pgbin)" ] || [ ! -x "$(pgbin)/initdb" ]; then
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
fi
bin="$(pgbin)"
if [ ! -x "$bin/initdb" ]; then
  log "no initdb under /usr/lib/postgresql/*/bin after installing postgresql"
  exit 1
fi
# Debian's package may start its own cluster on 5432; ours is separate and does not need it.

as=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  as=(runuser -u postgres --)
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/verdict-pg.XXXXXX")"
chmod 700 "$dir"
echo "$bin/pg_ctl" >"$dir/pg_ctl_path"
password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$password" >"$dir/pwfile"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi

"${as[@]}" "$bin/initdb" -D "$dir/data" -U verdict --pwfile="$dir/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
rm -f "$dir/pwfile"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port="${VERDICT_PG_PORT:-55432}"
# The probe and the bind can race with another process taking the port: try a few ports.
# The settings live in the cluster's configuration, not on pg_ctl's command line, so that a
# test can stop and start the cluster again with plain `pg_ctl -D DIR/data start`.
echo "include 'verdict.conf'" >>"$dir/data/postgresql.conf"
for attempt in 1 2 3 4 5; do
  while ! port_free "$port"; do port=$((port + 1)); done
  # fsync=off: a throwaway cluster for tests, never for data anyone keeps.
  printf '%s\n' "port = $port" "unix_socket_directories = '$dir'" "listen_addresses = '127.0.0.1'" \
    "fsync = off" "max_connections = 200" >"$dir/data/verdict.conf"
  chmod 644 "$dir/data/verdict.conf"
  if "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2; then
    break
  fi
  if [ "$attempt" = 5 ]; then
    cat "$dir/server.log" >&2
    exit 1
  fi
  log "could not start on port $port; trying the next one"
  port=$((port + 1))
done
"${as[@]}" "$bin/createdb" -h "$dir" -p "$port" -U verdict verdict_test

dsn="postgres://verdict:$password@127.0.0.1:$port/verdict_test?sslmode=disable"
log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir ($(($(date +%s) - start))s)"
echo "export VERDICT_TEST_POSTGRES='$dsn'"
echo "export VERDICT_TEST_POSTGRES_DATA='$dir'"
