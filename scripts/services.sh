#!/usr/bin/env bash
# Starts (`start`, the default) or stops (`stop`) the private PostgreSQL and NATS that
# scripts/run.sh and scripts/test.sh use when none is reachable on the standard ports.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

case "${1:-start}" in
    start)
        ensure_postgres
        ensure_nats
        ;;
    stop)
        if [ -f "$CC_SERVICES_DIR/postgres/postmaster.pid" ]; then
            bindir=$(pg_bindir)
            as_pg_user "$bindir/pg_ctl" -D "$CC_SERVICES_DIR/postgres" -m fast stop
        fi
        if [ -f "$CC_SERVICES_DIR/nats.pid" ]; then
            kill "$(cat "$CC_SERVICES_DIR/nats.pid")" 2>/dev/null || true
            rm -f "$CC_SERVICES_DIR/nats.pid"
        fi
        ;;
    *)
        echo "usage: $0 [start|stop]" >&2
        exit 2
        ;;
esac
