#!/usr/bin/env bash
# Does dropship's own CPU per host grow with the size of known_hosts (#14, 1,000 hosts)? One
# dispatch of 1 MiB + `sha256sum {path}` to 20 hosts with a known_hosts of those 20 lines,
# then of 1,000 lines (the same plus 980 other addresses), 3 interleaved runs each; prints
# dropship's user and system CPU seconds and wall time per run (/usr/bin/time).
#
#   bash bench/known_hosts_size.sh path/to/dropship
#
# Needs root (network namespace, sshd); see bench/lib/sshns.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib/common.sh"
. "$HERE/lib/sshns.sh"
NS=dropship-bench-khx-$$
BENCH_DIR=/tmp/dropship-bench-khx-$$
SSHD_PID=
need_root
[ -x "${1:-}" ] || die "usage: $0 path/to/dropship"
trap 'ns_down; rm -rf "$BENCH_DIR"' EXIT
ns_reap_stale
mkdir -p "$BENCH_DIR"
ns_up 1000
DS=$BENCH_DIR/ds
B=$BENCH_DIR/b/fanout-1.0.tgz
mkdir -p "$BENCH_DIR/b"
head -c 1M /dev/urandom > "$B"
hosts=$(for ((i = 0; i < 20; i++)); do printf '%s, ' "$(bench_addr "$i")"; done | sed 's/, $//')
for kind in small big; do
  mkdir -p "$DS/$kind/home/.ssh" "$DS/$kind/state"
  if [ $kind = small ]; then head -20 "$KH"; else cat "$KH"; fi > "$DS/$kind/home/.ssh/known_hosts"
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
for r in 1 2 3; do
  for kind in small big; do
    rm -rf "$BENCH_DIR/dest"
    ns_exec /usr/bin/time -f "%U %S %e" -o "$DS/$kind/t" env HOME="$DS/$kind/home" XDG_STATE_HOME="$DS/$kind/state" NETRC=/dev/null \
      "$1" --config "$DS/$kind/cfg" --journal "$DS/$kind/j.sqlite" --dispatch "$B" > "$DS/$kind/out" 2>&1 || { echo "FAIL $kind"; tail -3 "$DS/$kind/out"; }
    echo "run $r known_hosts=$(wc -l < "$DS/$kind/home/.ssh/known_hosts") lines: dropship user sys wall = $(cat "$DS/$kind/t")"
  done
done
