#!/usr/bin/env bash
# Ad-hoc run benchmark (issue 16): `uname -r` on 20 and on 100 hosts with
# `dropship --run`, `parallel-ssh -i` (pssh) and `clush -b` (clustershell), side by side in
# one run. Goal: dropship <= 0.5x pssh's wall time.
#
# Hosts are 127.0.0.2 ... 127.0.0.(N+1) inside a private network namespace served by one
# OpenSSH sshd (bench/lib/sshns.sh, the rig of bench/fanout.sh); every tool runs inside that
# namespace with the same key, known_hosts (strict checking) and parallelism 100. Every run
# is checked: exit status 0 and the kernel release printed once per host. Each measurement
# is RUNS runs (default 5), interleaved (dropship, pssh, clush, dropship, ...), median
# reported; the whole command's wall time.
#
# Usage: bench/run.sh [--hosts "20 100"] [--runs 5] [--tools "dropship pssh clush"] [--keep]
#        tool `dropship-shm`: dropship with its journal on /dev/shm (no fsync cost), to see
#        what the journal's durable commits cost.
# Env:   DROPSHIP_BIN=path  use this binary instead of `cargo build --release`'s.
# Needs root (network namespace, sshd); installs pssh, clustershell and time if missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=bench/lib/sshns.sh
. "$HERE/lib/sshns.sh"

HOST_COUNTS="20 100"
RUNS=5
KEEP=0
TOOLS="dropship pssh clush"
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) HOST_COUNTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --tools) TOOLS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

need_root
NS=dropship-bench-run-$$
BENCH_DIR=/tmp/dropship-bench-$$
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ns_down
    if [ "$KEEP" = 1 ]; then log "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ns_reap_stale
mkdir -p "$BENCH_DIR"

apt_install time openssh-server openssh-client pssh clustershell
PSSH=$(first_cmd parallel-ssh pssh) || die "no parallel-ssh"
CLUSH=$(first_cmd clush) || die "no clush"
if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
    DROPSHIP=$REPO/target/release/dropship
fi
"$DROPSHIP" --help | grep -q -- '--run' || die "$DROPSHIP has no --run"
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

MAX_HOSTS=1
for n in $HOST_COUNTS; do [ "$n" -gt "$MAX_HOSTS" ] && MAX_HOSTS=$n; done
log "namespace $NS, sshd for 127.0.0.2 .. 127.0.0.$((MAX_HOSTS + 1))"
ns_up "$MAX_HOSTS"
hosts() { local i; for ((i = 2; i <= $1 + 1; i++)); do printf '127.0.0.%d ' "$i"; done; }
SSH_ARGS=(-F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile="$KH"
    -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes)
SSH_OPTS="${SSH_ARGS[*]}"
KERNEL=$(uname -r)

DS=$BENCH_DIR/dropship
mkdir -p "$DS/home/.ssh" "$DS/state" "$DS/config"
cp "$KH" "$DS/home/.ssh/known_hosts"

declare -A TIMES=() CMDS=()
note_cmd() { [ -n "${CMDS[$1]:-}" ] || CMDS[$1]=$(printf '%q ' "${@:2}"); }

# check TOOL N FILE COUNT -> FILE names the kernel release COUNT times as expected.
check() {
    if [ "$4" != "$2" ]; then
        log "$1/$2: expected $2 hosts answering $KERNEL, saw $4 (see $3)"
        return 1
    fi
}

run_dropship-shm() { JOURNAL=/dev/shm/dropship-bench-$$.sqlite TAG=dropship-shm run_dropship "$@"; rm -f /dev/shm/dropship-bench-$$.sqlite*; }

run_dropship() {
    local n=$1 r=$2 dir=$DS/${TAG:-dropship}/$1 rc=0 t0 journal=${JOURNAL:-$DS/journal.sqlite}
    mkdir -p "$dir"
    cat >"$dir/dispatch.cfg" <<CFG
[bench-.*\\.tgz]
protocol = sftp
host = $(hosts "$n" | sed 's/ $//; s/ /, /g')
login = root
key = $KEY
parallel = 100
timeout = 60s
CFG
    local cmd=(env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null
        "$DROPSHIP" --config "$dir/dispatch.cfg" --journal "$journal" --run bench-1.tgz -- uname -r)
    note_cmd "${TAG:-dropship}/$n" ip netns exec "$NS" "${cmd[@]}"
    t0=$(now)
    ns_exec "${cmd[@]}" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
    SECS=$(elapsed "$t0")
    [ "$rc" = 0 ] || { log "dropship/$n run $r: exit $rc; $(tail -3 "$dir/err.$r" | tr '\n' ' ')"; SECS=FAIL; return; }
    # One grouped block of all N hosts ("HOSTS (N)", a rule, the line once), and N rows of
    # the closing table that succeeded.
    if ! grep -A2 "($n)\$" "$dir/out.$r" | grep -qx "$KERNEL"; then
        log "dropship/$n: no single block of $n hosts printing $KERNEL (see $dir/out.$r)"; SECS=FAIL; return
    fi
    check dropship "$n" "$dir/out.$r" "$(grep -c "^#.* succeeded " "$dir/out.$r")" || SECS=FAIL
}

run_pssh() {
    local n=$1 r=$2 dir=$BENCH_DIR/pssh/$1 rc=0 t0
    mkdir -p "$dir"
    hosts "$n" | tr ' ' '\n' | grep . >"$dir/hosts"
    local cmd=("$PSSH" -i -h "$dir/hosts" -l root -p 100 -t 60 -x "$SSH_OPTS" uname -r)
    note_cmd "pssh/$n" ip netns exec "$NS" "${cmd[@]}"
    t0=$(now)
    ns_exec "${cmd[@]}" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
    SECS=$(elapsed "$t0")
    [ "$rc" = 0 ] || { log "pssh/$n run $r: exit $rc"; SECS=FAIL; return; }
    check pssh "$n" "$dir/out.$r" "$(grep -cx "$KERNEL" "$dir/out.$r")" || SECS=FAIL
}

run_clush() {
    local n=$1 r=$2 dir=$BENCH_DIR/clush/$1 rc=0 t0
    mkdir -p "$dir"
    local nodes
    nodes=$(hosts "$n" | sed 's/ $//; s/ /,/g')
    local cmd=("$CLUSH" -b -w "$nodes" -l root -f 100 -t 60 -o "$SSH_OPTS" uname -r)
    note_cmd "clush/$n" ip netns exec "$NS" "$CLUSH" -b -w "127.0.0.[2-$((n + 1))]" -l root -f 100 -t 60 -o "$SSH_OPTS" uname -r
    t0=$(now)
    ns_exec env HOME="$dir" "${cmd[@]}" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
    SECS=$(elapsed "$t0")
    [ "$rc" = 0 ] || { log "clush/$n run $r: exit $rc; $(tail -3 "$dir/err.$r" | tr '\n' ' ')"; SECS=FAIL; return; }
    # One block: the folded host set with its count, then the line once.
    if grep -qx "$KERNEL" "$dir/out.$r" && grep -q "($n)" "$dir/out.$r"; then :; else
        log "clush/$n: output not one block of $n hosts (see $dir/out.$r)"; SECS=FAIL
    fi
}

for n in $HOST_COUNTS; do
    for ((r = 1; r <= RUNS; r++)); do
        for tool in $TOOLS; do
            "run_$tool" "$n" "$r"
            log "$tool/$n run $r: $SECS s"
            TIMES[$tool/$n]="${TIMES[$tool/$n]:-} $SECS"
        done
    done
done

printf '\n## Ad-hoc run: `uname -r` on N hosts (bench/run.sh, rev %s, %s runs, median wall s)\n\n' "$REV" "$RUNS"
printf 'load average before: %s (machine shared with other work)\n\n' "$LOAD0"
printf '| hosts | dropship --run | parallel-ssh -i | clush -b | dropship / pssh | dropship / clush |\n|---|---|---|---|---|---|\n'
for n in $HOST_COUNTS; do
    # shellcheck disable=SC2086
    d=$(median ${TIMES[dropship/$n]:-}); p=$(median ${TIMES[pssh/$n]:-}); c=$(median ${TIMES[clush/$n]:-})
    case " ${TIMES[dropship/$n]:-} ${TIMES[pssh/$n]:-} ${TIMES[clush/$n]:-} " in *FAIL*) log "a run failed for $n hosts" ;; esac
    printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "$d" "$p" "$c" "$(ratio "$d" "$p")" "$(ratio "$d" "$c")"
done
printf '\nAll runs (s):\n'
for k in "${!TIMES[@]}"; do printf '  %-14s %s\n' "$k" "${TIMES[$k]}"; done | sort
printf '\nCommands (largest host count):\n'
for k in "${!CMDS[@]}"; do printf '  %s: %s\n' "$k" "${CMDS[$k]}"; done | sort
