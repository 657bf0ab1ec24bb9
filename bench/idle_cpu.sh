#!/usr/bin/env bash
# bench/idle_cpu.sh NAME PID DATABASE_URL SECONDS
# CPU used by an idle process and by the PostgreSQL backends serving its database over
# SECONDS, in % of one core, from /proc/<pid>/stat (utime + stime): the service's own and
# its database sessions' (found in pg_stat_activity; PostgreSQL must run on this machine).
# Prints `result NAME cpu_pct=… serve_pct=… postgres_pct=… seconds=…`.
set -euo pipefail
name="$1" pid="$2" url="$3" secs="$4"
ticks() { # PID: its utime + stime in clock ticks (empty once it has ended)
    # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    [ -r "/proc/$1/stat" ] && sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
db=$(psql "$url" -Atc "SELECT current_database()")
declare -A start
for p in $(psql "$url" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()"); do
    start[$p]=$(ticks "$p" || true)
done
s0=$(ticks "$pid")
sleep "$secs"
s1=$(ticks "$pid")
# Backends alive over the whole window (a pool may close idle sessions meanwhile).
b=0
for p in "${!start[@]}"; do
    now=$(ticks "$p" || true)
    [ -n "$now" ] && [ -n "${start[$p]}" ] && b=$((b + now - start[$p]))
done
hz=$(getconf CLK_TCK)
awk -v n="$name" -v s="$((s1 - s0))" -v b="$b" -v hz="$hz" -v t="$secs" 'BEGIN {
    printf "result %s cpu_pct=%.2f serve_pct=%.2f postgres_pct=%.2f seconds=%s\n",
        n, 100 * (s + b) / hz / t, 100 * s / hz / t, 100 * b / hz / t, t }'
