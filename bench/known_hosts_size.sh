#!/usr/bin/env bash
# Does dropship's own CPU per host grow with the size of known_hosts (#14, 1,000 hosts)? One
# dispatch of 1 MiB + `sha256sum {path}` to HOSTS hosts (one SSH connection each) with a
# known_hosts of those HOSTS lines, then of 1,000 lines (the same plus other addresses), each
# plain and hashed by `ssh-keygen -H` (what Debian's ssh client writes); RUNS interleaved runs
# of every binary given on every file. Prints dropship's user and system CPU seconds and wall
# time per run (/usr/bin/time), then per binary the median CPU per file and the growth:
# (CPU with 1,000 lines - CPU with HOSTS lines) per host, scaled to 1,000 extra lines.
#
#   bash bench/known_hosts_size.sh [--hosts 20] [--runs 3] path/to/dropship [path/to/other/dropship ...]
#
# Needs root (network namespace, sshd); see bench/lib/sshns.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib/common.sh"
. "$HERE/lib/sshns.sh"
NHOSTS=20
RUNS=3
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) NHOSTS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || die "usage: $0 [--hosts N] [--runs N] path/to/dropship [...]"
for b in "$@"; do [ -x "$b" ] || die "not an executable: $b"; done
NS=dropship-bench-khx-$$
BENCH_DIR=/tmp/dropship-bench-khx-$$
SSHD_PID=
need_root
trap 'ns_down; rm -rf "$BENCH_DIR"' EXIT
ns_reap_stale
mkdir -p "$BENCH_DIR"
ns_up 1000
DS=$BENCH_DIR/ds
B=$BENCH_DIR/b/fanout-1.0.tgz
mkdir -p "$BENCH_DIR/b"
head -c 1M /dev/urandom > "$B"
hosts=$(for ((i = 0; i < NHOSTS; i++)); do printf '%s, ' "$(bench_addr "$i")"; done | sed 's/, $//')
KINDS="small big small-hashed big-hashed"
for kind in $KINDS; do
  mkdir -p "$DS/$kind/home/.ssh"
  f=$DS/$kind/home/.ssh/known_hosts
  case $kind in small*) head -"$NHOSTS" "$KH" ;; *) cat "$KH" ;; esac > "$f"
  case $kind in *-hashed) ssh-keygen -q -H -f "$f" >/dev/null 2>&1; rm -f "$f.old" ;; esac
  cat > "$DS/$kind/cfg" <<CFG
[fanout-.*\\.tgz]
protocol = sftp
host = $hosts
login = root
key = $KEY
dest_dir = $BENCH_DIR/dest/{host}
upgrade = sha256sum {path}
parallel = 100
timeout = 60s
CFG
done
declare -A CPU
for ((r = 1; r <= RUNS; r++)); do
  for ((bi = 1; bi <= $#; bi++)); do
    bin=${!bi}
    for kind in $KINDS; do
      rm -rf "$BENCH_DIR/dest" "$DS/$kind/state" "$DS/$kind/j.sqlite" "$DS/$kind/t"
      mkdir -p "$DS/$kind/state"
      ns_exec /usr/bin/time -f "%U %S %e" -o "$DS/$kind/t" env HOME="$DS/$kind/home" XDG_STATE_HOME="$DS/$kind/state" NETRC=/dev/null \
        "$bin" --config "$DS/$kind/cfg" --journal "$DS/$kind/j.sqlite" --dispatch "$B" > "$DS/$kind/out" 2>&1 || { echo "FAIL $bin $kind"; tail -3 "$DS/$kind/out"; }
      # A failed run (or one `time` could not report) is not counted.
      read -r u s w < "$DS/$kind/t" || continue
      CPU[$bi,$kind]+="$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }') "
      echo "run $r bin $bi $kind known_hosts=$(wc -l < "$DS/$kind/home/.ssh/known_hosts") lines: dropship user sys wall = $u $s $w"
    done
  done
done
extra=$(( $(wc -l < "$KH") - NHOSTS ))
for ((bi = 1; bi <= $#; bi++)); do
  echo "bin $bi = ${!bi}"
  for kind in $KINDS; do
    # shellcheck disable=SC2086
    echo "  $kind: dropship CPU s per run ${CPU[$bi,$kind]}-> median $(median ${CPU[$bi,$kind]})"
  done
  for h in "" -hashed; do
    # shellcheck disable=SC2086
    small=$(median ${CPU[$bi,small$h]}) big=$(median ${CPU[$bi,big$h]})
    label=${h#-}
    echo "  ${label:-plain}: $(awk -v a="$small" -v b="$big" -v n="$NHOSTS" -v x="$extra" 'BEGIN { printf "%+.2f", (b - a) / n * 1000 * 1000 / x }') ms CPU per host (one connection) per 1,000 known_hosts lines"
  done
done
