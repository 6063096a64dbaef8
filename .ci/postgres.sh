#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: Debian's packages, a data dir of its own, TCP on
# 127.0.0.1 only. Idempotent: a second run finds it up and only prints the URL.
#
#   .ci/postgres.sh         install postgresql if missing, init + start the server, create role and
#                           database, wait until it takes connections; print the SQLAlchemy URL
#                           (the one line on stdout; everything else goes to stderr)
#   .ci/postgres.sh stop    stop that server (no-op when it is not running); the data dir stays
#
# Run it as root (CI): the server runs as the `postgres` OS user, since initdb refuses root.
# As another user it runs the server as that user (and needs the packages already installed).
# Settings (env): INFERCLOUD_PG_DIR (data, socket and log; default /var/tmp/infercloud-pg),
# INFERCLOUD_PG_PORT (default 55432).
set -euo pipefail

PG_DIR=${INFERCLOUD_PG_DIR:-/var/tmp/infercloud-pg}
PG_PORT=${INFERCLOUD_PG_PORT:-55432}
PG_HOST=127.0.0.1
DB_NAME=infercloud_test
DB_USER=infercloud
DB_PASSWORD=infercloud
URL="postgresql+psycopg://$DB_USER:$DB_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"

DATA=$PG_DIR/data
SOCK=$PG_DIR/run   # unix socket for the admin connection (peer auth); not world-reachable
LOG=$PG_DIR/server.log

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

CI_DIR=$(cd "$(dirname "$0")" && pwd)
cd /   # the postgres user may not be able to read the caller's cwd
exec 9>>"$PG_DIR.lock"   # one run at a time
flock 9

# Newest installed server's bin dir (/usr/lib/postgresql/<major>/bin), empty when none.
find_bindir() {
  local d best='' best_v=0 v
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
    v=${d#/usr/lib/postgresql/}; v=${v%/bin}
    [[ $v =~ ^[0-9]+$ ]] || continue
    if (( v > best_v )); then best=$d; best_v=$v; fi
  done
  echo "$best"
}

install_postgresql() {
  [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found and not root: apt-get install postgresql"
  "$CI_DIR/apt-install.sh" postgresql
}

# Run a command as the server's OS user.
if [[ $EUID -eq 0 ]]; then
  PG_OS_USER=postgres
  as_pg() { runuser -u "$PG_OS_USER" -- env LC_ALL=C.UTF-8 "$@"; }
else
  PG_OS_USER=$(id -un)
  as_pg() { env LC_ALL=C.UTF-8 "$@"; }
fi

BINDIR=$(find_bindir)

# Running: postmaster.pid names a live postgres process (not a zombie, not a pid reused after a
# reboot or a crash, where `pg_ctl status` would say yes and the server would refuse to start).
is_running() {
  local pid
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/stat" 2>/dev/null) =~ ^$pid\ \(postgres\)\ [^Z] ]]
}

if [[ ${1:-} == stop ]]; then
  if [[ -n $BINDIR ]] && is_running; then
    log "stopping the server in $DATA"
    as_pg "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w >&2
  else
    log "no server running in $DATA"
  fi
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

if [[ -z $BINDIR ]]; then
  install_postgresql
  BINDIR=$(find_bindir)
  [[ -n $BINDIR ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
fi
MAJOR=${BINDIR#/usr/lib/postgresql/}; MAJOR=${MAJOR%/bin}
id "$PG_OS_USER" >/dev/null 2>&1 || die "no OS user $PG_OS_USER (the postgresql packages create it)"

if ! is_running; then
  # A data dir from an interrupted initdb or another major version is thrown away: it is test data.
  if [[ -d $DATA && "$(cat "$DATA/PG_VERSION" 2>/dev/null || true)" != "$MAJOR" ]]; then
    log "removing unusable data dir $DATA"
    rm -rf "$DATA"
  fi
  mkdir -p "$PG_DIR"
  chown "$PG_OS_USER": "$PG_DIR"
  chmod 700 "$PG_DIR"
  as_pg mkdir -p "$SOCK"
  if [[ ! -d $DATA ]]; then
    log "initdb $DATA (PostgreSQL $MAJOR)"
    pwfile=$(as_pg mktemp "$PG_DIR/pw.XXXXXX")
    # The superuser's password is never used (peer auth on the socket) but TCP needs it set.
    head -c 24 /dev/urandom | base64 | as_pg tee "$pwfile" >/dev/null
    as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 --no-sync \
      --auth-local=peer --auth-host=scram-sha-256 >&2
    rm -f "$pwfile"
    # Listen on loopback only; durability is not worth its cost for a test server.
    as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- .ci/postgres.sh ---
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  log "starting the server on $PG_HOST:$PG_PORT (log: $LOG)"
  # Lock files left by a crashed server (kill -9, reboot) keep it from starting while their pid is
  # alive: a zombie, a reused pid, children still exiting. Not running means they are stale; and
  # a few tries give a crashed server's children time to go.
  for try in 1 2 3; do
    is_running && break   # a start that outlasted pg_ctl's wait
    rm -f "$DATA/postmaster.pid" "$SOCK"/.s.PGSQL.*
    as_pg "$BINDIR/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 >&2 9>&- && break   # 9: the lock
    (( try < 3 )) || { tail -n 20 "$LOG" >&2 || true; die "the server did not start"; }
    log "retrying in 2 s"
    sleep 2
  done
else
  log "server already running in $DATA"
fi

for _ in $(seq 1 60); do
  as_pg "$BINDIR/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" && break
  sleep 0.5
done
as_pg "$BINDIR/pg_isready" -h "$PG_HOST" -p "$PG_PORT" >&2 || die "no connections on $PG_HOST:$PG_PORT"

psql_admin() { as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"; }

# Role and database, created only when missing; the password is (re)set every time.
if [[ $(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'") != 1 ]]; then
  log "creating role $DB_USER"
  psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" >&2
else
  psql_admin -c "ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" >&2
fi
if [[ $(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") != 1 ]]; then
  log "creating database $DB_NAME"
  psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
fi

# The real check: the URL's credentials over TCP.
as_pg env PGPASSWORD="$DB_PASSWORD" "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
  -U "$DB_USER" -d "$DB_NAME" -tAc "SELECT 1" >/dev/null || die "cannot log in as $DB_USER over TCP"

echo "$URL"
