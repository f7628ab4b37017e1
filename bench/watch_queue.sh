#!/usr/bin/env bash
# Drop-folder throughput (issue 17, shared queue): N bundles already in the folder, time
# until the last one is in done/, for
#   sqlite   one `dropship --watch` on a SQLite journal (the single-user default)
#   pg-1     one `dropship --watch` on a PostgreSQL journal (the shared queue, one member)
#   pg-3     three `dropship --watch` on one PostgreSQL journal and the same folder
# side by side, ROUNDS rounds interleaved, median wall time and bundles/s. `protocol =
# local` hosts: the watcher, its journal and the queue alone, no network.
#
#   bash bench/watch_queue.sh          # N=200, ROUNDS=3
#
# Env: N (200), ROUNDS (3), MAXD (--max-dispatches, 4), DROPSHIP_BIN (else cargo build
# --release), KEEP=1. Needs root (the server runs as the `postgres` user) and Debian's
# postgresql package (distribution defaults: fsync on).
#
# How it is measured: the N bundles (4 KiB each, distinct) are renamed into the folder,
# then the watchers start; the clock runs from their start until done/ holds N files
# (polled every 50 ms), so watcher start-up and the initial scan are included.
set -euo pipefail

N=${N:-200}
ROUNDS=${ROUNDS:-3}
MAXD=${MAXD:-4}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
# shellcheck source=bench/lib/pg.sh
. "$ROOT/bench/lib/pg.sh"
need_root

if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    DROPSHIP=$ROOT/target/release/dropship
fi

WORK=$(mktemp -d /tmp/dropship-queue-bench.XXXXXX)
PG_PID=
WATCHERS=()
cleanup() {
    for p in "${WATCHERS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null || true
    [ "$KEEP" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

pg_up "$WORK"
PORT=$PG_PORT

export HOME=$WORK/home XDG_STATE_HOME=$WORK/state
mkdir -p "$HOME"
unset DROPSHIP_CONFIG NETRC SSH_AUTH_SOCK XDG_CONFIG_HOME DROPSHIP_JOURNAL
cat >"$WORK/dispatch.cfg" <<CFG
[app-.*\.tgz]
host = h1
protocol = local
dest_dir = $WORK/dest/{host}
lock_path = $WORK/locks/{bundle}
upgrade = true
CFG

# One run: fresh folder and journal, N bundles in, $2 watchers, prints the wall time (s).
run() {
    local kind=$1 count=$2 tag=$3 journal
    local drop=$WORK/drop-$tag
    rm -rf "$drop" "$WORK/dest" "$WORK/locks"
    mkdir -p "$drop" "$WORK/locks"
    python3 - "$drop" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    name = f"app-{i:04d}.tgz"
    tmp = os.path.join(d, "." + name + ".part")
    with open(tmp, "wb") as f:
        f.write(f"bundle {i}\n".encode() + os.urandom(4096))
    os.rename(tmp, os.path.join(d, name))
PY
    if [ "$kind" = sqlite ]; then
        journal=$WORK/journal-$tag.sqlite
    else
        psql_ -d postgres -c "CREATE DATABASE q_$tag" >/dev/null
        journal="postgres://dropship@127.0.0.1:$PORT/q_$tag?sslmode=disable"
    fi
    local start end
    start=$(date +%s.%N)
    WATCHERS=()
    for w in $(seq 1 "$count"); do
        "$DROPSHIP" --config "$WORK/dispatch.cfg" --journal "$journal" --watch "$drop" \
            --max-dispatches "$MAXD" --settle 200ms >"$WORK/out-$tag-$w" 2>&1 &
        WATCHERS+=($!)
    done
    while [ "$(find "$drop/.dropship/done" -type f 2>/dev/null | wc -l)" -lt "$N" ]; do
        sleep 0.05
    done
    end=$(date +%s.%N)
    for p in "${WATCHERS[@]}"; do kill -INT "$p"; done
    for p in "${WATCHERS[@]}"; do wait "$p" || die "watcher $p of $tag failed: $(cat "$WORK"/out-"$tag"-*)"; done
    WATCHERS=()
    # Exactly once, or the number means nothing.
    local shipped
    shipped=$(find "$WORK/dest/h1" -type f | wc -l)
    [ "$shipped" = "$N" ] || die "$tag: $shipped of $N shipped"
    python3 -c "print(f'{$end - $start:.3f}')"
}

declare -A T
for r in $(seq 1 "$ROUNDS"); do
    for setup in sqlite:1 pg:1 pg:3; do
        kind=${setup%:*} count=${setup#*:}
        tag="${kind}${count}_r$r"
        t=$(run "$kind" "$count" "$tag")
        log "round $r: $kind x$count: ${t}s for $N bundles"
        T[$kind$count]="${T[$kind$count]:-} $t"
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "N=$N bundles, --max-dispatches $MAXD, $ROUNDS rounds, medians (whole run, start-up included)"
printf '%-34s %10s %12s\n' "setup" "wall (s)" "bundles/s"
for k in sqlite1 pg1 pg3; do
    m=$(echo "${T[$k]}" | median)
    case $k in
    sqlite1) label="1 watcher, SQLite journal" ;;
    pg1) label="1 watcher, PostgreSQL queue" ;;
    pg3) label="3 watchers, one PostgreSQL queue" ;;
    esac
    printf '%-34s %10s %12s\n' "$label" "$m" "$(python3 -c "print(f'{$N / $m:.1f}')")"
done
