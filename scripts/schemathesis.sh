#!/usr/bin/env bash
# Runs schemathesis against the OpenAPI document the service serves: starts
# `commandcenter serve --demo` on a fresh database and NATS prefix, takes the first admin
# key it prints, and lets schemathesis call every operation with generated requests
# (valid and invalid), checking each answer's status, content type, headers and body
# against the document. Stops the service and drops its database and stream at the end.
#
# schemathesis is installed with pip into a virtual environment of its own
# ($CC_SCHEMATHESIS_VENV, default /var/tmp/commandcenter-venv), once per pinned version.
# Settings: CC_SCHEMATHESIS_MAX_EXAMPLES (default 20 per operation and phase),
# CC_SCHEMATHESIS_PORT (default 18089). Extra arguments go to `st run`.
# What the checks expect beyond their defaults, and why: scripts/schemathesis.toml.
# Exits with schemathesis's status: 0 when it found nothing.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

SCHEMATHESIS_VERSION=4.32.5
VENV="${CC_SCHEMATHESIS_VENV:-/var/tmp/commandcenter-venv}"
MAX_EXAMPLES="${CC_SCHEMATHESIS_MAX_EXAMPLES:-20}"
PORT="${CC_SCHEMATHESIS_PORT:-18089}"

ensure_rust
ensure_postgres
ensure_nats

if [ "$("$VENV/bin/st" --version 2>/dev/null || true)" != "st, version $SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cd "$CC_ROOT"
say "building commandcenter"
cargo build --quiet --bin commandcenter
binary="${CARGO_TARGET_DIR:-$CC_ROOT/target}/debug/commandcenter"

run_id="st$$_$(date +%s)"
database="cc_schemathesis_$run_id"
work="$(mktemp -d "${TMPDIR:-/tmp}/cc-schemathesis.XXXXXX")"
server=""

# delete_stream NAME: deletes a JetStream stream through the NATS protocol (no client needed).
delete_stream() {
    local hostport="${NATS_URL#nats://}"
    exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 0
    printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&3
    timeout 2 head -c 1 <&3 >/dev/null || true
    exec 3>&-
}

cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    psql -q "$PG_SERVER_URL/postgres" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    local prefix="${run_id^^}"
    delete_stream "${prefix}_EVENTS"
    delete_stream "${prefix}_AUDIT"
    rm -rf "$work"
}
trap cleanup EXIT

say "starting the service on 127.0.0.1:$PORT (database $database)"
# Long polls of /api/v1/events wait up to 30 s, hence the request timeout of 40 s.
# Short read-your-writes waits: generated positions are mostly ahead of the read models.
# No practical rate limit: the run is one key calling as fast as it can.
DATABASE_URL="$PG_SERVER_URL/$database" \
CC_LISTEN_ADDR="127.0.0.1:$PORT" \
CC_NATS_PREFIX="$run_id" \
CC_DATA_DIR="$work/data" \
CC_MIN_POSITION_WAIT_MS=100 \
CC_RATE_LIMIT_PER_SECOND=100000 \
CC_RATE_LIMIT_BURST=100000 \
CC_LOG_FORMAT=text \
RUST_LOG="${RUST_LOG:-warn}" \
    "$binary" serve --demo >"$work/stdout" 2>"$work/service.log" &
server=$!

base="http://127.0.0.1:$PORT"
key=""
for _ in $(seq 600); do
    kill -0 "$server" 2>/dev/null || { cat "$work/service.log" >&2; die "the service stopped"; }
    key="$(grep -o 'cc_[A-Za-z0-9_-]*' "$work/stdout" | head -n 1 || true)"
    if [ -n "$key" ] && curl -fsS -o /dev/null "$base/health/ready"; then
        break
    fi
    sleep 0.1
done
[ -n "$key" ] || die "no admin key was printed; see $work/service.log"
curl -fsS -o /dev/null "$base/health/ready" || die "the service is not ready"

say "schemathesis $SCHEMATHESIS_VERSION: at most $MAX_EXAMPLES examples per operation"
status=0
# From the scratch directory: hypothesis keeps nothing in the clone.
cd "$work"
"$VENV/bin/st" --config-file "$CC_ROOT/scripts/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $key" \
    --checks all \
    --mode all \
    --max-examples "$MAX_EXAMPLES" \
    --seed 1 \
    --request-timeout 40 \
    --generation-database none \
    --no-color \
    "$@" || status=$?
if [ "$status" != 0 ]; then
    say "schemathesis found problems (exit $status); the service's log: last lines"
    tail -n 20 "$work/service.log" >&2 || true
fi
exit "$status"
