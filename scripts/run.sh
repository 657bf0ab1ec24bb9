#!/usr/bin/env bash
# Runs CommandCenter on this machine, all in one process: finds (or starts) PostgreSQL
# and NATS, builds the release binary and serves on CC_LISTEN_ADDR (default
# 127.0.0.1:8080). Extra arguments go to `commandcenter serve` (try --help); `--demo`
# seeds a small demo dataset into an empty database.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

ensure_rust
ensure_postgres
ensure_nats
export DATABASE_URL="${DATABASE_URL:-$PG_SERVER_URL/commandcenter}"
cd "$CC_ROOT"
say "building (release)"
cargo build --release --quiet
exec "${CARGO_TARGET_DIR:-$CC_ROOT/target}/release/commandcenter" serve "$@"
