#!/usr/bin/env bash
# Jump-host fan-out (issue "Real fleets"): a 10 MiB bundle whose upgrade is
# `sha256sum {path}` to 20 hosts behind one bastion, side by side with the same 20 hosts
# reached directly, for dropship (sftp; through the bastion every host is a channel of ONE
# bastion connection, an OpenSSH control master) and for OpenSSH itself (`scp` + `ssh` per
# host, 20 at once; through the bastion with `-J`, one bastion connection per command, which
# is what pssh, Ansible and plain scripts do with ProxyJump).
#
# Hosts are 127.0.0.2 ... 127.0.0.(N+1) inside a private network namespace served by one
# sshd (bench/lib/sshns.sh); the bastion is the same sshd at 127.0.0.1, so the difference
# between the columns is what the route costs, not another machine. Every run is checked
# (exit 0, the right sha256 from every host). RUNS runs each, interleaved; medians.
#
# Usage: bench/jump.sh [--hosts 20] [--runs 5] [--mib 10]
# Env:   DROPSHIP_BIN=path  use this binary instead of `cargo build --release`'s.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=bench/lib/sshns.sh
. "$HERE/lib/sshns.sh"

N=20
RUNS=5
MIB=10
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) N=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --mib) MIB=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

need_root
NS=dropship-bench-jump-$$
BENCH_DIR=/tmp/dropship-bench-$$
SSHD_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ns_down
    rm -rf "$BENCH_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ns_reap_stale
mkdir -p "$BENCH_DIR"
apt_install openssh-server openssh-client

if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
    DROPSHIP=$REPO/target/release/dropship
fi
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')

log "namespace $NS, sshd for 127.0.0.1 (bastion) and 127.0.0.2 .. 127.0.0.$((N + 1))"
ns_up "$N"
hostkey=$(awk '{ print $1 " " $2 }' "$BENCH_DIR/ssh/host_key.pub")
echo "127.0.0.1 $hostkey" >>"$KH"
mkdir -p "$BENCH_DIR/home/127.0.0.1"

BUNDLE=$BENCH_DIR/jump-1.0.tgz
head -c "$((MIB << 20))" /dev/urandom >"$BUNDLE"
WANT=$(sha256sum "$BUNDLE" | cut -d' ' -f1)
HOSTS=()
for ((i = 2; i <= N + 1; i++)); do HOSTS+=("127.0.0.$i"); done

# dropship's HOME: ssh_config naming the bastion, known_hosts for every address.
DH=$BENCH_DIR/dhome
mkdir -p "$DH/.ssh"
cp "$KH" "$DH/.ssh/known_hosts"
cat >"$DH/.ssh/config" <<CONF
Host bastion
  HostName 127.0.0.1
Host *
  User root
  IdentityFile $KEY
  IdentitiesOnly yes
  UserKnownHostsFile $KH
  GlobalKnownHostsFile /dev/null
CONF
host_list=$(printf '%s, ' "${HOSTS[@]}")
for route in direct jump; do
    {
        echo "[jump-.*\\.tgz]"
        echo "protocol = sftp"
        echo "host = ${host_list%, }"
        echo "dest_dir = jump-dest"
        echo "upgrade = sha256sum {path}"
        echo "parallel = 100"
        echo "timeout = 60s"
        [ "$route" = jump ] && echo "jump = bastion"
    } >"$BENCH_DIR/dispatch-$route.cfg"
done

# check_out FILE -> every host printed the bundle's sha256 once.
check_out() {
    local got
    got=$(grep -c "$WANT" "$1" || true)
    [ "$got" = "$N" ] || { log "only $got/$N hosts reported the right sha256 ($1)"; return 1; }
}

run_dropship() { # ROUTE RUN
    local out=$BENCH_DIR/ds-$1-$2.out
    ns_exec env HOME="$DH" XDG_STATE_HOME="$DH/state" XDG_CONFIG_HOME="$DH/config" NETRC=/dev/null \
        "$DROPSHIP" --config "$BENCH_DIR/dispatch-$1.cfg" --dispatch "$BUNDLE" >"$out" 2>&1 ||
        { log "dropship $1 failed: $(tail -3 "$out")"; return 1; }
    check_out "$out"
}

run_openssh() { # ROUTE RUN
    local out=$BENCH_DIR/ossh-$1-$2.out j=
    [ "$1" = jump ] && j="-J bastion"
    # $2 is left unquoted on purpose: "-J bastion" is two words, or none.
    # shellcheck disable=SC2016 # expanded by the inner sh
    printf '%s\n' "${HOSTS[@]}" | ns_exec xargs -P "$N" -I{} sh -c \
        'scp -q -F "$0" $2 "$1" root@{}:jump-1.0.tgz && ssh -F "$0" $2 root@{} sha256sum jump-1.0.tgz' \
        "$DH/.ssh/config" "$BUNDLE" "$j" >"$out" 2>&1 ||
        { log "openssh $1 failed: $(tail -3 "$out")"; return 1; }
    check_out "$out"
}

declare -A T
for ((r = 1; r <= RUNS; r++)); do
    for c in dropship-direct dropship-jump openssh-direct openssh-jump; do
        t0=$(now)
        "run_${c%%-*}" "${c#*-}" "$r"
        T[$c]="${T[$c]:-} $(elapsed "$t0")"
    done
    log "run $r/$RUNS: $(for c in dropship-direct dropship-jump openssh-direct openssh-jump; do printf '%s %s  ' "$c" "${T[$c]##* }"; done)"
done

med() { median ${T[$1]}; }
echo
echo "### Jump hosts: $N hosts, ${MIB} MiB bundle + sha256sum, median of $RUNS (dropship $REV, $(date +%F))"
echo
echo "| route | dropship (sftp) | OpenSSH scp + ssh, $N at once | dropship / OpenSSH |"
echo "|---|---|---|---|"
for route in direct jump; do
    echo "| $route | $(med dropship-$route) s | $(med openssh-$route) s | $(ratio "$(med dropship-$route)" "$(med openssh-$route)") |"
done
echo
echo "Through the bastion / direct: dropship $(ratio "$(med dropship-jump)" "$(med dropship-direct)"), OpenSSH $(ratio "$(med openssh-jump)" "$(med openssh-direct)")."
