#!/usr/bin/env bash
# Processes and SSH channels per host of one plain dispatch (#14, "fewer processes per
# host"): a 1 MiB bundle plus `sha256sum {path}` to N hosts (default 5) with dropship
# (sftp and scp; DROPSHIP_BEFORE=path adds another build, an A/B) and with pssh
# (parallel-scp + parallel-ssh), against one OpenSSH sshd in a private network namespace
# (bench/lib/sshns.sh, a home per address). Not a timing: the sshd is traced with
# `strace -f` (every fork and every exec of it and its children, so every remote process),
# which slows it; the counts are exact.
#
#   bash bench/procs.sh [N]
#
# Env: DROPSHIP_BIN (else target/release/dropship), DROPSHIP_BEFORE. Needs root, strace.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=bench/lib/sshns.sh
. "$HERE/lib/sshns.sh"

N=${1:-5}
need_root
command -v strace >/dev/null || die "missing strace (apt-get install strace)"
DROPSHIP=${DROPSHIP_BIN:-$REPO/target/release/dropship}
[ -x "$DROPSHIP" ] || die "no dropship binary at $DROPSHIP (cargo build --release, or DROPSHIP_BIN)"
NS=dropship-bench-procs-$$
BENCH_DIR=/tmp/dropship-bench-$$
SSHD_PID=
cleanup() {
    trap - EXIT INT TERM
    ns_down
    rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ns_reap_stale
mkdir -p "$BENCH_DIR"
apt_install pssh
PSCP=$(first_cmd parallel-scp pscp.pssh pscp) || die "no parallel-scp"
PSSH=$(first_cmd parallel-ssh pssh) || die "no parallel-ssh"
ns_up "$N"

hosts() { local i; for ((i = 2; i <= $1 + 1; i++)); do printf '127.0.0.%d ' "$i"; done; }
BUNDLE=$BENCH_DIR/fanout-1.0.tgz
head -c 1M /dev/urandom >"$BUNDLE"
DS=$BENCH_DIR/dropship
mkdir -p "$DS/home/.ssh" "$DS/state" "$DS/config"
cp "$KH" "$DS/home/.ssh/known_hosts"
SSH_OPTS="-F /dev/null -i $KEY -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$KH -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"

# traced LABEL CMD... -> runs CMD in the namespace while strace follows sshd; prints the
# processes (forks) and execs per host, and which programs were exec'd how often.
traced() {
    local label=$1 out=$BENCH_DIR/trace.$1
    shift
    strace -f -ff -qq -e trace=execve -e signal=none -o "$out" -p "$SSHD_PID" &
    local st=$!
    sleep 1
    "$@" >"$BENCH_DIR/out.$label" 2>&1 || log "$label: exit $? $(tail -3 "$BENCH_DIR/out.$label")"
    sleep 1
    kill "$st"
    wait "$st" 2>/dev/null || true
    # One file per process (-ff): every process sshd and its children made, but sshd's own
    # listener; a successful execve is a program started.
    local procs execs
    procs=$(find "$BENCH_DIR" -maxdepth 1 -name "trace.$label.*" ! -name "trace.$label.$SSHD_PID" | wc -l)
    cat "$BENCH_DIR/trace.$label".* | grep -E '^execve\(.*= 0$' >"$BENCH_DIR/execs.$label" || true
    execs=$(wc -l <"$BENCH_DIR/execs.$label")
    printf '| %-22s | %5d | %6.1f | %6.1f | %s |\n' "$label" "$N" "$(awk -v a="$procs" -v n="$N" 'BEGIN { print a / n }')" \
        "$(awk -v a="$execs" -v n="$N" 'BEGIN { print a / n }')" \
        "$(sed -n 's/^execve("\([^"]*\)".*/\1/p' "$BENCH_DIR/execs.$label" | sed 's#.*/##' | sort | uniq -c | sort -rn | awk -v n="$N" '{ printf "%s %.1f, ", $2, $1 / n }' | sed 's/, $//')"
}

dropship_cfg() {
    cat <<CFG
[fanout-.*\\.tgz]
protocol = $1
host = $(hosts "$N" | sed 's/ $//; s/ /, /g')
login = root
key = $KEY
dest_dir = $BENCH_DIR/dest/{host}
upgrade = sha256sum {path}
parallel = 100
timeout = 60s
CFG
}
ds() {
    ip netns exec "$NS" env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null \
        "$1" --config "$DS/$2.cfg" --journal "$DS/journal.sqlite" --dispatch "$BUNDLE"
}
for proto in sftp scp; do dropship_cfg "$proto" >"$DS/$proto.cfg"; done
hosts "$N" | tr ' ' '\n' | grep . >"$BENCH_DIR/hosts"

echo "Remote processes per host, one dispatch of a 1 MiB bundle + \`sha256sum {path}\` to $N hosts ($(date -u '+%Y-%m-%d %H:%M UTC'), dropship $(git -C "$REPO" rev-parse --short HEAD))"
echo
echo "| tool | hosts | processes / host | execs / host | programs exec'd / host |"
echo "|---|--:|--:|--:|---|"
for proto in sftp scp; do
    traced "dropship-$proto" ds "$DROPSHIP" "$proto"
    [ -z "${DROPSHIP_BEFORE:-}" ] || traced "before-$proto" ds "$DROPSHIP_BEFORE" "$proto"
done
traced pssh ip netns exec "$NS" bash -c "$PSCP -h $BENCH_DIR/hosts -l root -p 100 -t 120 -x '$SSH_OPTS' $BUNDLE fanout-1.0.tgz >/dev/null && $PSSH -h $BENCH_DIR/hosts -l root -p 100 -t 120 -x '$SSH_OPTS' -i 'sha256sum fanout-1.0.tgz' >/dev/null"
echo
echo "processes: forks by sshd and everything under it (its per-connection processes, login"
echo "shells, every command), per host; execs: programs started. Counted with strace -f on sshd."
