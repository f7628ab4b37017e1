# shellcheck shell=bash
# A private network namespace holding ONE OpenSSH sshd on 0.0.0.0:22. Inside it every
# 127.0.0.X answers, so 127.0.0.2 ... 127.0.0.(N+1) are N "hosts" (DESIGN.md, "Testing with
# real peers"). Nothing is reachable outside the namespace and nothing outside is targeted.
#
# All hosts are this one machine and (unless ns_users gives each its own login) one login
# (root), so each address gets its own home
# directory: a ForceCommand (inline shell, run by the login shell itself: no extra process)
# reads the address the client dialled from $SSH_CONNECTION and cds into
# $BENCH_DIR/home/ADDR (HOME set too) before it evals the client's command or execs the
# SFTP server (so `Subsystem sftp` is the sftp-server binary, not internal-sftp). Without it, per-home state such as dropship's remote
# lock (~/.dropship.lock) would be shared by all "hosts" and serialise them, which real
# hosts never do. The wrapper is the same for every tool measured.
#
# `SetEnv SHLVL=1`: Debian's bash sources ~/.bashrc for every command run over ssh when it
# is the top-level shell; root's .bashrc on the dev machines runs `pyenv init` (~0.2 s of
# CPU per command), which would dominate every tool's time and say nothing about them.
# With SHLVL=1 the login shell counts as nested and skips it.
#
# Needs: BENCH_DIR (an empty work dir), NS (namespace name). Sets: KEY (client private
# key), KH (known_hosts with every address), SSHD_PID.

SFTP_SERVER=${SFTP_SERVER:-/usr/lib/openssh/sftp-server}

# Removes namespaces and work dirs left by bench runs whose script is gone (kill -9).
ns_reap_stale() {
    local ns pid p
    # Only names the bench scripts make (dropship-bench-PID or dropship-bench-WORD-PID) whose
    # script PID is gone; its work dir is /tmp/NAME minus the WORD part (as fanout.sh makes it)
    # or left alone.
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^dropship-bench-([a-z]+-)?[0-9]+$' || true); do
        pid=${ns##*-}
        if kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        log "removing stale namespace $ns"
        for p in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
        rmdir "/sys/fs/cgroup/cpuacct/$ns" "/sys/fs/cgroup/unified/$ns" 2>/dev/null || true
        if [ "$ns" = "dropship-bench-$pid" ]; then
            rm -rf "/tmp/dropship-bench-$pid"
        fi
    done
    # Users of ns_users whose script is gone.
    for pid in $(awk -F: '$1 ~ /^dsb[0-9]+u[0-9]+$/ { sub(/^dsb/, "", $1); sub(/u[0-9]+$/, "", $1); print $1 }' /etc/passwd | sort -u); do
        kill -0 "$pid" 2>/dev/null || users_down "$pid"
    done
}

# ns_exec CMD... -> runs CMD inside the namespace (and the CPU-accounting cgroup).
ns_exec() { cg_exec ip netns exec "$NS" "$@"; }

# CPU accounting: sshd (so every session process it forks) and every client run go into
# one cgroup-v1 cpuacct group, so `cg_cpu` is the CPU time of the whole job (both ends),
# unaffected by whatever else the machine runs. Absent cpuacct, CPU is reported as n/a.
CG=
# The same processes also go into a cgroup-v2 group (CG2), where the unified hierarchy is
# mounted: `perf record -G` can sample exactly them (CPU by program, see fanout.sh --profile).
CG2=
cg_setup() {
    local root=/sys/fs/cgroup/cpuacct v2=/sys/fs/cgroup/unified
    if [ -d "$v2" ] && [ -w "$v2" ] && mkdir -p "$v2/$NS" 2>/dev/null; then CG2=$v2/$NS; fi
    [ -w "$root" ] && [ -f "$root/cpuacct.usage" ] || return 0
    CG=$root/$NS
    mkdir -p "$CG" 2>/dev/null || CG=
}
# cg_exec CMD... -> runs CMD (exec'd, same pid) inside the cgroup(s), if there are.
cg_exec() {
    if [ -n "$CG$CG2" ]; then
        sh -c 'for g in "$0" "$1"; do [ -z "$g" ] || echo $$ >"$g/cgroup.procs" || exit 1; done; shift; exec "$@"' "$CG" "$CG2" "$@"
    else
        "$@"
    fi
}
# cg_cpu -> CPU seconds used so far by everything in the cgroup (empty without one).
cg_cpu() {
    if [ -n "$CG" ]; then awk '{ printf "%.3f", $1 / 1e9 }' "$CG/cpuacct.usage"; fi
}
cg_down() {
    local i
    if [ -n "$CG2" ]; then
        for ((i = 0; i < 50; i++)); do rmdir "$CG2" 2>/dev/null && break; sleep 0.1; done
    fi
    [ -n "$CG" ] && [ -d "$CG" ] || return 0
    for ((i = 0; i < 50; i++)); do
        rmdir "$CG" 2>/dev/null && return 0
        sleep 0.1
    done
    log "could not remove $CG"
}

# bench_addr K -> the address of host K (from 0): 127.0.0.2 .. 127.0.0.254 for the first
# 253, then 127.0.1.2 .. 127.0.1.254 and so on (every 127.0.X.Y answers on the namespace's
# lo), so a bench can have thousands of hosts.
bench_addr() { printf '127.0.%d.%d' $(($1 / 253)) $(($1 % 253 + 2)); }

# ns_up NHOSTS -> namespace, keys, sshd, known_hosts for the first NHOSTS bench_addr's.
ns_up() {
    local nhosts=$1 i
    [ -x "$SFTP_SERVER" ] || die "no $SFTP_SERVER (apt-get install openssh-server)"
    cg_setup
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    mkdir -p "$BENCH_DIR/ssh" "$BENCH_DIR/home" /run/sshd
    local d=$BENCH_DIR/ssh
    ssh-keygen -q -t ed25519 -N '' -C dropship-bench-host -f "$d/host_key"
    ssh-keygen -q -t ed25519 -N '' -C dropship-bench-client -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"
    KEY=$d/client_key
    KH=$d/known_hosts
    local hostkey
    hostkey=$(awk '{ print $1 " " $2 }' "$d/host_key.pub")
    : >"$KH"
    local a
    for ((i = 0; i < nhosts; i++)); do
        a=$(bench_addr "$i")
        echo "$a $hostkey" >>"$KH"
        mkdir -p "$BENCH_DIR/home/$a"
    done
    # ForceCommand is run by the login shell (`bash -c`), so this costs no extra process:
    # ${SSH_CONNECTION#* * } leaves "SERVER_ADDR SERVER_PORT".
    local force
    # shellcheck disable=SC2016 # expanded by the remote login shell, not here
    force='_h=${SSH_CONNECTION#* * }; cd '"$BENCH_DIR"'/home/"${_h%% *}" || exit 1; unset _h; HOME=$PWD; export HOME; case $SSH_ORIGINAL_COMMAND in '"$SFTP_SERVER"') exec '"$SFTP_SERVER"' ;; "") exec /bin/bash -l ;; *) eval "$SSH_ORIGINAL_COMMAND" ;; esac'
    cat >"$d/sshd_config" <<CONF
Port 22
ListenAddress 0.0.0.0
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
UsePAM no
PermitRootLogin yes
StrictModes no
PasswordAuthentication yes
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 1000:30:2000
MaxSessions 100
Subsystem sftp $SFTP_SERVER
SetEnv SHLVL=1
LogLevel ERROR
Match User root
    ForceCommand $force
CONF
    # Not through a function: $! must be sshd itself (sh and ip netns exec exec it), not a
    # subshell.
    local sshd=(ip netns exec "$NS" /usr/sbin/sshd -D -e -f "$d/sshd_config")
    if [ -n "$CG$CG2" ]; then
        sh -c 'for g in "$0" "$1"; do [ -z "$g" ] || echo $$ >"$g/cgroup.procs" || exit 1; done; shift; exec "$@"' "$CG" "$CG2" "${sshd[@]}" 2>>"$BENCH_DIR/sshd.log" &
    else
        "${sshd[@]}" 2>>"$BENCH_DIR/sshd.log" &
    fi
    SSHD_PID=$!
    for ((i = 0; i < 100; i++)); do
        if ns_exec ssh -F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o UserKnownHostsFile="$KH" -o GlobalKnownHostsFile=/dev/null \
            -o StrictHostKeyChecking=yes root@127.0.0.2 true 2>/dev/null; then
            return 0
        fi
        kill -0 "$SSHD_PID" 2>/dev/null || die "sshd died: $(cat "$BENCH_DIR/sshd.log")"
        sleep 0.1
    done
    die "sshd in $NS does not answer: $(cat "$BENCH_DIR/sshd.log")"
}

# One login per host (the issue's "one user per host" setting, as real hosts have): users
# named dsb<script pid>u<K>, K = 1..N, with a home each under $BENCH_DIR/users (the lock,
# the uploads and a relative dest_dir land there), bash as login shell, the bench's key.
# They log in plainly (the ForceCommand above is for root only). Removed by ns_down, or
# by ns_reap_stale when their script is gone. Sets BENCH_USERS (the names, in order).
BENCH_USERS=()
ns_users() {
    local n=$1 i u
    mkdir -p "$BENCH_DIR/users"
    chmod 755 "$BENCH_DIR" "$BENCH_DIR/users" "$BENCH_DIR/ssh"
    chmod 644 "$BENCH_DIR/ssh/authorized_keys"
    for ((i = 1; i <= n; i++)); do
        u=dsb$$u$i
        # `-p '*'`: no password, but not a locked account (sshd without PAM refuses those).
        useradd -M -d "$BENCH_DIR/users/$u" -s /bin/bash -p '*' "$u" ||
            die "useradd $u failed"
        BENCH_USERS+=("$u")
        mkdir -p "$BENCH_DIR/users/$u"
        chown "$u:" "$BENCH_DIR/users/$u"
    done
}

# Removes the users ns_users made for script PID $1.
users_down() {
    local u
    for u in $(awk -F: -v p="^dsb$1u[0-9]+\$" '$1 ~ p { print $1 }' /etc/passwd); do
        userdel "$u" 2>/dev/null || log "could not remove user $u"
    done
}

# Kills sshd and whatever still runs in the namespace, deletes it.
ns_down() {
    local p
    if [ -n "${SSHD_PID:-}" ]; then
        kill -TERM "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=
    fi
    if ip netns list 2>/dev/null | grep -q "^$NS\\b"; then
        for p in $(ip netns pids "$NS" 2>/dev/null || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
        ip netns del "$NS" 2>/dev/null || true
    fi
    [ "${#BENCH_USERS[@]}" -eq 0 ] || users_down $$
    cg_down
}
