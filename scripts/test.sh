#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end tests against the real PostgreSQL and
# NATS (found on the standard ports, or started privately). Each end-to-end test makes
# its own database and NATS subject prefix, and removes them when it ends.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

ensure_rust
ensure_postgres
ensure_nats
export CC_TEST_DATABASE_URL="$PG_SERVER_URL"
cd "$CC_ROOT"
cargo test --workspace --locked "$@"
