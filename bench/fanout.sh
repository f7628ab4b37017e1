#!/usr/bin/env bash
# Fan-out benchmark (issue 4, section 7): dispatch a 10 MiB bundle whose upgrade is
# `sha256sum {path}` to 20 and to 100 hosts with dropship, with pssh (parallel-scp +
# parallel-ssh) and with ansible-core (copy + shell), side by side in one run; then the
# 1,000,000-line output benchmark (bench/lines.sh runs that part alone).
#
# Hosts are 127.0.0.2 ... 127.0.0.101 (past 253 hosts on to 127.0.1.2 ...: `--hosts 1000`
# works) inside a private network namespace served by one
# OpenSSH sshd (bench/lib/sshns.sh); every tool runs inside that namespace and nothing
# outside it is contacted. Every run of every tool is checked: exit status 0 and the right
# sha256 reported for every host. Each measurement is RUNS runs (default 3), interleaved
# (dropship, pssh, ansible, dropship, ...), and the median is reported.
#
# Usage: bench/fanout.sh [--hosts "20 100"] [--runs 3] [--mib 10]
#                        [--tools "dropship dropship-scp pssh pssh-nocomp ansible
#                                  dropship-scp-users pssh-users dropship-pg"]
#                        [--no-lines] [--only-lines] [--lines 1000000] [--keep] [--profile]
# Env:   DROPSHIP_BIN=path  use this binary instead of `cargo build --release`'s.
#        DROPSHIP_BEFORE=path  tools `before` / `before-scp` / `before-scp-users`: another
#        build (an A/B); the lines benchmark then runs it too, in the same rounds.
# `dropship-pg` is `dropship` with its journal on PostgreSQL (Debian's server, distribution
# defaults, trust on the namespace's loopback; its CPU is in the job's): the journal's cost in
# a fan-out, next to the SQLite journal of `dropship`.
# The `-users` tools log in as one user per host (bench/lib/sshns.sh `ns_users`: real
# accounts, each with its own home, where the bundle, the lock and dest_dir `dest` go)
# instead of root with a home per address; dropship finds each host's user in
# ~/.ssh/config (`Host ADDR` / `User NAME`), pssh in its hosts file (`NAME@ADDR`).
# --profile: CPU by program (sshd, sftp-server, bash, sh, dropship, ssh, ...) of every run,
#        sampled by `perf record -a -e cpu-clock -G` on the bench's cgroup-v2 group (only
#        the bench's processes, both ends), 1 sample per CPU ms; median ms per run.
# Needs root (network namespace, sshd); installs pssh, ansible-core and time if missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=bench/lib/sshns.sh
. "$HERE/lib/sshns.sh"
# shellcheck source=bench/lib/pg.sh
. "$HERE/lib/pg.sh"

HOST_COUNTS="20 100"
RUNS=3
TOOLS="dropship dropship-scp pssh ansible"
DO_FANOUT=1
DO_LINES=1
KEEP=0
PROFILE=0
BUNDLE_MIB=10
LINES=1000000

while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) HOST_COUNTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --mib) BUNDLE_MIB=$2; shift 2 ;;
        --lines) LINES=$2; shift 2 ;;
        --tools) TOOLS=$2; shift 2 ;;
        --no-lines) DO_LINES=0; shift ;;
        --only-lines) DO_FANOUT=0; shift ;;
        --keep) KEEP=1; shift ;;
        --profile) PROFILE=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

need_root
NS=dropship-bench-$$
BENCH_DIR=/tmp/dropship-bench-$$
SSHD_PID=
FAILURES=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ns_down
    if [ "$KEEP" = 1 ]; then
        log "kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ns_reap_stale
mkdir -p "$BENCH_DIR"

# --- tools ------------------------------------------------------------------------------

apt_install time openssh-server openssh-client sqlite3
[ -x /usr/bin/time ] || die "/usr/bin/time missing"
has_tool() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ "$DO_FANOUT" = 1 ] && { has_tool pssh || has_tool pssh-nocomp || has_tool pssh-users; }; then
    apt_install pssh
    PSCP=$(first_cmd parallel-scp pscp.pssh pscp) || die "pssh installed but no parallel-scp/pscp.pssh"
    PSSH=$(first_cmd parallel-ssh pssh) || die "pssh installed but no parallel-ssh/pssh"
fi
if [ "$DO_FANOUT" = 1 ] && has_tool ansible; then
    if ! command -v ansible-playbook >/dev/null; then
        if apt-cache show ansible-core >/dev/null 2>&1; then
            apt_install ansible-core
        else
            pip install -q ansible-core
        fi
    fi
    ANSIBLE_PLAYBOOK=$(command -v ansible-playbook)
fi

if [ "$DO_LINES" = 1 ] || has_tool dropship || has_tool dropship-scp || has_tool dropship-scp-users || has_tool dropship-pg; then
    if [ -n "${DROPSHIP_BIN:-}" ]; then
        DROPSHIP=$DROPSHIP_BIN
    else
        log "cargo build --release"
        (cd "$REPO" && cargo build --release --quiet)
        DROPSHIP=$REPO/target/release/dropship
    fi
    "$DROPSHIP" --help | grep -q -- '--dispatch' || die "$DROPSHIP has no --dispatch yet"
fi
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [ -z "${DROPSHIP_BIN:-}" ] && [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock vendor 2>/dev/null)" ]; then
    REV="$REV+uncommitted"
fi
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
case "$(awk '{ print ($1 > 1.0) }' /proc/loadavg)" in
    1) log "warning: load average $LOAD0 before the start: other work skews the wall times (the CPU columns are not affected)" ;;
esac

# --- hosts ------------------------------------------------------------------------------

MAX_HOSTS=1
for n in $HOST_COUNTS; do [ "$n" -gt "$MAX_HOSTS" ] && MAX_HOSTS=$n; done
[ "$MAX_HOSTS" -le 64768 ] || die "at most 64768 hosts (127.0.0.2 .. 127.0.255.254)"
log "namespace $NS, sshd for 127.0.0.2 .. $(bench_addr $((MAX_HOSTS - 1)))"
ns_up "$MAX_HOSTS"
USERS_MODE=0
case " $TOOLS " in *-users" "*) USERS_MODE=1 ;; esac
if [ "$USERS_MODE" = 1 ]; then
    log "one user per host: creating $MAX_HOSTS users"
    ns_users "$MAX_HOSTS"
fi

# dropship-pg's journal: a PostgreSQL server on the namespace's 127.0.0.1 (ns_down kills it).
PG_URL=
if has_tool dropship-pg; then
    pg_up "$BENCH_DIR" 5432 ns_exec
    psql_ -d postgres -c 'CREATE DATABASE fanout'
    PG_URL="postgres://dropship@127.0.0.1:5432/fanout?sslmode=disable"
    log "dropship-pg journal: $PG_URL ($("$PG_BIN/postgres" --version))"
fi

# hosts N -> "127.0.0.2 127.0.0.3 ..." (N addresses; past 253 on to 127.0.1.2, see bench_addr)
hosts() { local i; for ((i = 0; i < $1; i++)); do printf '%s ' "$(bench_addr "$i")"; done; }

# The client side of every tool: the same key, known_hosts (strict checking), no ssh_config.
SSH_ARGS=(-F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile="$KH"
    -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes)
SSH_OPTS="${SSH_ARGS[*]}" # for pssh's -x (the paths hold no spaces)

# dropship's own view: HOME with .ssh/known_hosts, private XDG dirs.
DS=$BENCH_DIR/dropship
mkdir -p "$DS/home/.ssh" "$DS/state" "$DS/config"
cp "$KH" "$DS/home/.ssh/known_hosts"
# user_of K -> the login of host K (from 0) in the -users setting.
user_of() { echo "${BENCH_USERS[$1]}"; }
# The -users runs get a HOME of their own with that ~/.ssh/config: dropship reads a
# ~/.ssh/config through `ssh -G` per host (exact OpenSSH semantics, ~5 ms of CPU each), which
# the other runs must not pay for the -users runs' sake.
if [ "$USERS_MODE" = 1 ]; then
    mkdir -p "$DS/home-users/.ssh"
    cp "$KH" "$DS/home-users/.ssh/known_hosts"
    for ((i = 0; i < MAX_HOSTS; i++)); do
        printf 'Host %s\n    User %s\n' "$(bench_addr "$i")" "$(user_of "$i")"
    done >"$DS/home-users/.ssh/config"
fi
dropship_env() {
    env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" \
        XDG_CACHE_HOME="$DS/cache" DROPSHIP_CONFIG= NETRC=/dev/null "$@"
}

# cpu_since C0 -> CPU seconds of the cgroup since the reading C0, or n/a.
cpu_since() {
    local c1
    c1=$(cg_cpu)
    if [ -n "$1" ] && [ -n "$c1" ]; then awk -v a="$1" -v b="$c1" 'BEGIN { printf "%.2f", b - a }'; else echo n/a; fi
}

# peak_rss_kib TIMEFILE -> "Maximum resident set size" from /usr/bin/time -v.
peak_rss_kib() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
# proc_cpu TIMEFILE -> user + system seconds of the process itself (its own client side).
proc_cpu() { awk -F': ' '/User time|System time/ { t += $2 } END { printf "%.2f", t }' "$1"; }

# --- fan-out ----------------------------------------------------------------------------

declare -A TIMES=() CPUS=() RSS=() PCPU=() CMDS=() PROF=()

# note_cmd TOOL CMD... -> remembers the exact command line TOOL ran (printed with the results).
note_cmd() {
    local tool=$1
    shift
    CMDS[$tool]="${CMDS[$tool]:+${CMDS[$tool]}
  }$(printf '%q ' "$@")"
}

# check_hashes TOOL N FILE -> every host 127.0.0.2..N+1 has "ADDR HASH" in FILE.
check_hashes() {
    local tool=$1 n=$2 file=$3 bad
    bad=$(hosts "$n" | tr ' ' '\n' | grep . | awk -v want="$BUNDLE_SHA" -v f="$file" '
        BEGIN { while ((getline l < f) > 0) { split(l, a, " "); got[a[1]] = a[2] } }
        got[$1] != want { print $1 " -> " (($1 in got) ? got[$1] : "nothing") }')
    if [ -n "$bad" ]; then
        log "$tool/$n: WRONG or missing sha256 on $(echo "$bad" | wc -l) hosts, e.g. $(echo "$bad" | head -3 | tr '\n' ';')"
        return 1
    fi
}

# reset_dests -> removes every copy of the bundle (outside the timed window) and syncs.
reset_dests() {
    rm -rf "$BENCH_DIR/dest"
    find "$BENCH_DIR/home" -mindepth 2 -maxdepth 2 -name 'fanout-*' -exec rm -f {} +
    find "$BENCH_DIR/home" -mindepth 3 -maxdepth 4 -path '*/.ansible/tmp/*' -exec rm -rf {} + 2>/dev/null || true
    if [ -d "$BENCH_DIR/users" ]; then
        find "$BENCH_DIR/users" -mindepth 2 -maxdepth 2 \( -name 'fanout-*' -o -name dest \) -exec rm -rf {} +
    fi
    mkdir -p "$BENCH_DIR/dest"
    sync
}

# run_dropship PROTO N RUN [BIN TAG [users]] -> SECS=seconds, or FAIL. With `users`, each
# host's login comes from ~/.ssh/config and the bundle goes to `dest` in its home.
run_dropship() {
    local proto=$1 n=$2 r=$3
    local bin=${4:-$DROPSHIP} tag=${5:-dropship-$1} users=${6:-} journal=$DS/journal.sqlite
    [ "${7:-}" = pg ] && journal=$PG_URL
    local dir=$DS/$tag-$n
    local login="login = root" dest="$BENCH_DIR/dest/dropship/{host}" home=$DS/home
    [ -n "$users" ] && login="# login: ~/.ssh/config" && dest=dest && home=$DS/home-users
    mkdir -p "$dir"
    cat >"$dir/dispatch.cfg" <<CFG
[fanout-.*\\.tgz]
protocol = $proto
host = $(hosts "$n" | sed 's/ $//; s/ /, /g')
$login
key = $KEY
dest_dir = $dest
upgrade = sha256sum {path}
parallel = 100
timeout = 60s
CFG
    local t0 c0 rc=0 secs
    local cmd=(/usr/bin/time -v -o "$dir/time.$r"
        env HOME="$home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null
        "$bin" --config "$dir/dispatch.cfg" --journal "$journal" --dispatch "$BUNDLE")
    [ "$r" = 1 ] && [ "$n" = "${HOST_COUNTS##* }" ] && note_cmd "$tag" ip netns exec "$NS" "${cmd[@]}"
    [ "$r" = 1 ] && [ "$n" = "${HOST_COUNTS##* }" ] && CMDS[$tag-cfg]=$(sed 's/^host = \(127[^,]*, 127[^,]*\),.*, \(127[0-9.]*\)$/host = \1, ..., \2/' "$dir/dispatch.cfg")
    c0=$(cg_cpu)
    t0=$(now)
    ns_exec "${cmd[@]}" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
    secs=$(elapsed "$t0")
    CPU=$(cpu_since "$c0")
    RSS[$tag/$n]="${RSS[$tag/$n]:-} $(peak_rss_kib "$dir/time.$r")"
    PCPU[$tag/$n]="${PCPU[$tag/$n]:-} $(proc_cpu "$dir/time.$r")"
    if [ "$rc" != 0 ]; then
        log "dropship $proto/$n run $r: exit $rc; $(tail -3 "$dir/err.$r" | tr '\n' ' ')"
        SECS=FAIL; return
    fi
    # Plain output: "[127.0.0.X] HASH  PATH" (the label may be padded: "[127.0.0.2 ]").
    sed -n 's/^\[\([0-9.]*\) *\] \([0-9a-f]\{64\}\)  .*/\1 \2/p' "$dir/out.$r" >"$dir/hashes.$r"
    check_hashes "$tag" "$n" "$dir/hashes.$r" || { SECS=FAIL; return; }
    SECS=$secs
}

# run_pssh N RUN [nocomp] -> SECS=seconds, or FAIL. parallel-scp copies to a path relative
# to the login's home, which the sshd wrapper makes per address
# ($BENCH_DIR/home/ADDR/fanout-1.0.tgz), so the hosts do not overwrite one another; then
# parallel-ssh runs sha256sum on it. parallel-scp always runs `scp -qC` (compression, which
# costs much CPU on an already compressed bundle and cannot be undone with -o/-x since -C
# wins); the `pssh-nocomp` variant puts an `scp` first in PATH that drops the -C.
run_pssh() {
    local n=$1 r=$2 variant=${3:-} rc=0 t0 c0 secs f path=$PATH
    local dir=$BENCH_DIR/pssh$variant/$n-$r i login=(-l root)
    mkdir -p "$dir"
    if [ "$variant" = -users ]; then
        for ((i = 0; i < n; i++)); do echo "$(user_of "$i")@$(bench_addr "$i")"; done >"$dir/hosts"
        login=()
    else
        hosts "$n" | tr ' ' '\n' | grep . >"$dir/hosts"
    fi
    if [ "$variant" = -nocomp ]; then
        mkdir -p "$BENCH_DIR/nocomp"
        cat >"$BENCH_DIR/nocomp/scp" <<'WRAP'
#!/bin/sh
# parallel-scp hardcodes `scp -qC`: drop the -C (compression), keep the rest.
for a do shift; case $a in -qC) set -- "$@" -q ;; -C) ;; *) set -- "$@" "$a" ;; esac; done
exec /usr/bin/scp "$@"
WRAP
        chmod 755 "$BENCH_DIR/nocomp/scp"
        path=$BENCH_DIR/nocomp:$PATH
    fi
    local scp=("$PSCP" -h "$dir/hosts" "${login[@]}" -p 100 -t 120 -x "$SSH_OPTS" -e "$dir/scp-err"
        "$BUNDLE" "$BUNDLE_NAME")
    local ssh=("$PSSH" -h "$dir/hosts" "${login[@]}" -p 100 -t 120 -x "$SSH_OPTS" -o "$dir/out" -e "$dir/err"
        "sha256sum $BUNDLE_NAME")
    [ "$variant" = -nocomp ] && scp=(env PATH="$path" "${scp[@]}")
    if [ "$r" = 1 ] && [ "$n" = "${HOST_COUNTS##* }" ]; then
        note_cmd "pssh$variant" ip netns exec "$NS" "${scp[@]}"
        note_cmd "pssh$variant" ip netns exec "$NS" "${ssh[@]}"
    fi
    c0=$(cg_cpu)
    t0=$(now)
    ns_exec "${scp[@]}" >"$dir/scp.out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        ns_exec "${ssh[@]}" >"$dir/ssh.out" 2>&1 || rc=$?
    fi
    secs=$(elapsed "$t0")
    CPU=$(cpu_since "$c0")
    if [ "$rc" != 0 ]; then
        log "pssh$variant/$n run $r: exit $rc; $(grep -v SUCCESS "$dir/scp.out" "$dir/ssh.out" 2>/dev/null | head -3 | tr '\n' ' ')"
        SECS=FAIL; return
    fi
    for f in "$dir"/out/*; do
        printf '%s %s\n' "$(basename "$f" | sed 's/^.*@//')" "$(awk '{ print $1 }' "$f")"
    done >"$dir/hashes"
    check_hashes "pssh$variant" "$n" "$dir/hashes" || { SECS=FAIL; return; }
    SECS=$secs
}

# run_ansible N RUN -> SECS=seconds, or FAIL. One playbook, two tasks (copy, shell), forks 100,
# pipelining on, strict host key checking; ssh_args keep ansible's defaults (-C,
# ControlMaster=auto, ControlPersist=60s) with fresh ControlMaster sockets per run (closed
# after the run, outside the timed window).
run_ansible() {
    local n=$1 r=$2 rc=0 t0 c0 secs s
    local dir=$BENCH_DIR/ansible/$n-$r
    mkdir -p "$dir/cp" "$dir/tmp"
    hosts "$n" | tr ' ' '\n' | grep . | sed '1i [fanout]' >"$dir/inventory"
    cat >"$dir/ansible.cfg" <<CFG
[defaults]
inventory = $dir/inventory
forks = 100
host_key_checking = True
remote_user = root
private_key_file = $KEY
interpreter_python = /usr/bin/python3
stdout_callback = json
local_tmp = $dir/tmp
timeout = 60
retry_files_enabled = False

[ssh_connection]
pipelining = True
ssh_args = -C -F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$KH -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = $dir/cp
CFG
    cat >"$dir/play.yml" <<PLAY
- hosts: all
  gather_facts: false
  tasks:
    - name: upload
      copy:
        src: $BUNDLE
        dest: $BENCH_DIR/dest/ansible/{{ inventory_hostname }}/
    - name: upgrade
      shell: sha256sum $BENCH_DIR/dest/ansible/{{ inventory_hostname }}/$BUNDLE_NAME
PLAY
    local cmd=(env ANSIBLE_CONFIG="$dir/ansible.cfg" HOME="$dir" "$ANSIBLE_PLAYBOOK" "$dir/play.yml")
    if [ "$r" = 1 ] && [ "$n" = "${HOST_COUNTS##* }" ]; then
        note_cmd ansible ip netns exec "$NS" "${cmd[@]}"
        CMDS[ansible-cfg]="$(cat "$dir/ansible.cfg")
$(cat "$dir/play.yml")"
    fi
    c0=$(cg_cpu)
    t0=$(now)
    ns_exec "${cmd[@]}" >"$dir/out.json" 2>"$dir/err" || rc=$?
    secs=$(elapsed "$t0")
    CPU=$(cpu_since "$c0")
    for s in "$dir"/cp/*; do
        if [ -S "$s" ]; then
            ns_exec ssh -F /dev/null -o ControlPath="$s" -O exit root@127.0.0.2 >/dev/null 2>&1 || true
        fi
    done
    if [ "$rc" != 0 ]; then
        log "ansible/$n run $r: exit $rc; $(tail -3 "$dir/err" | tr '\n' ' ')"
        SECS=FAIL; return
    fi
    python3 - "$dir/out.json" >"$dir/hashes" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for task in doc["plays"][0]["tasks"]:
    if task["task"]["name"] == "upgrade":
        for host, res in task["hosts"].items():
            print(host, (res.get("stdout") or "-").split()[0])
PY
    check_hashes ansible "$n" "$dir/hashes" || { SECS=FAIL; return; }
    SECS=$secs
}

run_tool() {
    case "$1" in
        dropship) run_dropship sftp "$2" "$3" ;;
        dropship-scp) run_dropship scp "$2" "$3" ;;
        dropship-pg) run_dropship sftp "$2" "$3" "$DROPSHIP" dropship-pg "" pg ;;
        before) run_dropship sftp "$2" "$3" "$DROPSHIP_BEFORE" before ;;
        before-scp) run_dropship scp "$2" "$3" "$DROPSHIP_BEFORE" before-scp ;;
        dropship-scp-users) run_dropship scp "$2" "$3" "$DROPSHIP" dropship-scp-users users ;;
        before-scp-users) run_dropship scp "$2" "$3" "$DROPSHIP_BEFORE" before-scp-users users ;;
        pssh) run_pssh "$2" "$3" ;;
        pssh-users) run_pssh "$2" "$3" -users ;;
        pssh-nocomp) run_pssh "$2" "$3" -nocomp ;;
        ansible) run_ansible "$2" "$3" ;;
        *) die "unknown tool $1" ;;
    esac
}

# med_of KEY -> median of the successful runs, marked when some failed.
med_of() {
    local key=$1 ok=() v
    for v in ${TIMES[$key]:-}; do [ "$v" != FAIL ] && ok+=("$v"); done
    local total
    total=$(echo "${TIMES[$key]:-}" | wc -w)
    if [ "${#ok[@]}" -eq 0 ]; then
        echo "FAIL"
    elif [ "${#ok[@]}" -lt "$total" ]; then
        echo "$(median "${ok[@]}") (${#ok[@]}/$total ok)"
    else
        median "${ok[@]}"
    fi
}

fanout() {
    BUNDLE_NAME=fanout-1.0.tgz
    BUNDLE=$BENCH_DIR/bundle/$BUNDLE_NAME
    mkdir -p "$BENCH_DIR/bundle"
    head -c $((BUNDLE_MIB * 1024 * 1024)) /dev/urandom >"$BUNDLE"
    BUNDLE_SHA=$(sha256sum "$BUNDLE" | awk '{ print $1 }')
    log "bundle $BUNDLE ($BUNDLE_MIB MiB, sha256 $BUNDLE_SHA)"
    local n r tool secs
    for n in $HOST_COUNTS; do
        for ((r = 1; r <= RUNS; r++)); do
            for tool in $TOOLS; do
                reset_dests
                CPU=n/a
                local perf_pid= pdata=$BENCH_DIR/perf.$tool.$n.$r
                if [ "$PROFILE" = 1 ]; then
                    perf record -q -a -e cpu-clock -c 1000000 -G "${CG2##*/}" -o "$pdata" -- sleep 3600 2>/dev/null &
                    perf_pid=$!
                    sleep 1
                fi
                run_tool "$tool" "$n" "$r"
                if [ -n "$perf_pid" ]; then
                    kill -INT "$perf_pid"
                    wait "$perf_pid" 2>/dev/null || true
                    # "program:ms ..." of this run (cpu-clock every 1 ms of CPU: samples = ms).
                    PROF[$tool/$n]="${PROF[$tool/$n]:-} $(perf report -i "$pdata" --sort comm -F sample,comm --stdio -q 2>/dev/null |
                        awk 'NF >= 2 { printf "%s:%d ", $2, $1 }')"
                fi
                secs=$SECS
                [ "$secs" = FAIL ] && FAILURES=$((FAILURES + 1))
                TIMES[$tool/$n]="${TIMES[$tool/$n]:-} $secs"
                [ "$secs" != FAIL ] && [ "$CPU" != n/a ] && CPUS[$tool/$n]="${CPUS[$tool/$n]:-} $CPU"
                log "$n hosts, run $r/$RUNS: $tool ${secs}s wall, ${CPU}s CPU"
            done
        done
    done
    reset_dests

    echo
    echo "### Fan-out: ${BUNDLE_MIB} MiB bundle + \`sha256sum {path}\`, median of $RUNS runs (seconds)"
    echo
    # Ratio columns: dropship (sftp) and dropship-scp against each other tool measured.
    local pairs=() pair t
    has_tool dropship && has_tool dropship-pg && pairs+=("dropship-pg:dropship")
    for t in pssh pssh-nocomp ansible; do
        has_tool "$t" || continue
        has_tool dropship && pairs+=("dropship:$t")
        has_tool dropship-pg && pairs+=("dropship-pg:$t")
        has_tool dropship-scp && pairs+=("dropship-scp:$t")
        has_tool before && pairs+=("before:$t")
        has_tool before-scp && pairs+=("before-scp:$t")
    done
    if has_tool pssh-users; then
        has_tool dropship-scp-users && pairs+=("dropship-scp-users:pssh-users")
        has_tool before-scp-users && pairs+=("before-scp-users:pssh-users")
    fi
    local head="| hosts |" rule="|---:|"
    for t in $TOOLS; do head+=" $t s |"; rule+="---:|"; done
    for pair in "${pairs[@]}"; do head+=" ${pair%%:*}/${pair#*:} |"; rule+="---:|"; done
    echo "$head"
    echo "$rule"
    local row
    for n in $HOST_COUNTS; do
        row="| $n |"
        for t in $TOOLS; do row+=" $(med_of "$t/$n") |"; done
        for pair in "${pairs[@]}"; do
            row+=" $(ratio "$(med_of "${pair%%:*}/$n" | awk '{ print $1 }')" "$(med_of "${pair#*:}/$n" | awk '{ print $1 }')") |"
        done
        echo "$row"
    done
    if [ -n "$CG" ]; then
        echo
        echo "CPU seconds of the whole job (clients + sshd + remote commands, one cgroup), median:"
        echo
        head="| hosts |"; rule="|---:|"
        for t in $TOOLS; do head+=" $t CPU s |"; rule+="---:|"; done
        echo "$head"
        echo "$rule"
        for n in $HOST_COUNTS; do
            row="| $n |"
            for t in $TOOLS; do
                # shellcheck disable=SC2086
                row+=" $(median ${CPUS[$t/$n]:-}) |"
            done
            echo "$row"
        done
    fi
    if [ "$PROFILE" = 1 ]; then
        echo
        echo "CPU ms by program (perf cpu-clock samples of the bench's processes, both ends; mean of the runs):"
        echo
        echo "| hosts | tool | total | by program (ms) |"
        echo "|---:|---|---:|---|"
        for n in $HOST_COUNTS; do
            for t in $TOOLS; do
                local by total
                # shellcheck disable=SC2086
                by=$(printf '%s\n' ${PROF[$t/$n]:-} | awk -F: -v runs="$RUNS" '
                    NF == 2 { ms[$1] += $2 } END { for (c in ms) printf "%d %s\n", ms[c] / runs, c }' |
                    sort -rn)
                total=$(echo "$by" | awk '{ t += $1 } END { print t + 0 }')
                printf '| %s | %s | %s | %s |\n' "$n" "$t" "$total" \
                    "$(echo "$by" | awk '$1 >= 5 { printf "%s%s %d", (NR > 1 ? ", " : ""), $2, $1 }')"
            done
        done
    fi
    echo
    echo "All runs (s):"
    for n in $HOST_COUNTS; do
        for t in $TOOLS; do echo "- $t, $n hosts: wall${TIMES[$t/$n]}; CPU${CPUS[$t/$n]:- n/a}"; done
    done
    for n in $HOST_COUNTS; do
        for t in dropship dropship-scp before before-scp dropship-scp-users before-scp-users; do
            has_tool "$t" || continue
            local key=$t/$n
            [ "$t" = dropship ] && key=dropship-sftp/$n
            echo "- $t, $n hosts: peak RSS (KiB)${RSS[$key]:-}; its own CPU (user+sys s)${PCPU[$key]:-}"
        done
    done
    echo
    echo "Commands ($n hosts, first run; \$PATH is the caller's):"
    for t in $TOOLS; do
        case "$t" in dropship) key=dropship-sftp ;; *) key=$t ;; esac
        echo "- $t:"
        printf '%s\n' "${CMDS[$key]:-}" | sed "s/^ *//; s/^/      /; s|:$PATH |:\\\$PATH |"
        if [ -n "${CMDS[$key-cfg]:-}" ]; then
            echo "  with:"
            printf '%s\n' "${CMDS[$key-cfg]}" | sed 's/^/      /'
        fi
    done
    echo
    if has_tool dropship && [ -f "$DS/journal.sqlite" ] && command -v sqlite3 >/dev/null; then
        journal_steps || true
    fi
}

# Per-step durations from dropship's journal: mean and max per step and host count.
journal_steps() {
    local j=$DS/journal.sqlite
    sqlite3 "$j" "SELECT 1 FROM step LIMIT 1" >/dev/null 2>&1 || return 0
    echo "dropship per-step time from its journal (ms; all runs, both protocols):"
    echo
    echo "| hosts | step | mean | max |"
    echo "|---:|---|---:|---:|"
    sqlite3 -separator ' | ' "$j" "
        WITH d AS (SELECT dispatch, count(*) AS n FROM target GROUP BY dispatch)
        SELECT '| ' || d.n, s.step, printf('%.0f', avg(s.duration_ms)), max(s.duration_ms) || ' |'
        FROM step s JOIN d ON d.dispatch = s.dispatch
        GROUP BY d.n, s.step ORDER BY d.n, min(s.id)" || true
    echo
}

# --- 1,000,000 lines --------------------------------------------------------------------

lines_bench() {
    local dir=$DS/lines r t0 c0 secs rc n tool bin
    mkdir -p "$dir" "$BENCH_DIR/bundle"
    local bundle=$BENCH_DIR/bundle/lines-1.0.tgz
    echo lines >"$bundle"
    seq 1 "$LINES" >"$dir/expected"
    cat >"$dir/dispatch.cfg" <<CFG
[lines-.*\\.tgz]
protocol = sftp
host = 127.0.0.2
login = root
key = $KEY
dest_dir = $BENCH_DIR/dest/lines/{host}
upgrade = seq 1 $LINES
timeout = 60s
CFG
    # dropship (DROPSHIP_BIN or this tree's release build), `before` (DROPSHIP_BEFORE, when
    # set) and ssh, interleaved in every round.
    local tools=(dropship)
    [ -n "${DROPSHIP_BEFORE:-}" ] && tools+=(before)
    tools+=(ssh)
    declare -A L_TIMES=() L_CPU=() L_PCPU=() L_RSS=() L_OK=()
    # One untimed run of each build first: the first creates the journal's file and schema,
    # which no later run pays for.
    for tool in "${tools[@]}"; do
        [ "$tool" = ssh ] && continue
        bin=$DROPSHIP
        [ "$tool" = before ] && bin=$DROPSHIP_BEFORE
        ns_exec env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null \
            "$bin" --config "$dir/dispatch.cfg" --journal "$DS/lines-journal.sqlite" \
            --dispatch "$bundle" >/dev/null 2>&1 || log "warm-up run of $tool failed"
    done
    for ((r = 1; r <= RUNS; r++)); do
        for tool in "${tools[@]}"; do
            rc=0
            c0=$(cg_cpu)
            t0=$(now)
            if [ "$tool" = ssh ]; then
                ns_exec /usr/bin/time -v -o "$dir/time.$tool.$r" \
                    ssh "${SSH_ARGS[@]}" root@127.0.0.2 seq 1 "$LINES" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
            else
                bin=$DROPSHIP
                [ "$tool" = before ] && bin=$DROPSHIP_BEFORE
                [ "$r" = 1 ] && note_cmd "lines-$tool" ip netns exec "$NS" /usr/bin/time -v -o TIMEFILE \
                    env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null \
                    "$bin" --config "$dir/dispatch.cfg" --journal "$DS/lines-journal.sqlite" --dispatch "$bundle"
                ns_exec /usr/bin/time -v -o "$dir/time.$tool.$r" \
                    env HOME="$DS/home" XDG_STATE_HOME="$DS/state" XDG_CONFIG_HOME="$DS/config" NETRC=/dev/null \
                    "$bin" --config "$dir/dispatch.cfg" --journal "$DS/lines-journal.sqlite" \
                    --dispatch "$bundle" >"$dir/out.$r" 2>"$dir/err.$r" || rc=$?
            fi
            secs=$(elapsed "$t0")
            CPU=$(cpu_since "$c0")
            if [ "$tool" = ssh ]; then
                n=$(wc -l <"$dir/out.$r")
                cmp -s "$dir/out.$r" "$dir/expected" || rc=${rc/#0/wrong}
            else
                n=$(grep -c '^\[127\.0\.0\.2 *\] [0-9][0-9]*$' "$dir/out.$r" || true)
                sed -n 's/^\[127\.0\.0\.2 *\] \([0-9][0-9]*\)$/\1/p' "$dir/out.$r" | cmp -s - "$dir/expected" || rc=${rc/#0/wrong}
            fi
            if [ "$rc" = 0 ] && [ "$n" = "$LINES" ]; then
                L_TIMES[$tool]="${L_TIMES[$tool]:-} $secs"
                [ "$CPU" != n/a ] && L_CPU[$tool]="${L_CPU[$tool]:-} $CPU"
                L_PCPU[$tool]="${L_PCPU[$tool]:-} $(proc_cpu "$dir/time.$tool.$r")"
                L_RSS[$tool]="${L_RSS[$tool]:-} $(peak_rss_kib "$dir/time.$tool.$r")"
                L_OK[$tool]=$((${L_OK[$tool]:-0} + 1))
                log "lines run $r: $tool ${secs}s wall, ${CPU}s CPU (whole job), $n lines in order"
            else
                log "lines run $r: $tool FAILED: exit $rc, $n of $LINES lines (or out of order); $(tail -2 "$dir/err.$r" | tr '\n' ' ')"
                FAILURES=$((FAILURES + 1))
            fi
            rm -f "$dir/out.$r"
        done
    done
    per_s() { awk -v s="$1" -v n="$LINES" 'BEGIN { if (s + 0 > 0) printf "%.0f", n / s; else print "n/a" }'; }
    local smed
    # shellcheck disable=SC2086
    smed=$(median ${L_TIMES[ssh]:-})
    echo
    echo "### ${LINES} lines (\`seq 1 $LINES\`) on one host, plain output to a file, median of $RUNS runs"
    echo
    echo "| tool | runs complete, in order | wall s | lines/s | speed vs ssh | CPU s (whole job) | CPU s (the client process) | peak RSS MiB (client) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    local med name
    for tool in "${tools[@]}"; do
        # shellcheck disable=SC2086
        med=$(median ${L_TIMES[$tool]:-})
        case "$tool" in
            dropship) name="dropship --dispatch" ;;
            before) name="dropship --dispatch (before)" ;;
            ssh) name="\`ssh host seq 1 $LINES > file\`" ;;
        esac
        # shellcheck disable=SC2086
        echo "| $name | ${L_OK[$tool]:-0}/$RUNS | $med | $(per_s "$med") | $(ratio "$smed" "$med")x | $(median ${L_CPU[$tool]:-}) | $(median ${L_PCPU[$tool]:-}) | $(awk -v k="$(median ${L_RSS[$tool]:-})" 'BEGIN { printf "%.1f", k / 1024 }') |"
    done
    echo
    echo "All runs:"
    for tool in "${tools[@]}"; do
        echo "- $tool: wall s${L_TIMES[$tool]:-}; whole-job CPU s${L_CPU[$tool]:-}; process CPU s${L_PCPU[$tool]:-}; peak RSS KiB${L_RSS[$tool]:-}"
    done
    echo
    echo "Commands (first run; TIMEFILE is per run):"
    for tool in "${tools[@]}"; do
        [ "$tool" = ssh ] && { echo "- ssh: ip netns exec $NS ssh ${SSH_ARGS[*]} root@127.0.0.2 seq 1 $LINES > file"; continue; }
        echo "- $tool:"
        printf '%s\n' "${CMDS[lines-$tool]:-}" | sed 's/^ *//; s/^/      /'
    done
    echo
}

[ "$DO_FANOUT" = 1 ] && fanout
[ "$DO_LINES" = 1 ] && lines_bench

echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); $(ssh -V 2>&1); dropship ${REV:-?}; load average before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$FAILURES" -gt 0 ]; then
    log "$FAILURES failed runs (see above)"
    exit 1
fi
