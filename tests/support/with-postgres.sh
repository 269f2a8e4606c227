#!/usr/bin/env bash
# with-postgres.sh CMD ARGS... : run CMD with a throwaway PostgreSQL cluster (used by `make test`).
#
# The cluster listens on 127.0.0.1 (random free port) and lives in /tmp/jct-pg.XXXXXX; it is
# stopped and the dir removed on exit (also on INT/TERM). Exits with CMD's exit status.
# If TEST_DATABASE_URL is already set and non-empty, CMD is simply exec'd against that server.
# Exported for CMD:
#   TEST_DATABASE_URL  postgres://postgres@127.0.0.1:$TEST_PG_PORT/postgres (superuser, trust auth)
#   TEST_PG_PORT       the TCP port
#   TEST_PG_DATA       the data directory
#   TEST_PG_LOG        the server log file (pg_ctl -l)
#   TEST_PG_OPTS       the exact `pg_ctl -o` options the server was started with
#   TEST_PG_CTL        shell command prefix controlling this cluster, e.g.
#                      `runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/jct-pg.X/data`
#                      (as root) or `/path/to/pg_ctl -D /tmp/jct-pg.X/data` (otherwise).
#
# Restarting the server from a test (the word-splitting of TEST_PG_CTL is intended; paths and
# options never contain spaces inside a word or single quotes, so this quoting is safe):
#   sh -c "$TEST_PG_CTL -w -t 60 -l '$TEST_PG_LOG' -o '$TEST_PG_OPTS' restart -m fast"
# e.g. from Rust: Command::new("sh").arg("-c").arg(format!("{ctl} -w -t 60 -l '{log}' -o '{opts}' restart -m fast"))
#   with ctl/log/opts = the values of TEST_PG_CTL/TEST_PG_LOG/TEST_PG_OPTS.
# Stopping / starting works the same way (`... stop -m immediate`, `... -o '$TEST_PG_OPTS' start`).
set -euo pipefail

if [ $# -eq 0 ]; then echo "usage: $0 CMD [ARGS...]" >&2; exit 2; fi
if [ -n "${TEST_DATABASE_URL:-}" ]; then exec "$@"; fi

has_server() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }
find_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1 && d=$(pg_config --bindir 2>/dev/null) && has_server "$d"; then
        echo "$d"; return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do   # newest version first
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    if d=$(command -v initdb 2>/dev/null); then dirname "$d"; return 0; fi
    return 1
}

is_root=0; [ "$(id -u)" -eq 0 ] && is_root=1
if ! bindir=$(find_bindir); then
    if [ $is_root -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
        echo "with-postgres: PostgreSQL server not found; installing it with apt-get install postgresql" >&2
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
    fi
    if ! bindir=$(find_bindir); then
        echo "with-postgres: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with: apt-get install postgresql" >&2
        exit 1
    fi
fi

as_pg=()
if [ $is_root -eq 1 ]; then
    # PostgreSQL refuses to run as root: run the cluster as the `postgres` system user.
    if ! id -u postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --user-group postgres 2>/dev/null ||
            adduser --system --group --no-create-home postgres >/dev/null
    fi
    as_pg=(runuser -u postgres --)
fi

dir=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$dir" ]; then
        (cd / && "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -w -t 30 stop -m immediate) >/dev/null 2>&1 || true
        rm -rf "$dir"
    fi
    exit "$rc"
}
child=""
on_signal() {   # pass INT/TERM on to CMD, wait for it, then exit (which runs cleanup)
    if [ -n "$child" ]; then kill -"$1" "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
    exit "$2"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

dir=$(mktemp -d /tmp/jct-pg.XXXXXX)
chmod 755 "$dir"
if [ $is_root -eq 1 ]; then chown postgres: "$dir"; fi
cd_run() { (cd "$dir" && "${as_pg[@]}" "$@"); }   # run as the cluster owner from a dir it can read

if ! cd_run "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
    echo "with-postgres: initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }   # connects => something listens
pick_port() {   # random port in 20000-60000 that nothing listens on
    local p
    while :; do p=$((20000 + (RANDOM * 32768 + RANDOM) % 40001)); port_busy "$p" || { echo "$p"; return; }; done
}
log="$dir/postgres.log"
started=0
for _attempt in 1 2 3 4 5; do
    port=$(pick_port)
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB -c fsync=on -c synchronous_commit=on"
    if cd_run "$bindir/pg_ctl" -D "$dir/data" -l "$log" -w -t 60 start -o "$opts" >/dev/null 2>&1; then
        started=1; break
    fi
done
if [ $started -eq 0 ]; then
    echo "with-postgres: could not start PostgreSQL (5 attempts); tail of $log:" >&2
    tail -n 30 "$log" >&2 2>/dev/null || true
    exit 1
fi

ctl="$bindir/pg_ctl -D $dir/data"
if [ $is_root -eq 1 ]; then ctl="runuser -u postgres -- $ctl"; fi
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
export TEST_PG_PORT="$port" TEST_PG_DATA="$dir/data" TEST_PG_LOG="$log" TEST_PG_OPTS="$opts" TEST_PG_CTL="$ctl"

version=$("$bindir/postgres" --version 2>/dev/null | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p')
echo "with-postgres: PostgreSQL ${version:-?} on 127.0.0.1:$port (data in $dir)" >&2

# Run CMD in the background (keeping stdin and default SIGINT) so that signals reach our traps promptly.
( trap - INT QUIT; exec "$@" ) <&0 &
child=$!
status=0
wait "$child" || status=$?
child=""
exit "$status"
