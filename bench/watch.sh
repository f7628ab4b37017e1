#!/usr/bin/env bash
# Drop-folder latency (issue 6, section 6): time from a bundle being renamed into the
# watched folder to its upload starting, p50 / p99 / max over N bundles, for a `local` host
# (the watcher and journal alone) and an `sftp` host on a throwaway sshd (plus SSH connect
# and the remote lock).
#
#   bash bench/watch.sh              # N=200 per protocol (~3 min)
#   N=50 ONLY=local bash bench/watch.sh
#
# Env: N (200), ONLY (local|sftp|both), DROPSHIP_BIN (else cargo build --release), KEEP=1.
#
# How it is measured: a Python dropper writes each bundle under a hidden name, takes the
# wall clock (ms) right before os.rename() into the folder, and waits for the bundle to
# reach done/ before dropping the next one (so the number is the watcher's latency, not
# queueing behind earlier bundles). `dropship --watch --json` prints its events with `at`
# (epoch ms): the latency of a bundle is the `at` of the `step_started` event with
# `step == "upload"` of its dispatch (`bundle_dispatching` maps name -> dispatch) minus
# its rename time. Same clock, same machine.
set -euo pipefail

N=${N:-200}
ONLY=${ONLY:-both}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"

for c in python3 jq ssh-keygen; do command -v "$c" >/dev/null || die "missing $c"; done
if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    DROPSHIP=$ROOT/target/release/dropship
fi

WORK=$(mktemp -d /tmp/dropship-watch-bench.XXXXXX)
SSHD_PID=
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
    [ "$KEEP" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
export HOME=$WORK/home XDG_STATE_HOME=$WORK/state
mkdir -p "$HOME/.ssh" "$XDG_STATE_HOME"
unset DROPSHIP_CONFIG NETRC SSH_AUTH_SOCK XDG_CONFIG_HOME

start_sshd() {
    need_root
    [ -x /usr/sbin/sshd ] || die "missing /usr/sbin/sshd (apt-get install openssh-server)"
    mkdir -p /run/sshd "$WORK/sshd"
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/sshd/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
    cp "$WORK/client_key.pub" "$WORK/sshd/authorized_keys"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$WORK/sshd/config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/sshd/host_key
PidFile $WORK/sshd/pid
AuthorizedKeysFile $WORK/sshd/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin yes
PasswordAuthentication no
Subsystem sftp internal-sftp
MaxStartups 200:30:400
# Debian's bash sources ~/.bashrc for every command run over ssh; root's .bashrc on the dev
# machines runs pyenv init (~0.2 s a command). SHLVL=1 makes it skip that, as in
# bench/lib/sshns.sh: the machine's shell start-up is not dropship's latency.
SetEnv SHLVL=1
EOF
    /usr/sbin/sshd -D -e -f "$WORK/sshd/config" 2>"$WORK/sshd/log" &
    SSHD_PID=$!
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),1)" 2>/dev/null && break
        sleep 0.05
    done
    echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/sshd/host_key.pub")" > "$HOME/.ssh/known_hosts"
}

# run_one PROTO -> prints "PROTO p50 p99 max n"
run_one() {
    local proto=$1 dir=$WORK/drop-$1 dest=$WORK/dest-$1 host=lh creds=
    mkdir -p "$dir" "$dest"
    if [ "$proto" = sftp ]; then
        host=127.0.0.1:$PORT
        creds="login = root
key = $WORK/client_key"
    fi
    cat > "$WORK/$proto.cfg" <<EOF
[bench-.*\\.tgz]
host = $host
protocol = $proto
$creds
dest_dir = $dest
lock_path = $dest/.lock
upgrade = true
EOF
    "$DROPSHIP" --config "$WORK/$proto.cfg" --journal "$WORK/$proto.sqlite" --watch "$dir" --json \
        > "$WORK/$proto.events" 2> "$WORK/$proto.err" &
    local pid=$!
    for _ in $(seq 200); do grep -q watch_started "$WORK/$proto.events" && break; sleep 0.05; done
    grep -q watch_started "$WORK/$proto.events" || die "$proto: the watcher did not start: $(cat "$WORK/$proto.err")"
    python3 - "$dir" "$N" > "$WORK/$proto.renames" <<'PY'
import os, sys, time, glob
d, n = sys.argv[1], int(sys.argv[2])
payload = os.urandom(64 * 1024)
for i in range(n):
    name = f"bench-{i}.tgz"
    tmp = os.path.join(d, f".{name}.part")
    with open(tmp, "wb") as f:
        f.write(payload + str(i).encode())
    t = time.time_ns() // 1_000_000
    os.rename(tmp, os.path.join(d, name))
    print(name, t, flush=True)
    deadline = time.time() + 30
    while not glob.glob(os.path.join(d, ".dropship", "done", "*", name)):
        if time.time() > deadline:
            sys.exit(f"{name} not done after 30 s")
        time.sleep(0.005)
PY
    kill -INT "$pid"; wait "$pid" || true
    # name -> dispatch, dispatch -> first upload start
    jq -r 'select(.event=="bundle_dispatching") | "\(.name) \(.dispatch)"' "$WORK/$proto.events" > "$WORK/$proto.disp"
    jq -r 'select(.event=="step_started" and .step=="upload") | "\(.dispatch) \(.at)"' "$WORK/$proto.events" > "$WORK/$proto.up"
    awk '
        FILENAME ~ /renames$/ { ren[$1] = $2; next }
        FILENAME ~ /disp$/    { disp[$1] = $2; next }
        FILENAME ~ /up$/      { if (!($1 in up)) up[$1] = $2; next }
        END { for (name in ren) if ((name in disp) && (disp[name] in up)) print up[disp[name]] - ren[name] }
    ' "$WORK/$proto.renames" "$WORK/$proto.disp" "$WORK/$proto.up" | sort -n > "$WORK/$proto.lat"
    awk -v proto="$proto" '{ v[NR] = $1 }
        END {
            n = NR; if (n == 0) { printf "%-6s no samples\n", proto; exit }
            i50 = int(0.50 * n + 0.5); if (i50 < 1) i50 = 1
            i99 = int(0.99 * n + 0.5); if (i99 < 1) i99 = 1; if (i99 > n) i99 = n
            printf "%-6s %8d %8d %8d %6d\n", proto, v[i50], v[i99], v[n], n
        }' "$WORK/$proto.lat"
}

case $ONLY in local|sftp|both) ;; *) die "ONLY is local, sftp or both" ;; esac
[ "$ONLY" = local ] || start_sshd
log "N=$N bundles of 64 KiB per protocol, dropped one at a time"
printf '%-6s %8s %8s %8s %6s\n' proto p50_ms p99_ms max_ms n
[ "$ONLY" = sftp ] || run_one local
[ "$ONLY" = local ] || run_one sftp
