#!/bin/sh
# What the bundle store costs a dispatch: `--dispatch` of one 256 MiB bundle with
# `protocol = local` (no network: the store's share of the wall time is as large as it can
# be), by a binary without the store (BASE) and one with it (NEW), the store on the bundle's
# file system (hard link) and on another (tmpfs: a copy + fsync). Interleaved, RUNS rounds,
# whole-command wall time.
#   sh bench/store.sh BASE_BINARY NEW_BINARY [RUNS]
set -eu
base=$1; new=$2; runs=${3:-3}
w=$(mktemp -d /var/tmp/dropship-store-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/dropship-store-bench.XXXXXX)
trap 'rm -rf "$w" "$shm"' EXIT
head -c 268435456 /dev/urandom > "$w/app-1.0.tgz"
cat > "$w/dispatch.cfg" <<CFG
[app-.*\.tgz]
protocol = local
host = localhost
dest_dir = $w/dest/{timestamp}
CFG
t() { # LABEL BINARY DATA_HOME
    rm -rf "$w/dest" "$w/state" "$3"; mkdir -p "$3"
    s=$(date +%s.%N)
    HOME=$w XDG_STATE_HOME=$w/state XDG_DATA_HOME=$3 "$2" --config "$w/dispatch.cfg" --dispatch "$w/app-1.0.tgz" >/dev/null 2>&1
    e=$(date +%s.%N)
    echo "$1 $(echo "$e - $s" | bc)"
}
i=0
while [ $i -lt "$runs" ]; do
    t base "$base" "$w/data"
    t store-hardlink "$new" "$w/data"
    t store-copy "$new" "$shm/data"
    i=$((i + 1))
done
