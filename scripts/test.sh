#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end tests against the real PostgreSQL and
# NATS (found on the standard ports, or started privately). Each end-to-end test makes
# its own database and NATS subject prefix, and removes them when it ends. The
# dashboard's browser tests need Node.js, web/node_modules and Chromium: installed here
# when missing (see ensure_web).
# Extra arguments go to `cargo test` (e.g. a test name filter). Ends with one line
# "N passed, N failed" summing every test binary.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

ensure_rust
ensure_postgres
ensure_nats
ensure_web
export CC_TEST_DATABASE_URL="$PG_SERVER_URL"
cd "$CC_ROOT"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
