#!/usr/bin/env bash
# 1,000,000-line benchmark alone: `seq 1 1000000` on one host through `dropship --dispatch`
# (plain output piped to a file; every line checked, in order), lines/s and dropship's peak
# RSS, next to `ssh host seq 1 1000000 > file`. Same harness and options as bench/fanout.sh.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fanout.sh" --only-lines --hosts 1 "$@"
