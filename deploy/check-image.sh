#!/usr/bin/env bash
# Smoke check of a built infercloud image (Dockerfile.cpu / Dockerfile.cuda): `make check-image` runs it after
# the build. It starts the image's `serve` with examples/tenancy.yaml on the host network (port PORT, loopback)
# and a fresh named volume, waits for /health to answer 200, creates a key for tenant acme with
# `docker exec ... infercloud keys create`, checks that a chat completion (smollm2-135m-instruct) gets 401
# without the key and 200 with non-empty content with it, waits for the image's HEALTHCHECK to report
# `healthy`, then stops the container (it must exit cleanly) and removes it and its volume. On a failure it
# prints the tail of `docker logs` and still cleans up. Needs curl and python3 on the host.
#
#   deploy/check-image.sh [IMAGE]              # IMAGE defaults to infercloud:cpu
#   DOCKER=/usr/bin/docker PORT=8001 START_TIMEOUT_S=900 DOCKER_RUN_ARGS="--gpus all" \
#     deploy/check-image.sh infercloud:cuda
#
# The image's HEALTHCHECK probes port 8000: with another PORT the check passes --health-cmd for that port.
set -euo pipefail

IMAGE=${1:-infercloud:cpu}
DOCKER=${DOCKER:-docker}
PORT=${PORT:-8000}
START_TIMEOUT_S=${START_TIMEOUT_S:-600}
HEALTHY_TIMEOUT_S=${HEALTHY_TIMEOUT_S:-120}
DOCKER_RUN_ARGS=${DOCKER_RUN_ARGS:-}
CONFIG=/opt/infercloud/src/examples/tenancy.yaml
MODEL=smollm2-135m-instruct
BASE_URL="http://127.0.0.1:$PORT"

suffix="$(date +%s)-$$"
NAME="infercloud-check-$suffix"
VOLUME="infercloud-check-$suffix"
TMP=$(mktemp -d)
started=0
passed=0

log() { printf '[check-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$started" = 1 ]; then
    if [ "$passed" != 1 ]; then
      echo "---- docker logs --tail 80 $NAME ----" >&2
      "$DOCKER" logs --tail 80 "$NAME" >&2 2>&1 || true
      echo "---- end of logs ----" >&2
    fi
    "$DOCKER" rm -f -v "$NAME" >/dev/null 2>&1 || true
  fi
  "$DOCKER" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$TMP"
  if [ "$rc" = 0 ] && [ "$passed" = 1 ]; then log "ok: $IMAGE passed"; else log "$IMAGE: check failed (rc $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
since() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$(now)"; }
running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

# Nothing may already answer on PORT: the container shares the host's network.
if curl -s -o /dev/null --max-time 2 "$BASE_URL/health"; then
  fail "something already listens on 127.0.0.1:$PORT; stop it or set PORT"
fi

health_args=()
if [ "$PORT" != 8000 ]; then
  probe="import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=4)"
  health_args=(--health-cmd "python -c \"$probe\"")
fi

log "image $IMAGE, container $NAME, volume $VOLUME, port $PORT"
"$DOCKER" volume create "$VOLUME" >/dev/null
t0=$(now)
# shellcheck disable=SC2086  # DOCKER_RUN_ARGS is split on purpose
"$DOCKER" run -d --name "$NAME" --network host -v "$VOLUME:/data" "${health_args[@]}" $DOCKER_RUN_ARGS \
  "$IMAGE" serve --config "$CONFIG" --host 127.0.0.1 --port "$PORT" >/dev/null
started=1

# 1. /health answers 200.
deadline=$(( $(date +%s) + START_TIMEOUT_S ))
last=0
while :; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE_URL/health" || true)
  [ "$code" = 200 ] && break
  running || fail "the container exited before /health answered" \
    "(exit code $("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME"))"
  [ "$(date +%s)" -lt "$deadline" ] || fail "/health did not answer 200 within ${START_TIMEOUT_S}s" \
    "(last: ${code:-none})"
  if [ $(( $(date +%s) - last )) -ge 15 ]; then
    log "waiting for /health ($(since "$t0")s, last answer: ${code:-none})"; last=$(date +%s)
  fi
  sleep 1
done
log "/health: 200 after $(since "$t0")s"

# 2. A key for tenant acme (printed on the first line, once).
"$DOCKER" exec "$NAME" infercloud keys create --tenant acme --config "$CONFIG" >"$TMP/key.out" 2>"$TMP/key.err" \
  || fail "keys create failed: $(cat "$TMP/key.out" "$TMP/key.err")"
KEY=$(head -n 1 "$TMP/key.out" | tr -d '[:space:]')
[ -n "$KEY" ] || fail "keys create printed no key"
log "key created for tenant acme (prefix ${KEY:0:8}...)"

# 3. Chat completions: 401 without the key, 200 with non-empty content with it.
body="{\"model\": \"$MODEL\", \"max_tokens\": 16, \"temperature\": 0,
       \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]}"
code=$(curl -s -o "$TMP/nokey.json" -w '%{http_code}' --max-time 60 "$BASE_URL/v1/chat/completions" \
  -H 'Content-Type: application/json' -d "$body" || true)
[ "$code" = 401 ] || fail "chat without a key: HTTP ${code:-none}, expected 401:" \
  "$(head -c 500 "$TMP/nokey.json" 2>/dev/null)"
log "chat without a key: 401"

t1=$(now)
code=$(curl -s -o "$TMP/chat.json" -w '%{http_code}' --max-time 300 "$BASE_URL/v1/chat/completions" \
  -H 'Content-Type: application/json' -H "Authorization: Bearer $KEY" -d "$body" || true)
[ "$code" = 200 ] || fail "chat with the key: HTTP ${code:-none}, expected 200:" \
  "$(head -c 500 "$TMP/chat.json" 2>/dev/null)"
answer=$(python3 - "$TMP/chat.json" <<'EOF'
import json, sys
reply = json.load(open(sys.argv[1]))
content = (reply["choices"][0]["message"].get("content") or "").strip()
if not content:
    sys.exit("empty content: " + json.dumps(reply)[:500])
print(content)
EOF
) || fail "chat with the key: 200 but no content"
log "chat with the key: 200 in $(since "$t1")s, answer: $answer"

# 4. The image's HEALTHCHECK reports healthy.
deadline=$(( $(date +%s) + HEALTHY_TIMEOUT_S ))
while :; do
  status=$("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$NAME")
  [ "$status" = healthy ] && break
  [ "$status" != none ] || fail "the image has no HEALTHCHECK"
  running || fail "the container exited while waiting for healthy"
  [ "$(date +%s)" -lt "$deadline" ] || fail "health status '$status', not healthy, ${HEALTHY_TIMEOUT_S}s after the chat"
  sleep 2
done
log "docker health status: healthy ($(since "$t0")s after start)"

# 5. docker stop: the server exits cleanly on SIGTERM (exit code 0, not killed after the grace period).
t2=$(now)
"$DOCKER" stop "$NAME" >/dev/null
stop_s=$(since "$t2")
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME")
oom=$("$DOCKER" inspect -f '{{.State.OOMKilled}}' "$NAME")
[ "$exit_code" = 0 ] && [ "$oom" = false ] || fail "docker stop: exit code $exit_code (OOMKilled $oom) after ${stop_s}s"
log "docker stop: exit code 0 after ${stop_s}s"

passed=1
