# Sourced by scripts/run.sh and scripts/test.sh: makes sure PostgreSQL and NATS (with
# JetStream) are reachable, starting private instances from the system's binaries when
# they are not, and installing those binaries with apt-get when missing and permitted
# (running as root, or CC_ALLOW_APT=1).
#
# The private PostgreSQL lives under $CC_SERVICES_DIR (default
# /var/tmp/commandcenter-services), the private NATS store under .data/nats (nats.conf);
# they listen on 127.0.0.1:55432 (PostgreSQL) and 127.0.0.1:54222 (NATS); they keep
# running after the script ends so the next run reuses them. Stop them with
#   scripts/services.sh stop
# CC_FORCE_PRIVATE_SERVICES=1 ignores servers on the standard ports (to test this path).

CC_SERVICES_DIR="${CC_SERVICES_DIR:-/var/tmp/commandcenter-services}"
CC_PRIVATE_PG_PORT="${CC_PRIVATE_PG_PORT:-55432}"
CC_PRIVATE_NATS_PORT="${CC_PRIVATE_NATS_PORT:-54222}"
CC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# reachable HOST PORT: true when something accepts TCP connections there.
reachable() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

may_install() {
    [ "$(id -u)" = 0 ] || [ "${CC_ALLOW_APT:-0}" = 1 ]
}

apt_install() {
    may_install || die "$* is missing; install it (apt-get install $*) or rerun as root / with CC_ALLOW_APT=1"
    say "installing $* with apt-get"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && echo "$dir"
}

# Runs a PostgreSQL server binary as an unprivileged user (initdb refuses root).
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_private_postgres() {
    local bindir data="$CC_SERVICES_DIR/postgres"
    bindir=$(pg_bindir) || true
    if [ -z "$bindir" ]; then
        apt_install postgresql
        bindir=$(pg_bindir) || die "PostgreSQL binaries not found after installing"
    fi
    mkdir -p "$CC_SERVICES_DIR"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$data" postgres
        install -d -m 0700 -o postgres -g postgres "$data"
        install -d -o postgres -g postgres "$CC_SERVICES_DIR/run"
    else
        install -d -m 0700 "$data"
        mkdir -p "$CC_SERVICES_DIR/run"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        say "creating a private PostgreSQL cluster in $data"
        as_pg_user "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 >/dev/null
    fi
    say "starting private PostgreSQL on 127.0.0.1:$CC_PRIVATE_PG_PORT"
    as_pg_user "$bindir/pg_ctl" -D "$data" -l "$CC_SERVICES_DIR/run/postgres.log" -w \
        -o "-p $CC_PRIVATE_PG_PORT -c listen_addresses=127.0.0.1 -k $CC_SERVICES_DIR/run -c max_connections=300" \
        start </dev/null >/dev/null 2>&1 || die "PostgreSQL did not start; see $CC_SERVICES_DIR/run/postgres.log"
}

# ensure_postgres: exports PG_SERVER_URL (no database name) for a reachable server.
ensure_postgres() {
    if [ -n "${PG_SERVER_URL:-}" ]; then
        return
    fi
    if [ "${CC_FORCE_PRIVATE_SERVICES:-0}" != 1 ] && reachable 127.0.0.1 5432; then
        PG_SERVER_URL="postgres://postgres@127.0.0.1:5432"
    else
        reachable 127.0.0.1 "$CC_PRIVATE_PG_PORT" || start_private_postgres
        PG_SERVER_URL="postgres://postgres@127.0.0.1:$CC_PRIVATE_PG_PORT"
    fi
    export PG_SERVER_URL
    say "PostgreSQL: $PG_SERVER_URL"
}

start_private_nats() {
    command -v nats-server >/dev/null || apt_install nats-server
    mkdir -p "$CC_SERVICES_DIR"
    say "starting private nats-server (JetStream) on 127.0.0.1:$CC_PRIVATE_NATS_PORT"
    # nats.conf keeps the JetStream store under the project's .data/ directory.
    # exec: no shell stays behind holding the caller's stdout (a pipe reader would
    # otherwise wait for it forever).
    (cd "$CC_ROOT" && exec nohup nats-server -c nats.conf -a 127.0.0.1 -p "$CC_PRIVATE_NATS_PORT" \
        -l "$CC_SERVICES_DIR/nats.log" -P "$CC_SERVICES_DIR/nats.pid" </dev/null >/dev/null 2>&1) &
    for _ in $(seq 50); do
        reachable 127.0.0.1 "$CC_PRIVATE_NATS_PORT" && return
        sleep 0.1
    done
    die "nats-server did not start; see $CC_SERVICES_DIR/nats.log"
}

# ensure_nats: exports NATS_URL for a reachable server.
ensure_nats() {
    if [ -n "${NATS_URL:-}" ]; then
        return
    fi
    if [ "${CC_FORCE_PRIVATE_SERVICES:-0}" != 1 ] && reachable 127.0.0.1 4222; then
        NATS_URL="nats://127.0.0.1:4222"
    else
        reachable 127.0.0.1 "$CC_PRIVATE_NATS_PORT" || start_private_nats
        NATS_URL="nats://127.0.0.1:$CC_PRIVATE_NATS_PORT"
    fi
    export NATS_URL
    say "NATS: $NATS_URL"
}

ensure_rust() {
    command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (https://rustup.rs)"
}

# ensure_web_tools: Node.js 20+ and npm, and web/node_modules as the lockfile says.
ensure_web_tools() {
    command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
    local node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] \
        || die "Node.js $(node --version) is too old for the dashboard's tools (playwright-core needs 20 or newer); install Node.js 20+"
    if [ ! -d "$CC_ROOT/web/node_modules" ] \
        || [ "$CC_ROOT/web/package-lock.json" -nt "$CC_ROOT/web/node_modules/.package-lock.json" ]; then
        say "installing the dashboard's npm packages (npm ci in web/)"
        (cd "$CC_ROOT/web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

# ensure_web: the dashboard's tools — Node.js and npm, web/node_modules as the lockfile
# says (`npm ci`, nothing fetched at run time), and Debian's Chromium for the browser
# tests (exported as CC_CHROMIUM). Installed with apt-get when missing and permitted.
ensure_web() {
    ensure_web_tools
    if [ -z "${CC_CHROMIUM:-}" ]; then
        command -v chromium >/dev/null || apt_install chromium
        CC_CHROMIUM="$(command -v chromium)"
    fi
    export CC_CHROMIUM
    say "Chromium: $CC_CHROMIUM"
}
