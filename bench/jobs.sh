#!/usr/bin/env bash
# Job throughput of ONE worker process: N `noop` jobs (steps=1, step_ms=0) are created and
# dispatched while no worker runs, then one `commandcenter worker` process is started and
# the time until the read model shows all N completed gives jobs/hour.
#
#   bench/jobs.sh [N] [worker concurrency]      (defaults: 20000 jobs, concurrency 8)
#
# Runs against a fresh database and subject prefix on this machine's PostgreSQL and
# NATS (started if missing) and removes both afterwards.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/services.sh"

JOBS="${1:-20000}"
CONCURRENCY="${2:-8}"
ensure_rust
ensure_postgres
ensure_nats
cd "$CC_ROOT"
say "building (release)"
cargo build --release --quiet -p commandcenter -p commandcenter-bench
BIN="${CARGO_TARGET_DIR:-$CC_ROOT/target}/release"

DB="cc_bench_jobs_$$"
export DATABASE_URL="$PG_SERVER_URL/$DB"
export CC_NATS_PREFIX="ccbenchjobs$$"
export NATS_URL
export CC_DATA_DIR="$(mktemp -d)"
ADDR="127.0.0.1:18090"
URL="http://$ADDR"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    "$BIN/cc-bench" drop-stream --nats-url "$NATS_URL" --nats-prefix "$CC_NATS_PREFIX" 2>/dev/null || true
    rm -rf "$CC_DATA_DIR"
}
trap cleanup EXIT

say "starting the API, relay and projectors (no worker)"
CC_LOG_FORMAT=json "$BIN/commandcenter" serve --no-workers --listen-addr "$ADDR" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fs "$URL/health/ready" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "$URL/health/ready" >/dev/null || die "the service did not become ready"

say "submitting $JOBS jobs"
"$BIN/cc-bench" submit-jobs --url "$URL" --jobs "$JOBS"

say "starting one worker process (concurrency $CONCURRENCY)"
"$BIN/commandcenter" worker --worker-concurrency "$CONCURRENCY" >/dev/null 2>&1 &
pids+=($!)
"$BIN/cc-bench" wait-jobs --url "$URL" --jobs "$JOBS"
