#!/usr/bin/env bash
# Upload benchmark (issue 3, section 7): the real `dropship --dispatch` uploading a 1 GiB
# bundle over loopback, side by side in one run with OpenSSH scp/sftp (default cipher and
# aes128-gcm) and curl -T (FTP and FTPS), against the same throwaway sshd and vsftpd.
#
#   bash bench/upload.sh                       # 3 interleaved rounds, 1 GiB (~5-12 min)
#   RUNS=1 SIZE=64M bash bench/upload.sh       # quick smoke run
#   ONLY='ftp' bash bench/upload.sh            # regex on the tool labels
#
# Env: RUNS (3), SIZE (1G, any `head -c` size), ONLY (.), VERIFY (round1 | all: full
# SHA-256 of every upload, not just round 1's), DROPSHIP_BIN (else `cargo build --release`
# and target/release/dropship), DROPSHIP_BEFORE (another build, run beside it as
# "dropship-before": an A/B in the same rounds), KEEP=1 (keep the work dir for inspection), WAIT_QUIET=N
# (before each run wait up to N s for the rest of the machine to use < 0.5 core; default 0).
#
# Rounds are interleaved (every tool once per round, baseline first) so all tools see the
# same background load; the table shows medians over the rounds and, per tool, the median
# of the *paired* ratio (tool / baseline measured in the same round). Baselines: OpenSSH
# `scp` with its default cipher for SCP/SFTP, `curl -T` for FTP, `curl --ssl-reqd -T` for
# FTPS. MB/s = 10^6 bytes per second.
#
# dropship gets two rows per protocol: the whole `dropship --dispatch` command (process
# start to exit: local SHA-256 of the bundle, connect, remote lock, upload, size check,
# SHA-256 on the host (scp/sftp), rename, unlock, journal) and its transfer phase alone, from its
# --json events: `transfer` "started" -> last "progress" (`at`, epoch ms). A breakdown of
# dropship's time by phase follows the table.
#
# On a shared machine wall-clock throughput swings several-fold with other people's work, so
# each run also records CPU seconds per GiB of the client command and of the server's
# session processes (cgroup v1 cpuacct, for dropship also for the transfer phase alone),
# which other load hardly changes, and how many cores the rest of the machine kept busy.
#
# Servers (root): sshd with its own host key and authorized key on a free 127.0.0.1 port
# (LogLevel DEBUG1, only to read the negotiated cipher of every connection); vsftpd with
# plain FTP and explicit FTPS (self-signed cert, vsftpd's default require_ssl_reuse=YES:
# dropship resumes the TLS session on data connections, as curl does) for a throwaway local user. Everything, including the 1 GiB files and
# the user, is removed on exit.
set -euo pipefail

RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
ONLY=${ONLY:-.}
VERIFY=${VERIFY:-round1}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[upload %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sshd root login, vsftpd, a throwaway FTP user)"
for c in /usr/sbin/sshd /usr/sbin/vsftpd scp sftp ssh-keygen curl openssl jq sha256sum ss useradd; do
    command -v "$c" >/dev/null || die "missing $c (apt-get install openssh-server openssh-client vsftpd curl openssl jq iproute2)"
done

if [ -n "${DROPSHIP_BIN:-}" ]; then
    DROPSHIP=$DROPSHIP_BIN
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    DROPSHIP=$ROOT/target/release/dropship
fi
[ -x "$DROPSHIP" ] || die "no dropship binary at $DROPSHIP"

W=$(mktemp -d /tmp/dropship-upload.XXXXXX)
chmod 755 "$W" # the FTP user walks through it to its home
FTPUSER=dsup$$
FTPPASS=pw$$-$RANDOM
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if id "$FTPUSER" >/dev/null 2>&1; then userdel "$FTPUSER" 2>/dev/null || true; fi
    cg_down
    if [ "$KEEP" = 1 ]; then
        rm -f "$W"/src/*.tgz "$W"/dst-ssh/* "$W"/ftp/dst/* 2>/dev/null || true
        log "kept $W (without the big files)"
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 (nothing listening on it now).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
}
wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1: $(cat "$W"/*.log 2>/dev/null | tail -5)"
}
ms() { date +%s%3N; }
# ratio A B -> A/B (3 decimals), or nothing when B is unknown.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.3f", a / b }'; }

# CPU accounting (cgroup v1 cpuacct, where available): the servers (and every session
# process they fork) in one group, each measured client command in another, so each run's
# CPU seconds per GiB, client and server, are known however loaded the machine is.
CG=
if [ -w /sys/fs/cgroup/cpuacct ] && [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
    CG=/sys/fs/cgroup/cpuacct/dropship-upload-$$
    mkdir -p "$CG/srv" "$CG/cli" || CG=
fi
# Servers start with `sh -c "$CG_EXEC" DIR CMD... &`: sh joins the group and execs CMD, so
# $! is the server's own pid (never wrap this in a function: $! would be a subshell).
# shellcheck disable=SC2016 # expanded by that sh
CG_EXEC='[ -z "$0" ] || echo $$ >"$0/cgroup.procs" && exec "$@"'
cg_cpu() { if [ -n "$CG" ]; then cat "$CG/$1/cpuacct.usage"; else echo 0; fi; }
cg_down() {
    [ -n "$CG" ] && [ -d "$CG" ] || return 0
    local i
    for ((i = 0; i < 50; i++)); do
        rmdir "$CG/srv" "$CG/cli" "$CG" 2>/dev/null && return 0
        sleep 0.1
    done
    log "could not remove $CG"
}

BUNDLE=big-1.0.tgz
mkdir -p "$W/src" "$W/dst-ssh" "$W/ftp/dst" "$W/empty" "$W/home/.ssh" "$W/state" "$W/config" "$W/locks"
log "writing $SIZE of random data to $W/src/$BUNDLE"
head -c "$SIZE" /dev/urandom >"$W/src/$BUNDLE"
SRC=$W/src/$BUNDLE
BYTES=$(stat -c %s "$SRC")
SRC_SHA=$(sha256sum "$SRC" | awk '{ print $1 }')

# --- sshd --------------------------------------------------------------------------------
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -C dropship-upload-host -f "$W/hostkey"
ssh-keygen -q -t ed25519 -N '' -C dropship-upload-client -f "$W/key"
cp "$W/key.pub" "$W/authorized_keys"
SSH_PORT=$(free_port)
# SetEnv SHLVL=1: Debian's bash reads ~/.bashrc for every command sshd runs; root's here
# runs `pyenv init` (~0.2 s of CPU) which would be charged to dropship's remote commands
# (lock, sha256sum) and is no property of any tool measured (see bench/lib/sshns.sh).
cat >"$W/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $W/hostkey
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UseDNS no
Subsystem sftp internal-sftp
MaxStartups 200:30:400
SetEnv SHLVL=1
LogLevel DEBUG1
EOF
sh -c "$CG_EXEC" "${CG:+$CG/srv}" /usr/sbin/sshd -D -e -f "$W/sshd_config" 2>"$W/sshd.log" &
PIDS+=($!)

# --- vsftpd: plain FTP and explicit FTPS on one instance ---------------------------------
useradd -M -d "$W/ftp" -s /bin/bash "$FTPUSER"
usermod -p "$(openssl passwd -6 "$FTPPASS")" "$FTPUSER"
chown -R "$FTPUSER" "$W/ftp"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$W/ftp.key" -out "$W/ftp.crt" 2>/dev/null
FTP_PORT=$(free_port)
PASV=$((40000 + RANDOM % 20000))
cat >"$W/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$FTP_PORT
background=NO
local_enable=YES
write_enable=YES
local_umask=022
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$PASV
pasv_max_port=$((PASV + 50))
seccomp_sandbox=NO
secure_chroot_dir=$W/empty
xferlog_enable=NO
ssl_enable=YES
rsa_cert_file=$W/ftp.crt
rsa_private_key_file=$W/ftp.key
force_local_logins_ssl=NO
force_local_data_ssl=NO
EOF
sh -c "$CG_EXEC" "${CG:+$CG/srv}" /usr/sbin/vsftpd "$W/vsftpd.conf" 2>"$W/vsftpd.log" &
PIDS+=($!)
wait_port "$SSH_PORT"
wait_port "$FTP_PORT"

# --- dropship: isolated HOME / XDG dirs, one dispatch.cfg per protocol --------------------
echo "[127.0.0.1]:$SSH_PORT $(awk '{ print $1 " " $2 }' "$W/hostkey.pub")" >"$W/home/.ssh/known_hosts"
for proto in scp sftp ftp ftps; do
    {
        echo '[big-.*\.tgz]'
        case $proto in
            scp | sftp)
                echo "host = 127.0.0.1:$SSH_PORT"
                echo "protocol = $proto"
                echo "login = root"
                echo "key = $W/key"
                echo "dest_dir = $W/dst-ssh"
                echo "lock_path = $W/locks/dropship.lock"
                ;;
            ftp | ftps)
                echo "host = 127.0.0.1:$FTP_PORT"
                echo "protocol = $proto"
                echo "login = $FTPUSER"
                echo "password = $FTPPASS"
                echo "dest_dir = $W/ftp/dst"
                if [ "$proto" = ftps ]; then echo "tls_ca = $W/ftp.crt"; fi
                ;;
        esac
        echo "retries = 0"
    } >"$W/dispatch-$proto.cfg"
done
chmod 600 "$W"/dispatch-*.cfg
dropship() {
    env -i PATH="$PATH" HOME="$W/home" XDG_STATE_HOME="$W/state" XDG_CONFIG_HOME="$W/config" \
        "$DROPSHIP" --config "$W/dispatch-$1.cfg" --journal "$W/journal.sqlite" --json \
        --dispatch "$SRC"
}
# DROPSHIP_BEFORE=path: the same dispatch with another build (an A/B in the same rounds).
dropship_before() {
    env -i PATH="$PATH" HOME="$W/home" XDG_STATE_HOME="$W/state" XDG_CONFIG_HOME="$W/config" \
        "$DROPSHIP_BEFORE" --config "$W/dispatch-$1.cfg" --journal "$W/journal.sqlite" --json \
        --dispatch "$SRC"
}
# The first dispatch of a bundle: no remembered digest (see src/transport/digest.rs).
cold() { rm -f "$W/state/dropship/bundle-digests"; }

SSHO=(-q -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes
    -o UserKnownHostsFile="$W/home/.ssh/known_hosts" -o GlobalKnownHostsFile=/dev/null
    -o IdentitiesOnly=yes -i "$W/key")
GCM=aes128-gcm@openssh.com
FTPURL="ftp://$FTPUSER:$FTPPASS@127.0.0.1:$FTP_PORT/dst/$BUNDLE" # home = $W/ftp

# Baseline and goal of each group of tools.
declare -A BASE_LABEL=([ssh]="scp (default cipher)" [ftp]="curl -T ftp" [ftps]="curl --ssl-reqd -T ftps")
declare -A BASE_NAME=([ssh]="scp default" [ftp]="curl ftp" [ftps]="curl ftps")
declare -A GOAL=([ssh]=1.0 [ftp]=0.9 [ftps]=0.9)
# label | group | destination file | command (the group's baseline runs first in a round)
TOOLS=(
    "scp (default cipher)|ssh|$W/dst-ssh/$BUNDLE|scp ${SSHO[*]} -P $SSH_PORT $SRC root@127.0.0.1:$W/dst-ssh/$BUNDLE"
    "scp -c aes128-gcm|ssh|$W/dst-ssh/$BUNDLE|scp ${SSHO[*]} -P $SSH_PORT -c $GCM $SRC root@127.0.0.1:$W/dst-ssh/$BUNDLE"
    "sftp (default cipher)|ssh|$W/dst-ssh/$BUNDLE|echo 'put $SRC $W/dst-ssh/$BUNDLE' | sftp ${SSHO[*]} -P $SSH_PORT -b - root@127.0.0.1"
    "sftp -c aes128-gcm|ssh|$W/dst-ssh/$BUNDLE|echo 'put $SRC $W/dst-ssh/$BUNDLE' | sftp ${SSHO[*]} -P $SSH_PORT -c $GCM -b - root@127.0.0.1"
    "dropship scp|ssh|$W/dst-ssh/$BUNDLE|dropship scp"
    "dropship scp, first dispatch|ssh|$W/dst-ssh/$BUNDLE|cold; dropship scp"
    "dropship-before scp|ssh|$W/dst-ssh/$BUNDLE|dropship_before scp"
    "dropship sftp|ssh|$W/dst-ssh/$BUNDLE|dropship sftp"
    "dropship sftp, first dispatch|ssh|$W/dst-ssh/$BUNDLE|cold; dropship sftp"
    "dropship-before sftp|ssh|$W/dst-ssh/$BUNDLE|dropship_before sftp"
    "curl -T ftp|ftp|$W/ftp/dst/$BUNDLE|curl -sS -T $SRC $FTPURL"
    "dropship ftp|ftp|$W/ftp/dst/$BUNDLE|dropship ftp"
    "dropship ftp, first dispatch|ftp|$W/ftp/dst/$BUNDLE|cold; dropship ftp"
    "dropship-before ftp|ftp|$W/ftp/dst/$BUNDLE|dropship_before ftp"
    "curl --ssl-reqd -T ftps|ftps|$W/ftp/dst/$BUNDLE|curl -sS --ssl-reqd -k -T $SRC $FTPURL"
    "dropship ftps|ftps|$W/ftp/dst/$BUNDLE|dropship ftps"
)

{
    echo "# FTPS: what vsftpd negotiates with an OpenSSL client:"
    echo QUIT | timeout 5 openssl s_client -connect "127.0.0.1:$FTP_PORT" -starttls ftp 2>/dev/null |
        grep -E '^(New|    Protocol|    Cipher)' | sed 's/^/#   /' || true
} >&2

# jq program: dropship's phases (epoch ms) from its --json events.
PHASES='
  def at(f): [ .[] | select(f) | .at ];
  { dispatch: (at(.event == "dispatch_started") | first),
    attempts: (at(.event == "transfer" and .transfer.kind == "started") | length),
    started:  (at(.event == "transfer" and .transfer.kind == "started") | last),
    last:     (at(.event == "transfer" and .transfer.kind == "progress") | last),
    verified: (at(.event == "transfer" and .transfer.kind == "verified") | last),
    ok:       ([ .[] | select(.event == "dispatch_finished") | .succeeded ] | last) }
  | "\(.dispatch) \(.attempts) \(.started) \(.last) \(.verified) \(.ok)"'

# Reads dropship's --json lines, keeps them in $W/out, and notes the CPU counters of both
# groups when the transfer starts and at every progress event (the last one ends the
# transfer phase), so the transfer phase gets its own CPU seconds. Runs in this shell's
# cgroup, not in the measured ones.
cpu_marks() {
    local line c0='' s0='' c1='' s1=''
    : >"$W/out"
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$W/out"
        [ -n "$CG" ] || continue
        case $line in
            *'"event":"transfer"'*'"kind":"started"'*)
                read -r c0 <"$CG/cli/cpuacct.usage"
                read -r s0 <"$CG/srv/cpuacct.usage"
                ;;
            *'"event":"transfer"'*'"kind":"progress"'*)
                read -r c1 <"$CG/cli/cpuacct.usage"
                read -r s1 <"$CG/srv/cpuacct.usage"
                ;;
        esac
    done
    echo "${c0:-0} ${s0:-0} ${c1:-0} ${s1:-0}" >"$W/marks"
}
# Busy CPU of the whole machine so far, in ns (user nice system irq softirq steal).
busy_ns() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1e9 / hz }' /proc/stat
}
# per_gib NS -> CPU seconds per GiB moved.
per_gib() { awk -v n="$1" -v b="$BYTES" 'BEGIN { printf "%.2f", n / 1e9 * 1073741824 / b }'; }
# Waits up to WAIT_QUIET seconds until the machine (nothing of ours runs now) has been
# below half a core busy for half a second.
wait_quiet() {
    local end=$((SECONDS + ${WAIT_QUIET:-0})) a b
    while ((SECONDS < end)); do
        a=$(busy_ns)
        sleep 0.5
        b=$(busy_ns)
        (((b - a) < 250000000)) && return 0
    done
    return 0
}

declare -A MBS PAIR NEG GROUP CPU_C CPU_S OTHER PH_START PH_CONN PH_XFER PH_VER PH_POST
ORDER=()
START_ALL=$(ms)
for round in $(seq "$RUNS"); do
    declare -A BASE=()
    log "round $round/$RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    for t in "${TOOLS[@]}"; do
        IFS='|' read -r label group dst cmd <<<"$t"
        [[ $label =~ $ONLY ]] || continue
        [[ $label != dropship-before* ]] || [ -n "${DROPSHIP_BEFORE:-}" ] || continue
        drop=0
        [[ $label != dropship* ]] || drop=1
        rm -f "$dst" "$(dirname "$dst")/.$(basename "$dst").part"
        wait_quiet
        sshlog0=$(wc -l <"$W/sshd.log")
        c0=$(cg_cpu cli)
        s0=$(cg_cpu srv)
        b0=$(busy_ns)
        t0=$(ms)
        if [ "$drop" = 1 ]; then
            if ! (
                [ -z "$CG" ] || echo "$BASHPID" >"$CG/cli/cgroup.procs"
                eval "$cmd"
            ) 2>"$W/err" | cpu_marks; then
                die "$label failed: $(tail -5 "$W/err") $(grep -h '"error"' "$W/out" | tail -3)"
            fi
        elif ! (
            [ -z "$CG" ] || echo "$BASHPID" >"$CG/cli/cgroup.procs"
            eval "$cmd"
        ) >"$W/out" 2>"$W/err"; then
            die "$label failed: $(tail -5 "$W/err")"
        fi
        t1=$(ms)
        b1=$(busy_ns)
        sleep 0.2 # the server's session processes finish
        cpu_c=$(per_gib $(($(cg_cpu cli) - c0)))
        cpu_s=$(per_gib $(($(cg_cpu srv) - s0)))
        wall=$((t1 - t0))
        # Cores kept busy by everything else on the machine while this ran.
        other=-
        if [ -n "$CG" ]; then
            other=$(awk -v b="$((b1 - b0))" -v c="$(($(cg_cpu cli) - c0 + $(cg_cpu srv) - s0))" -v w="$wall" \
                'BEGIN { o = (b - c) / (w * 1e6); printf "%.1f", o < 0 ? 0 : o }')
        fi
        got=$(stat -c %s "$dst" 2>/dev/null || echo missing)
        [ "$got" = "$BYTES" ] || die "$label: $dst has size $got, expected $BYTES"
        if [ "$round" = 1 ] || [ "$VERIFY" = all ]; then
            sum=$(sha256sum "$dst" | awk '{ print $1 }')
            [ "$sum" = "$SRC_SHA" ] || die "$label: SHA-256 of the upload is $sum, expected $SRC_SHA"
            ok=sha256-ok
        else
            ok=size-ok
        fi
        neg=$(tail -n +"$((sshlog0 + 1))" "$W/sshd.log" |
            sed -n 's/.*kex: client->server cipher: \([^ ]*\) MAC: \([^ ]*\).*/\1 \2/p' | head -1)
        rm -f "$dst"
        mbs=$(awk -v b="$BYTES" -v t="$wall" 'BEGIN { printf "%.0f", b / t / 1e3 }')
        [ "$label" != "${BASE_LABEL[$group]}" ] || BASE[$group]=$mbs
        rows=("$label")
        extra=
        if [ "$drop" = 1 ]; then
            read -r dsp attempts st last ver succ < <(jq -rs "$PHASES" "$W/out")
            if [ "$succ" != 1 ] || [ "$attempts" != 1 ]; then
                die "$label: succeeded=$succ attempts=$attempts: $(tail -3 "$W/out")"
            fi
            xfer=$((last - st))
            xmbs=$(awk -v b="$BYTES" -v t="$xfer" 'BEGIN { printf "%.0f", (t > 0 ? b / t / 1e3 : 0) }')
            read -r mc0 ms0 mc1 ms1 <"$W/marks"
            xcpu_c=$(per_gib $((mc1 - mc0)))
            xcpu_s=$(per_gib $((ms1 - ms0)))
            rows=("$label: whole command" "$label: transfer phase")
            MBS[${rows[1]}]+="$xmbs "
            PAIR[${rows[1]}]+="$(ratio "$xmbs" "${BASE[$group]:-}") "
            CPU_C[${rows[1]}]+="$xcpu_c "
            CPU_S[${rows[1]}]+="$xcpu_s "
            OTHER[${rows[1]}]+="$other "
            GROUP[${rows[1]}]=$group
            NEG[${rows[1]}]=$neg
            PH_START[$label]+="$((dsp - t0)) "
            PH_CONN[$label]+="$((st - dsp)) "
            PH_XFER[$label]+="$xfer "
            PH_VER[$label]+="$((ver - last)) "
            PH_POST[$label]+="$((t1 - ver)) "
            extra=" | transfer $xfer ms = $xmbs MB/s, cpu c+s $xcpu_c+$xcpu_s | start+local sha $((dsp - t0)), connect..transfer $((st - dsp)), verify+rename $((ver - last)), then exit $((t1 - ver)) ms"
        fi
        ((round > 1)) || ORDER+=("${rows[@]}")
        MBS[${rows[0]}]+="$mbs "
        PAIR[${rows[0]}]+="$(ratio "$mbs" "${BASE[$group]:-}") "
        CPU_C[${rows[0]}]+="$cpu_c "
        CPU_S[${rows[0]}]+="$cpu_s "
        OTHER[${rows[0]}]+="$other "
        GROUP[${rows[0]}]=$group
        NEG[${rows[0]}]=$neg
        log "round $round  $(printf '%-24s' "$label") $(printf '%6s' "$wall") ms $(printf '%5s' "$mbs") MB/s, cpu s/GiB c+s $cpu_c+$cpu_s, other load $other cores, $ok${neg:+, $neg}$extra"
    done
    unset BASE
done
log "measured in $(((($(ms) - START_ALL) + 500) / 1000)) s"

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

echo
echo "Upload of $BYTES bytes ($SIZE) over 127.0.0.1, $RUNS interleaved round(s), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "dropship $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml vendor 2>/dev/null || echo ' (+ uncommitted changes)'); $(ssh -V 2>&1 | cut -d, -f1); $(curl --version | head -1 | cut -d' ' -f1-2); vsftpd $(dpkg-query -W -f '${Version}' vsftpd 2>/dev/null || echo ?)."
echo
printf '| %-30s | %6s | %-15s | %-17s | %-26s | %-14s | %-11s | %-5s | %s |\n' tool "MB/s" "runs (MB/s)" "ratio of medians" "paired: median (per round)" goal "CPU s/GiB" other "cipher (client->server)"
printf '|%s|\n' "--------------------------------|-------:|-----------------|-------------------|----------------------------|----------------|-------------|-------|------------------------"
for label in "${ORDER[@]}"; do
    [ -n "${MBS[$label]:-}" ] || continue
    m=$(median "${MBS[$label]}")
    grp=${GROUP[$label]}
    bm=$(median "${MBS[${BASE_LABEL[$grp]}]:-0}")
    rm_=$(awk -v a="$m" -v b="$bm" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "n/a" }')
    pr=n/a
    rounds=
    if [ -n "${PAIR[$label]// /}" ]; then
        pr=$(printf '%.2fx' "$(median "${PAIR[$label]}")")
        rounds=" ($(awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " " : ""), $i }' <<<"${PAIR[$label]}"))"
    fi
    verdict=
    if [[ $label == dropship* ]] && [ "$pr" != n/a ]; then
        g=${GOAL[$grp]}
        verdict=$(awk -v r="${pr%x}" -v g="$g" 'BEGIN { print (r >= g ? "met" : "MISSED") }')
        if [[ $label == *"whole command" ]]; then verdict="(info)"; else verdict="$verdict (>=${g}x)"; fi
    fi
    cpu=n/a
    [ -z "$CG" ] || cpu="$(median "${CPU_C[$label]}")+$(median "${CPU_S[$label]}")"
    printf '| %-30s | %6s | %-15s | %-17s | %-26s | %-14s | %-11s | %-5s | %s |\n' "$label" "$m" "${MBS[$label]% }" \
        "$rm_ ${BASE_NAME[$grp]}" "$pr$rounds" "$verdict" "$cpu" "$(median "${OTHER[$label]}")" "${NEG[$label]:-}"
done
cat <<'NOTE'

MB/s: median over the rounds (10^6 bytes/s); runs: every round, in order. ratio of
medians: MB/s / the baseline's MB/s. paired: tool / baseline measured in the same round,
median over the rounds (each round in parentheses); the goals are judged on it. Baselines:
`scp` (default cipher) for SCP/SFTP, `curl -T` for FTP, `curl --ssl-reqd -T` for FTPS.
Goals (issue 3): dropship's transfer phase >= 1.0x scp for SCP/SFTP, >= 0.9x curl for
FTP/FTPS; the whole-command rows are for information.
CPU s/GiB: median CPU seconds per GiB of client (with children) + server session processes
(cgroup cpuacct; for "transfer phase" rows, only between the transfer events), which other
load hardly changes; on 2 idle cores one stream is bounded by about
1 GiB / max(c, s, (c+s)/2). other: median cores kept busy by the rest of the machine
during the runs (2 = the machine was fully taken by others).
NOTE
echo
echo "dropship time by phase (median ms of each phase over the rounds):"
echo
printf '| %-13s | %22s | %26s | %8s | %28s | %21s | %8s |\n' protocol "start, local SHA-256" "connect, auth, lock, mkdir" transfer "size, remote SHA-256, rename" "unlock, journal, exit" total
printf '|%s|\n' "---------------|-----------------------:|---------------------------:|---------:|-----------------------------:|----------------------:|---------:"
for t in "${TOOLS[@]}"; do
    label=${t%%|*}
    [ -n "${PH_XFER[$label]:-}" ] || continue
    a=$(median "${PH_START[$label]}")
    b=$(median "${PH_CONN[$label]}")
    c=$(median "${PH_XFER[$label]}")
    d=$(median "${PH_VER[$label]}")
    e=$(median "${PH_POST[$label]}")
    printf '| %-13s | %22s | %26s | %8s | %28s | %21s | %8s |\n' "$label" "$a" "$b" "$c" "$d" "$e" "$((a + b + c + d + e))"
done
cat <<'NOTE'

start, local SHA-256: process start to `dispatch_started` (config, SHA-256 of the bundle,
computed once per dispatch before any connection, journal). size, remote SHA-256, rename:
last `progress` to `verified` (size check; for scp/sftp the hash on the host and the rename
in one command; for ftp/ftps SIZE + RNFR/RNTO). unlock, journal, exit: `verified` to exit.
NOTE
