#!/usr/bin/env bash
# The journal's cost, SQLite next to PostgreSQL on loopback (issue 17), side by side:
#
# 1. In process (benches/journal.rs): recording one 10-host dispatch event by event (mean of
#    50 per round) and 1,000,000 output lines of one step (the per-step bound raised so every
#    line is stored), each backend in turn, ROUNDS rounds interleaved, medians.
# 2. Whole command: `dropship --dispatch` of a `protocol = local` rule on 10 hosts whose
#    upgrade prints 100,000 lines per host (1,000,000 in all; the journal stores the first
#    10,000 of each step, counts the rest), with --journal FILE and --journal URL in turn,
#    ROUNDS rounds interleaved, median wall time.
#
#   bash bench/journal.sh            # ROUNDS=3 (~5 min with the release build)
#
# Env: ROUNDS (3), DROPSHIP_BIN (else cargo build --release), KEEP=1. Needs root (the server
# runs as the `postgres` user) and Debian's postgresql package.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
# shellcheck source=bench/lib/pg.sh
. "$ROOT/bench/lib/pg.sh"
need_root

WORK=$(mktemp -d /tmp/dropship-journal-bench.XXXXXX)
PG_PID=
cleanup() {
    [ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null || true
    [ "$KEEP" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port above the test fixtures' range.
pg_up "$WORK"
PORT=$PG_PORT
psql_ -d postgres -c 'CREATE DATABASE inproc' -c 'CREATE DATABASE cli'

log "1. in process: cargo bench --bench journal"
(cd "$ROOT" && cargo bench --quiet --bench journal -- \
    "postgres://dropship@127.0.0.1:$PORT/inproc?sslmode=disable" "$ROUNDS")

if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    DROPSHIP=$ROOT/target/release/dropship
fi
export HOME=$WORK/home XDG_STATE_HOME=$WORK/state
mkdir -p "$HOME"
unset DROPSHIP_CONFIG NETRC SSH_AUTH_SOCK XDG_CONFIG_HOME DROPSHIP_JOURNAL
cat >"$WORK/dispatch.cfg" <<CFG
[app-.*\.tgz]
host = h0 h1 h2 h3 h4 h5 h6 h7 h8 h9
protocol = local
dest_dir = $WORK/dest/{host}
upgrade = seq 1 100000
CFG
echo bundle >"$WORK/app-1.0.tgz"
URL="postgres://dropship@127.0.0.1:$PORT/cli?sslmode=disable"
declare -a T_SQLITE T_PG
log "2. whole command: dropship --dispatch, 10 hosts x 100,000 lines, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
    for backend in sqlite postgres; do
        if [ $backend = sqlite ]; then J=$WORK/journal.sqlite; else J=$URL; fi
        t0=$(now)
        "$DROPSHIP" --config "$WORK/dispatch.cfg" --journal "$J" --dispatch "$WORK/app-1.0.tgz" \
            >"$WORK/out.txt"
        t=$(elapsed "$t0")
        lines=$(grep -c '^\[h[0-9]\] [0-9]' "$WORK/out.txt" || true)
        [ "$lines" = 1000000 ] || die "$backend round $r: $lines lines on stdout, not 1000000"
        log "round $r $backend: ${t}s"
        if [ $backend = sqlite ]; then T_SQLITE+=("$t"); else T_PG+=("$t"); fi
    done
done
ms=$(median "${T_SQLITE[@]}")
mp=$(median "${T_PG[@]}")
echo "whole command, median of $ROUNDS: sqlite ${ms}s  postgres ${mp}s  ratio $(ratio "$mp" "$ms")"
stored=$(psql_ -d cli -At -c "SELECT count(*) FROM output")
echo "postgres journal holds $stored output lines for $ROUNDS dispatches (10,000 per step stored)"
