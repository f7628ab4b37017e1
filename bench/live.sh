#!/usr/bin/env bash
# Everyone's dispatches, live (issue 17): how long another process's output and dispatches
# take to reach the console, and what following costs an idle console. SQLite next to
# PostgreSQL on loopback, side by side.
#
# 1. Latency (benches/live.rs): a follower process (the console's follower) and a writer
#    process on one journal, ROUNDS rounds, each backend in turn: from a line's commit to
#    its delivery as an event (`commit`), from a dispatch's begin to its delivery
#    (`dispatch`), and from a line's emission through a session (the engine's path: 1 s
#    flusher) to its delivery (`emit`). p50/p99 per round, medians over rounds.
# 2. Idle cost: the real console (tmux) open on each journal for IDLE seconds, nothing
#    running anywhere: CPU of the whole process (follower included) and wakeups of the UI
#    thread (the follower must not wake it when nothing changed).
#
#   bash bench/live.sh            # ROUNDS=3 LINES=150 IDLE=30 (~6 min with the release build)
#
# Env: ROUNDS, LINES, IDLE, DROPSHIP_BIN (else cargo build --release), KEEP=1. Needs root
# (the server runs as the `postgres` user), tmux and Debian's postgresql package.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
LINES=${LINES:-150}
IDLE=${IDLE:-30}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
# shellcheck source=bench/lib/pg.sh
. "$ROOT/bench/lib/pg.sh"
need_root

WORK=$(mktemp -d /tmp/dropship-live-bench.XXXXXX)
PG_PID=
SOCK=dropship-live-bench-$$
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null || true
    [ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null || true
    [ "$KEEP" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

pg_up "$WORK"
PORT=$PG_PORT
psql_ -d postgres -c 'CREATE DATABASE latency' -c 'CREATE DATABASE idle'

echo "dropship live view benchmarks ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ))"
log "1. latency: cargo bench --bench live"
(cd "$ROOT" && cargo bench --quiet --bench live -- \
    "$WORK/latency.sqlite" "postgres://dropship@127.0.0.1:$PORT/latency?sslmode=disable" \
    "$ROUNDS" "$LINES")

if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    DROPSHIP=$ROOT/target/release/dropship
fi
log "2. idle console, ${IDLE}s per backend"
cat >"$WORK/dispatch.cfg" <<CFG
[app-.*\.tgz]
host = h1, h2
protocol = local
dest_dir = $WORK/dest/{host}
upgrade = true
CFG
CLK=$(getconf CLK_TCK)
for backend in sqlite postgres; do
    if [ $backend = sqlite ]; then J=$WORK/idle.sqlite; else J="postgres://dropship@127.0.0.1:$PORT/idle?sslmode=disable"; fi
    tmux -L "$SOCK" new-session -d -s $backend -x 160 -y 50 \
        "exec env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK HOME=$WORK XDG_STATE_HOME=$WORK/state XDG_CONFIG_HOME=$WORK/config $DROPSHIP --config $WORK/dispatch.cfg --journal '$J'"
    end=$((SECONDS + 20))
    until tmux -L "$SOCK" capture-pane -p -t $backend | grep -q "Dispatches 0"; do
        [ $SECONDS -lt $end ] || die "the console never came up on $backend"
        sleep 0.2
    done
    PID=$(tmux -L "$SOCK" list-panes -t $backend -F '#{pane_pid}')
    sleep 3
    t0=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    w0=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$PID/task/$PID/status")
    sleep "$IDLE"
    t1=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    w1=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$PID/task/$PID/status")
    awk -v b="$backend" -v t=$((t1 - t0)) -v hz="$CLK" -v s="$IDLE" -v w=$((w1 - w0)) 'BEGIN {
        printf "idle console on %-8s %6.3f%% of a core (%d ticks of 1/%d s in %d s), %d UI-thread wakeups\n",
               b, t / hz / s * 100, t, hz, s, w }'
    tmux -L "$SOCK" send-keys -t $backend q
done
