#!/usr/bin/env bash
# Runs the README's run command (bin/orchestrator all, no DATABASE_URL, no provider) and
# checks with curl alone that a call goes PENDING -> IN_PROGRESS -> COMPLETED, then that
# SIGTERM stops everything with exit code 0. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Ports below Linux's ephemeral range (32768+), which outgoing connections may hold.
port=$((20000 + RANDOM % 6000))
log=$(mktemp)
PORT=$port HOST=127.0.0.1 SIMULATOR_MIN_DURATION_MS=1000 SIMULATOR_MAX_DURATION_MS=1500 \
  EMBEDDED_PG_PORT=$((26000 + RANDOM % 6000)) bin/orchestrator all >"$log" 2>&1 &
pid=$!
# On failure, stop it gracefully (so its embedded PostgreSQL stops too) before giving up on it.
cleanup() {
  kill -TERM $pid 2>/dev/null && for _ in $(seq 1 50); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  kill -9 $pid 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
fail() { echo "readme-run: $1"; cat "$log"; exit 1; }

for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || fail "bin/orchestrator all exited during start-up"
  sleep 0.2
done
grep -q 'embedded PostgreSQL' "$log" || fail "it did not say it uses an embedded PostgreSQL"
grep -q 'provider simulator' "$log" || fail "it did not say it uses the provider simulator"

created=$(curl -fs -X POST "http://127.0.0.1:$port/calls" -H 'Content-Type: application/json' \
  -d '{"to":"+966501234567","scriptId":"welcomeFlow","metadata":{"customerId":"1234"}}')
id=$(echo "$created" | sed -E 's/.*"id":"([^"]+)".*/\1/')
seen=$(echo "$created" | sed -E 's/.*"status":"([A-Z_]+)".*/\1/')
[ -n "$id" ] || fail "POST /calls returned no id"
status=$seen
for _ in $(seq 1 150); do
  status=$(curl -fs "http://127.0.0.1:$port/calls/$id" | sed -E 's/.*"status":"([A-Z_]+)".*/\1/')
  case "$seen" in *" $status" | "$status") ;; *) seen="$seen $status" ;; esac
  [ "$status" = COMPLETED ] || [ "$status" = FAILED ] && break
  sleep 0.1
done
[ "$seen" = "PENDING IN_PROGRESS COMPLETED" ] || fail "call $id went $seen, not PENDING IN_PROGRESS COMPLETED"
echo "readme-run: call $id went $seen, seen with curl alone"

kill -TERM $pid
code=0
wait $pid || code=$?
[ "$code" = 0 ] || fail "SIGTERM exit code was $code"
echo "readme-run: SIGTERM stopped it cleanly"
