# shellcheck shell=bash
# A throwaway PostgreSQL server for the journal benchmarks: Debian's `postgresql` package with
# its distribution defaults, run as the `postgres` user on 127.0.0.1, trusting loopback, with
# its data, socket and log under DIR. Needs bench/lib/common.sh (log, die) and root.
#
#   pg_up DIR [PORT [WRAP...]]   start it (PORT: a free one if empty; WRAP runs the server,
#                                pg_isready and psql_, e.g. `ns_exec` for a bench namespace)
#   psql_ ARGS...                psql as the `dropship` role
#
# Sets PG_BIN, PG_PORT and PG_PID; the caller kills $PG_PID on exit (or its namespace does).

PG_WRAP=()

pg_up() {
    local dir=$1 port=${2:-}
    shift $(($# < 2 ? $# : 2))
    PG_WRAP=("$@")
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL server (apt-get install postgresql)"
    [ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PG_PORT=$port
    mkdir -p "$dir/pg"
    chown postgres: "$dir/pg"
    chmod 755 "$dir"
    log "initdb + postgres on 127.0.0.1:$PG_PORT ($PG_BIN, distribution defaults, trust on loopback)"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/pg/data" -U dropship --auth=trust -E UTF8 \
        --locale=C.UTF-8 >"$dir/initdb.log"
    "${PG_WRAP[@]}" runuser -u postgres -- "$PG_BIN/postgres" -D "$dir/pg/data" -p "$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir/pg" >"$dir/pg.log" 2>&1 &
    PG_PID=$!
    local _
    for _ in $(seq 1 100); do
        "${PG_WRAP[@]}" "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q && return 0
        sleep 0.1
    done
    die "PostgreSQL did not start: $(tail -3 "$dir/pg.log")"
}

psql_() { "${PG_WRAP[@]}" "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U dropship "$@"; }
