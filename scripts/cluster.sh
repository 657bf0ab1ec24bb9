#!/usr/bin/env bash
# The production topology on one machine, from the system's PostgreSQL and nats-server
# binaries (installed with apt-get when missing, as scripts/lib/services.sh does), on
# 127.0.0.1 only:
#
#   - a PostgreSQL primary and a hot-standby streaming replica (pg_basebackup -R, physical
#     replication slot cc_replica);
#   - a 3-node nats-server JetStream cluster; the event stream keeps
#     CC_CLUSTER_STREAM_REPLICAS copies (default 3);
#   - two API processes (serve --no-relay --no-projectors --no-workers, reads on the
#     replica, NATS_URL listing the three nodes), two relays, two projectors, two workers.
#
# Usage:
#   scripts/cluster.sh up        start everything; prints the API URLs and an admin key
#   scripts/cluster.sh down      stop exactly what `up` started (by pid), remove its data
#   scripts/cluster.sh status    processes, active relay/projectors, replica lag, stream leader
#   scripts/cluster.sh env       the cluster's settings (KEY=value lines, as in cluster.env)
#   scripts/cluster.sh pg primary|replica stop|start|restart [fast|immediate]
#   scripts/cluster.sh kill NAME     SIGKILL one process (nats-1, relay-2, api-1, ...)
#   scripts/cluster.sh start NAME    start it again, as `up` did
#   scripts/cluster.sh pid NAME      its pid (exits 1 when it is not running)
#
# Settings (environment):
#   CC_CLUSTER_DIR         data, logs and pid files (default /var/tmp/commandcenter-cluster)
#   CC_CLUSTER_PORT_BASE   first port (default 26000, below the kernel's ephemeral range, so no
#                          outgoing connection can hold one of ours): PostgreSQL primary +0, replica +1,
#                          NATS clients +10..12, routes +20..22, monitoring +30..32, APIs +40..41
#   CC_CLUSTER_STREAM_REPLICAS  copies of the event stream (default 3)
#   CC_CLUSTER_PREFIX      NATS subject prefix (default cc)
#   CC_BIN                 the commandcenter binary (default: cargo build, then target/debug)
#   CC_CLUSTER_ENV_*       extra environment for every commandcenter process, e.g.
#                          CC_CLUSTER_ENV_RUST_LOG=debug sets RUST_LOG=debug
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

DIR="${CC_CLUSTER_DIR:-/var/tmp/commandcenter-cluster}"
BASE="${CC_CLUSTER_PORT_BASE:-26000}"
STREAM_REPLICAS="${CC_CLUSTER_STREAM_REPLICAS:-3}"
PREFIX="${CC_CLUSTER_PREFIX:-cc}"
PG_PRIMARY_PORT=$((BASE + 0))
PG_REPLICA_PORT=$((BASE + 1))
DB=commandcenter
PRIMARY_URL="postgres://postgres@127.0.0.1:$PG_PRIMARY_PORT/$DB"
REPLICA_URL="postgres://postgres@127.0.0.1:$PG_REPLICA_PORT/$DB"
NATS_URLS="nats://127.0.0.1:$((BASE + 10)),nats://127.0.0.1:$((BASE + 11)),nats://127.0.0.1:$((BASE + 12))"
ROLES="relay-1 relay-2 projector-1 projector-2 worker-1 worker-2 api-1 api-2"

pidfile() { echo "$DIR/pids/$1.pid"; }

# alive PID: true when PID runs (a killed process nobody reaped yet, a zombie, does not).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ] || return 1
    # One of ours, not an unrelated process that reused a recorded pid.
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qE 'commandcenter|nats-server|postgres'
}

# running NAME: true when NAME's recorded pid is alive.
running() {
    local f
    f=$(pidfile "$1")
    [ -f "$f" ] && alive "$(cat "$f")"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -n "${CC_QUIET:-}" ] && return 1
            die "$what not ready within ${seconds}s (logs in $DIR/logs)"
        fi
        sleep 0.1
    done
}

binary() {
    if [ -n "${CC_BIN:-}" ]; then
        echo "$CC_BIN"
        return
    fi
    ensure_rust
    (cd "$CC_ROOT" && cargo build --locked --quiet >&2)
    echo "${CARGO_TARGET_DIR:-$CC_ROOT/target}/debug/commandcenter"
}

pg_tools() {
    BINDIR=$(pg_bindir) || true
    if [ -z "${BINDIR:-}" ]; then
        apt_install postgresql
        BINDIR=$(pg_bindir) || die "PostgreSQL binaries not found after installing"
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir "$DIR" postgres
    fi
}

psql_primary() {
    "$BINDIR/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U postgres -d "${2:-$DB}" -c "$1"
}

pg_data() { echo "$DIR/pg-$1"; }

pg_ctl_of() {
    local which=$1
    shift
    as_pg_user "$BINDIR/pg_ctl" -D "$(pg_data "$which")" -l "$DIR/logs/pg-$which.log" "$@"
}

record_pg_pid() {
    head -n 1 "$(pg_data "$1")/postmaster.pid" >"$(pidfile "pg-$1")"
}

pg_settings() {
    # Small: a few hundred MiB for the whole topology on a 2-core machine.
    cat <<EOF
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$DIR/run'
max_connections = 120
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
hot_standby = on
hot_standby_feedback = on
wal_keep_size = 64MB
EOF
}

start_postgres() {
    pg_tools
    local primary replica
    primary=$(pg_data primary)
    replica=$(pg_data replica)
    if [ "$(id -u)" = 0 ]; then
        install -d -m 0700 -o postgres -g postgres "$primary" "$replica"
        install -d -o postgres -g postgres "$DIR/run"
        chown postgres "$DIR/logs"
    else
        install -d -m 0700 "$primary" "$replica"
        mkdir -p "$DIR/run"
    fi
    say "PostgreSQL primary on 127.0.0.1:$PG_PRIMARY_PORT"
    as_pg_user "$BINDIR/initdb" -D "$primary" -U postgres -A trust -E UTF8 >/dev/null
    pg_settings "$PG_PRIMARY_PORT" | as_pg_user tee -a "$primary/postgresql.conf" >/dev/null
    pg_ctl_of primary -w start >/dev/null
    record_pg_pid primary
    psql_primary "SELECT pg_create_physical_replication_slot('cc_replica')" postgres >/dev/null
    say "PostgreSQL hot-standby replica on 127.0.0.1:$PG_REPLICA_PORT (pg_basebackup -R, slot cc_replica)"
    as_pg_user "$BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U postgres \
        -D "$replica" -R -X stream -S cc_replica
    # The copy carries the primary's settings; the later port line wins.
    echo "port = $PG_REPLICA_PORT" | as_pg_user tee -a "$replica/postgresql.conf" >/dev/null
    pg_ctl_of replica -w start >/dev/null
    record_pg_pid replica
}

nats_node_conf() {
    local n=$1 routes="" i
    for i in 0 1 2; do
        routes+="    nats-route://127.0.0.1:$((BASE + 20 + i))"$'\n'
    done
    cat <<EOF
server_name: nats-$((n + 1))
listen: 127.0.0.1:$((BASE + 10 + n))
http: 127.0.0.1:$((BASE + 30 + n))
jetstream {
  store_dir: "$DIR/nats-$((n + 1))"
  max_memory_store: 64MB
  max_file_store: 1GB
}
cluster {
  name: cc
  listen: 127.0.0.1:$((BASE + 20 + n))
  routes: [
$routes  ]
}
EOF
}

start_process() {
    local name=$1
    shift
    # exec: no shell stays behind holding the caller's stdout.
    (exec nohup "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1) &
    echo $! >"$(pidfile "$name")"
}

start_nats_node() {
    local name=$1 n=$(( ${1#nats-} - 1 ))
    command -v nats-server >/dev/null || apt_install nats-server
    nats_node_conf "$n" >"$DIR/$name.conf"
    start_process "$name" nats-server -c "$DIR/$name.conf"
    wait_until 30 "$name" reachable 127.0.0.1 $((BASE + 10 + n))
}

meta_leader() {
    curl -sf "http://127.0.0.1:$((BASE + 30 + $1))/jsz" | jq -er '.meta_cluster.leader // empty'
}

any_meta_leader() {
    meta_leader 0 || meta_leader 1 || meta_leader 2
}

start_nats() {
    # The nodes' monitoring endpoints are read with curl and jq (leaders, stream state).
    command -v curl >/dev/null && command -v jq >/dev/null || apt_install curl jq
    say "NATS JetStream cluster on 127.0.0.1:$((BASE + 10))-$((BASE + 12)) (stream replicas: $STREAM_REPLICAS)"
    local name
    for name in nats-1 nats-2 nats-3; do
        start_nats_node "$name"
    done
    wait_until 60 "the JetStream meta leader" any_meta_leader
}

# env_for ROLE: the environment of one commandcenter process.
role_env() {
    local name=$1
    local -a env=(
        "DATABASE_URL=$PRIMARY_URL"
        "NATS_URL=$NATS_URLS"
        "CC_NATS_PREFIX=$PREFIX"
        "CC_NATS_STREAM_REPLICAS=$STREAM_REPLICAS"
        "CC_DATA_DIR=$DIR/data"
        "CC_DB_MAX_CONNECTIONS=8"
        "RUST_LOG=${RUST_LOG:-info}"
    )
    case "$name" in
        api-*)
            env+=("READ_DATABASE_URLS=$REPLICA_URL"
                "CC_LISTEN_ADDR=127.0.0.1:$((BASE + 40 + ${name#api-} - 1))")
            ;;
        worker-*) env+=("CC_WORKER_ID=$name") ;;
    esac
    local var
    for var in $(compgen -e | grep '^CC_CLUSTER_ENV_' || true); do
        env+=("${var#CC_CLUSTER_ENV_}=${!var}")
    done
    printf '%s\n' "${env[@]}"
}

start_role() {
    local name=$1 bin
    bin=$(cat "$DIR/bin")
    local -a args
    case "$name" in
        relay-*) args=(relay) ;;
        projector-*) args=(projector) ;;
        worker-*) args=(worker) ;;
        api-*) args=(serve --no-relay --no-projectors --no-workers) ;;
        *) die "unknown process $name" ;;
    esac
    local -a env
    mapfile -t env < <(role_env "$name")
    start_process "$name" env "${env[@]}" "$bin" "${args[@]}"
}

api_ready() {
    curl -sf "http://127.0.0.1:$((BASE + 40 + $1))/health/ready"
}

write_env() {
    local key=$1
    cat >"$DIR/cluster.env" <<EOF
DATABASE_URL=$PRIMARY_URL
READ_DATABASE_URLS=$REPLICA_URL
NATS_URL=$NATS_URLS
CC_NATS_PREFIX=$PREFIX
CC_NATS_STREAM_REPLICAS=$STREAM_REPLICAS
API_URLS=http://127.0.0.1:$((BASE + 40)),http://127.0.0.1:$((BASE + 41))
NATS_MONITOR_URLS=http://127.0.0.1:$((BASE + 30)),http://127.0.0.1:$((BASE + 31)),http://127.0.0.1:$((BASE + 32))
CC_API_KEY=$key
EOF
}

up() {
    if [ -d "$DIR" ] && [ -n "$(ls "$DIR/pids" 2>/dev/null)" ]; then
        die "a cluster already runs from $DIR (scripts/cluster.sh down first)"
    fi
    if [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        die "$DIR holds what an earlier run left (an up that failed?): scripts/cluster.sh down removes it"
    fi
    local bin
    bin=$(binary)
    [ -x "$bin" ] || die "no commandcenter binary at $bin"
    mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/data"
    echo "$bin" >"$DIR/bin"
    local port
    for port in $PG_PRIMARY_PORT $PG_REPLICA_PORT $((BASE + 10)) $((BASE + 11)) $((BASE + 12)) \
        $((BASE + 20)) $((BASE + 21)) $((BASE + 22)) $((BASE + 30)) $((BASE + 31)) $((BASE + 32)) \
        $((BASE + 40)) $((BASE + 41)); do
        reachable 127.0.0.1 "$port" && die "port $port is taken (choose CC_CLUSTER_PORT_BASE)"
    done
    start_postgres
    say "migrating and creating an admin key"
    DATABASE_URL=$PRIMARY_URL "$bin" migrate >>"$DIR/logs/migrate.log" 2>&1
    local key
    key=$(DATABASE_URL=$PRIMARY_URL "$bin" keys create --role admin --name cluster 2>>"$DIR/logs/migrate.log")
    write_env "$key"
    start_nats
    say "roles: $ROLES"
    local name
    for name in $ROLES; do
        start_role "$name"
    done
    local n
    for n in 0 1; do
        if ! CC_QUIET=1 wait_until 60 "api-$((n + 1))" api_ready "$n"; then
            curl -s "http://127.0.0.1:$((BASE + 40 + n))/health/ready" >&2 || true
            tail -n 20 "$DIR/logs/api-$((n + 1)).log" >&2
            die "api-$((n + 1)) not ready within 60s (logs in $DIR/logs)"
        fi
    done
    say "up: APIs on http://127.0.0.1:$((BASE + 40)) and http://127.0.0.1:$((BASE + 41)); settings in $DIR/cluster.env"
    cat "$DIR/cluster.env"
}

# stop_pid NAME: SIGTERM its recorded pid, SIGKILL after 15 s.
stop_pid() {
    local f pid
    f=$(pidfile "$1")
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    [ -d "$DIR" ] || { say "nothing runs from $DIR"; return; }
    # Only a directory `up` made is removed (CC_CLUSTER_DIR may point anywhere).
    [ -f "$DIR/bin" ] || [ -d "$DIR/pids" ] \
        || die "$DIR holds no cluster (no bin file or pids directory): not removing it"
    local name
    for name in $ROLES nats-1 nats-2 nats-3; do
        stop_pid "$name"
    done
    pg_tools
    for name in replica primary; do
        if [ -f "$(pg_data "$name")/postmaster.pid" ]; then
            pg_ctl_of "$name" -m immediate stop >/dev/null 2>&1 || true
        fi
        stop_pid "pg-$name"
    done
    rm -rf "$DIR"
    say "down: stopped and removed $DIR"
}

pg_cmd() {
    local which=${1:?primary or replica} action=${2:?stop, start or restart} mode=${3:-fast}
    pg_tools
    case "$action" in
        stop) pg_ctl_of "$which" -w -m "$mode" stop >/dev/null ;;
        start) pg_ctl_of "$which" -w start >/dev/null && record_pg_pid "$which" ;;
        restart) pg_ctl_of "$which" -w -m "$mode" restart >/dev/null && record_pg_pid "$which" ;;
        *) die "pg $which: stop, start or restart" ;;
    esac
}

status() {
    [ -d "$DIR/pids" ] || die "no cluster runs from $DIR"
    pg_tools
    printf '%-12s %-8s %s\n' process pid state
    local name
    for name in pg-primary pg-replica nats-1 nats-2 nats-3 $ROLES; do
        local pid=-
        [ -f "$(pidfile "$name")" ] && pid=$(cat "$(pidfile "$name")")
        if running "$name"; then
            printf '%-12s %-8s %s\n' "$name" "$pid" running
        else
            printf '%-12s %-8s %s\n' "$name" "$pid" stopped
        fi
    done
    echo
    echo "active (advisory lock holders, by pid):"
    psql_primary "SELECT '  ' || substring(a.application_name FROM 'pid=[0-9]+ .*') \
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'commandcenter pid=%' \
        ORDER BY 1" || echo "  (primary not answering)"
    echo
    echo "replica lag (seen from the primary):"
    psql_primary "SELECT '  ' || application_name || ' ' || state || ': ' || \
        coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint::text, '?') || ' bytes, replay lag ' || \
        coalesce(extract(epoch FROM replay_lag)::numeric(10,3)::text, '0') || ' s' FROM pg_stat_replication" \
        || echo "  (primary not answering)"
    echo "replica lag (seen from the replica):"
    "$BINDIR/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_REPLICA_PORT" -U postgres -d "$DB" -c \
        "SELECT '  replay ' || CASE WHEN pg_is_wal_replay_paused() THEN 'PAUSED' ELSE 'running' END || \
         ', last replayed transaction committed ' || \
         coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::numeric(10,3)::text, '?') || ' s ago'" \
        || echo "  (replica not answering)"
    echo
    echo "event stream ${PREFIX^^}_EVENTS:"
    local n info=""
    for n in 0 1 2; do
        info=$(curl -sf "http://127.0.0.1:$((BASE + 30 + n))/jsz?streams=true" 2>/dev/null) && break
    done
    if [ -n "$info" ]; then
        echo "$info" | jq -r --arg s "${PREFIX^^}_EVENTS" \
            '"  meta leader: \(.meta_cluster.leader)", (.account_details[]?.stream_detail[]? | select(.name == $s) |
              "  leader: \(.cluster.leader)  replicas: \([.cluster.replicas[]? | "\(.name)\(if .current then "" else " (behind)" end)"] | join(", "))  messages: \(.state.messages)")'
    else
        echo "  (no NATS node answering)"
    fi
}

main() {
    local command=${1:-}
    shift || true
    case "$command" in
        up) up ;;
        down) down ;;
        status) status ;;
        env) cat "$DIR/cluster.env" ;;
        pg) pg_cmd "$@" ;;
        kill)
            local name=${1:?process name}
            running "$name" || die "$name is not running"
            kill -KILL "$(cat "$(pidfile "$name")")"
            ;;
        start)
            local name=${1:?process name}
            running "$name" && die "$name is running"
            case "$name" in
                nats-*) start_nats_node "$name" ;;
                *) start_role "$name" ;;
            esac
            ;;
        pid)
            running "${1:?process name}" || exit 1
            cat "$(pidfile "$1")"
            ;;
        *) die "usage: scripts/cluster.sh up|down|status|env|pg|kill|start|pid" ;;
    esac
}

main "$@"
