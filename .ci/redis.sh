#!/usr/bin/env bash
# A throwaway Redis server for the tests of shared rate limits: Debian's redis-server, a dir of its
# own, TCP on 127.0.0.1 only, no persistence. Idempotent: a second run finds it up and only prints the URL.
#
#   .ci/redis.sh         install redis-server if missing, start the server, wait until it answers
#                        PING; print its URL (the one line on stdout; everything else goes to stderr)
#   .ci/redis.sh stop    stop that server (no-op when it is not running)
#
# Settings (env): INFERCLOUD_REDIS_DIR (pid file and log; default /var/tmp/infercloud-redis),
# INFERCLOUD_REDIS_PORT (default 56379).
set -euo pipefail

REDIS_DIR=${INFERCLOUD_REDIS_DIR:-/var/tmp/infercloud-redis}
REDIS_PORT=${INFERCLOUD_REDIS_PORT:-56379}
REDIS_HOST=127.0.0.1
URL="redis://$REDIS_HOST:$REDIS_PORT/0"
CI_DIR=$(cd "$(dirname "$0")" && pwd)
PIDFILE=$REDIS_DIR/redis.pid
LOG=$REDIS_DIR/server.log

log() { echo "redis.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$REDIS_DIR"
exec 9>>"$REDIS_DIR.lock"   # one run at a time
flock 9

# Running: the pid file names a live redis-server (not a pid reused after a reboot or a crash).
is_running() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]]
}

answers() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if [[ ${1:-} == stop ]]; then
  if is_running; then
    log "stopping the server on $REDIS_HOST:$REDIS_PORT"
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 50); do is_running || break; sleep 0.1; done
  else
    log "no server running from $REDIS_DIR"
  fi
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

if ! command -v redis-server >/dev/null; then
  [[ $EUID -eq 0 ]] || die "redis-server not found and not root: apt-get install redis-server"
  "$CI_DIR/apt-install.sh" redis-server
fi
command -v redis-server >/dev/null || die "redis-server installed but not on PATH"

if ! is_running; then
  log "starting the server on $REDIS_HOST:$REDIS_PORT (log: $LOG)"
  rm -f "$PIDFILE"
  # No RDB snapshots, no AOF: test data. 9: the lock, not for the server to keep.
  redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" --daemonize yes \
    --pidfile "$PIDFILE" --logfile "$LOG" --save "" --appendonly no --protected-mode yes 9>&-
else
  log "server already running from $REDIS_DIR"
fi

for _ in $(seq 1 100); do
  answers && break
  sleep 0.1
done
answers || { tail -n 20 "$LOG" >&2 || true; die "no answer on $REDIS_HOST:$REDIS_PORT"; }

echo "$URL"
