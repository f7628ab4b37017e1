#!/usr/bin/env bash
# Console benchmarks (issue 5, section 6), run on the real binary in a real terminal (tmux):
#   1. idle CPU: the console open on an idle config for IDLE seconds (goal < 0.5% of a core);
#   2. peak RSS while HOSTS hosts each stream LINES lines into the console at once
#      (`seq` as the upgrade command; goal < 64 MiB), with how long it took and how many
#      lines the UI shed (they are still in the journal);
#   3. idle CPU again afterwards, with the finished 100-host dispatch on screen.
# Frame time is a Rust bench: cargo bench --bench tui_render.
#
# Usage: bench/tui.sh [--idle 30] [--hosts 100] [--lines 100000] [--width 8]
#                     [--transport sftp|local] [--log-lines N] [--log-memory MIB]
#   --width W        each output line is a W-digit zero-padded number (seq -f %0Wg)
#   --transport T    sftp (default): hosts 127.0.0.2... served by one sshd in a private
#                    network namespace (bench/lib/sshns.sh, needs root); local: the `local`
#                    protocol, commands run here with `sh -c`
# Env:   DROPSHIP_BIN=path  use this binary instead of `cargo build --release`'s.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"

IDLE=30
HOSTS=100
LINES=100000
WIDTH=8
LOG_LINES=
LOG_MEMORY=
TRANSPORT=sftp
while [ $# -gt 0 ]; do
    case "$1" in
        --idle) IDLE=$2; shift 2 ;;
        --hosts) HOSTS=$2; shift 2 ;;
        --lines) LINES=$2; shift 2 ;;
        --width) WIDTH=$2; shift 2 ;;
        --log-lines) LOG_LINES=$2; shift 2 ;;
        --log-memory) LOG_MEMORY=$2; shift 2 ;;
        --transport) TRANSPORT=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
command -v tmux >/dev/null || die "tmux is needed"

if [ -z "${DROPSHIP_BIN:-}" ]; then
    log "building the release binary"
    (cd "$REPO" && cargo build --release -q)
    DROPSHIP_BIN=$REPO/target/release/dropship
fi

WORK=$(mktemp -d /tmp/dropship-bench-tui.XXXXXX)
SOCK=dropship-bench-tui-$$
NS=dropship-bench-tui-$$
BENCH_DIR=$WORK
RUN=()
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null || true
    [ "$TRANSPORT" = sftp ] && ns_down
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/state" "$WORK/dest" "$WORK/.ssh"

case "$TRANSPORT" in
    sftp)
        need_root
        # shellcheck source=bench/lib/sshns.sh
        . "$HERE/lib/sshns.sh"
        ns_reap_stale
        log "starting sshd for $HOSTS hosts in namespace $NS"
        ns_up "$HOSTS"
        cp "$KH" "$WORK/.ssh/known_hosts"
        hosts=$(for ((i = 2; i <= HOSTS + 1; i++)); do printf '127.0.0.%d, ' "$i"; done | sed 's/, $//')
        cat >"$WORK/dispatch.cfg" <<CFG
[app-.*\.tgz]
host = $hosts
protocol = sftp
login = root
key = $KEY
dest_dir = releases
parallel = $HOSTS
timeout = 60s
upgrade = seq -f %0${WIDTH}g 1 $LINES
CFG
        RUN=(ip netns exec "$NS")
        ;;
    local)
        hosts=$(seq -f 'h%03g' 1 "$HOSTS" | paste -sd, -)
        cat >"$WORK/dispatch.cfg" <<CFG
[app-.*\.tgz]
host = $hosts
protocol = local
dest_dir = $WORK/dest/{host}
lock_path = $WORK/dest/{host}.lock
parallel = $HOSTS
upgrade = seq -f %0${WIDTH}g 1 $LINES
CFG
        ;;
    *) die "--transport is sftp or local" ;;
esac
head -c 100000 /dev/urandom >"$WORK/app-1.0.tgz"

CLK=$(getconf CLK_TCK)
extra=()
[ -n "$LOG_LINES" ] && extra+=(--log-lines "$LOG_LINES")
[ -n "$LOG_MEMORY" ] && extra+=(--log-memory "$LOG_MEMORY")
# The tmux server (and so dropship) starts inside the namespace when there is one; the
# tmux commands below reach it through its socket file, from outside.
"${RUN[@]}" tmux -L "$SOCK" new-session -d -s b -x 160 -y 50 \
    "exec env HOME=$WORK XDG_STATE_HOME=$WORK/state XDG_CONFIG_HOME=$WORK/config $DROPSHIP_BIN --config $WORK/dispatch.cfg ${extra[*]}"
screen() { tmux -L "$SOCK" capture-pane -p -t b; }
wait_screen() { # wait_screen PATTERN SECONDS
    local end=$((SECONDS + $2))
    until screen | grep -q -- "$1"; do
        [ $SECONDS -lt $end ] || { screen >&2; die "screen never showed $1"; }
        sleep 0.2
    done
}
wait_screen "Dispatches 0" 20
PID=$(tmux -L "$SOCK" list-panes -t b -F '#{pane_pid}')
ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
# Context switches of the UI thread: how often it woke up.
wakeups() { awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/ { s += $2 } END { print s }' "/proc/$PID/task/$PID/status"; }

idle() { # idle LABEL
    sleep 2
    local t0 w0 t1 w1
    t0=$(ticks); w0=$(wakeups)
    sleep "$IDLE"
    t1=$(ticks); w1=$(wakeups)
    awk -v l="$1" -v t=$((t1 - t0)) -v hz="$CLK" -v s="$IDLE" -v w=$((w1 - w0)) 'BEGIN {
        printf "%-44s %6.3f%% of a core (%d ticks of 1/%d s in %d s), %d UI-thread wakeups\n",
               l, t / hz / s * 100, t, hz, s, w }'
}

echo "dropship console benchmarks  ($TRANSPORT, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $DROPSHIP_BIN)"
idle "idle CPU, fresh console, ${IDLE}s"

log "dispatching to $HOSTS hosts x $LINES lines (width $WIDTH)"
tmux -L "$SOCK" send-keys -t b ":" && tmux -L "$SOCK" send-keys -t b -l "dispatch $WORK/app-1.0.tgz"
tmux -L "$SOCK" send-keys -t b Enter
wait_screen "Dispatch?" 10
tmux -L "$SOCK" send-keys -t b Tab
start=$(now)
tmux -L "$SOCK" send-keys -t b Enter
wait_screen "dispatch #1 app-1.0.tgz: " 1800
screen | grep -q "$HOSTS/$HOSTS ok" || { screen >&2; die "the dispatch failed"; }
took=$(elapsed "$start")
rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$PID/status")
now_rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status")
shed=$(screen | grep -o '[0-9]* lines shed' | awk '{ print $1 }' || true)
total=$((HOSTS * LINES))
awk -v h="$HOSTS" -v n="$LINES" -v w="$WIDTH" -v t="$took" -v r="$rss" -v c="$now_rss" -v s="${shed:-0}" -v tot="$total" 'BEGIN {
    printf "%-44s %.1f MiB peak RSS (VmHWM), %.1f MiB after\n", sprintf("%d hosts x %d lines (%d B each)", h, n, w), r / 1024, c / 1024
    printf "%-44s %.1f s, %.0f lines/s, %d shed by the UI (%.2f%%)\n", "", t, tot / t, s, s / tot * 100 }'
idle "idle CPU after the dispatch, ${IDLE}s"
tmux -L "$SOCK" send-keys -t b q

# The same dispatch headless (plain output to /dev/null), for what the engine, transport
# and journal take on their own: the console's share is the difference.
log "the same dispatch headless"
rm -rf "$WORK/state"
start=$(now)
"${RUN[@]}" /usr/bin/time -f %M -o "$WORK/headless.rss" env HOME="$WORK" XDG_STATE_HOME="$WORK/state" \
    "$DROPSHIP_BIN" --config "$WORK/dispatch.cfg" --dispatch "$WORK/app-1.0.tgz" >/dev/null 2>"$WORK/headless.err" ||
    { tail -5 "$WORK/headless.err" >&2; die "headless dispatch failed"; }
took=$(elapsed "$start")
awk -v r="$(tail -1 "$WORK/headless.rss")" -v t="$took" -v tot="$total" 'BEGIN {
    printf "%-44s %.1f MiB peak RSS, %.1f s, %.0f lines/s\n", "same dispatch, headless --dispatch", r / 1024, t, tot / t }'

