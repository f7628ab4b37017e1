#!/usr/bin/env bash
# Checks the vendored, patched libssh2 (vendor/README.md) without fetching anything.
#
#   scripts/libssh2-tests.sh                      patch integrity, warnings, cipher matrix
#   LIBSSH2_SRC=/path/to/libssh2 scripts/libssh2-tests.sh
#                                                 ... and libssh2's own tests from that tree
#
# 1. The vendored sources are exactly pristine + vendor/*.patch: the patches reverse-apply
#    to a copy, and applying them again gives the same bytes.
# 2. The patched files compile without a warning (-Wall -Wextra -Werror, OpenSSL back end,
#    the defines vendor/libssh2-sys/build.rs uses on Linux).
# 3. The cipher/MAC matrix against a real sshd: cargo test --test ciphers_live.
# 4. Only with LIBSSH2_SRC (a libssh2 source tree that has tests/; none is on this machine,
#    see vendor/README.md "libssh2's own tests"): libssh2's standalone unit test
#    (test_simple), and through upstream's test_sshd.test (sshd on 127.0.0.1:4711) its sshd
#    tests (test_ssh2, test_auth_pubkey_ok_ed25519_openssh) and test_read once per line of
#    test_read_algos.txt, all built with gcc against the patched sources. Its other Docker
#    tests are not run (no Docker here).
#
# Exit status: 0 when everything that ran passed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/vendor"
lib="$vendor/libssh2-sys/libssh2"
patches=("$vendor/libssh2-whole-packet-crypt.patch" "$vendor/libssh2-agent-rsa-cert.patch")
work="$(mktemp -d /tmp/libssh2-tests.XXXXXX)"
sshd_pid=""
cleanup() {
  if [ -n "$sshd_pid" ]; then kill "$sshd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# What vendor/libssh2-sys/build.rs defines on Linux.
defines=(-DHAVE_LONGLONG -DHAVE_SNPRINTF -DHAVE_UNISTD_H -DHAVE_INTTYPES_H -DHAVE_STDLIB_H
  -DHAVE_SYS_SELECT_H -DHAVE_SYS_SOCKET_H -DHAVE_SYS_IOCTL_H -DHAVE_SYS_TIME_H
  -DHAVE_SYS_UN_H -DHAVE_O_NONBLOCK -DLIBSSH2_OPENSSL -DHAVE_EVP_AES_128_CTR -DHAVE_POLL
  -DHAVE_GETTIMEOFDAY -DLIBSSH2_DH_GEX_NEW -DLIBSSH2_HAVE_ZLIB)

step() { printf '\n== %s\n' "$*"; }

step "1. vendored sources = pristine + patches"
# The patches name libssh2/src/FILE; copy just the files they touch.
mkdir -p "$work/check/libssh2/src"
files=$(sed -n 's|^+++ b/libssh2/src/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | sort -u)
for f in $files; do cp "$lib/src/$f" "$work/check/libssh2/src/$f"; done
(
  cd "$work/check"
  for ((i = ${#patches[@]} - 1; i >= 0; i--)); do
    patch -s -p1 -R --no-backup-if-mismatch < "${patches[$i]}"
  done
  for p in "${patches[@]}"; do patch -s -p1 --no-backup-if-mismatch < "$p"; done
  for f in $files; do
    cmp "libssh2/src/$f" "$lib/src/$f"
  done
)
echo "ok: $(echo $files | tr '\n' ' ')reproduced byte for byte"

step "2. patched files compile without warnings"
for f in $files; do
  gcc -fsyntax-only -Wall -Wextra -Werror "${defines[@]}" \
    -I"$lib/include" -I"$lib/src" "$lib/src/$f"
  echo "ok: $f"
done

step "3. cipher/MAC matrix against sshd (tests/ciphers_live.rs)"
matrix_status=0
(cd "$root" && cargo test --test ciphers_live -- --nocapture) >"$work/matrix.log" 2>&1 ||
  matrix_status=$?
grep -E '^(test |cipher matrix|test result)|SKIPPED' "$work/matrix.log" || true
if [ "$matrix_status" != 0 ]; then
  tail -n 60 "$work/matrix.log" >&2
  echo "FAILED: cargo test --test ciphers_live" >&2
  exit 1
fi

step "4. libssh2's own tests"
if [ -z "${LIBSSH2_SRC:-}" ]; then
  cat <<'EOF'
NOT RUN: no libssh2 source tree with tests/ on this machine (the vendored copy leaves
tests/ out, cargo never downloads the registry's libssh2-sys because of [patch.crates-io],
and this script fetches nothing). Set LIBSSH2_SRC=/path/to/libssh2 to run them; what ran
instead is step 3.
EOF
  exit 0
fi
tests_src="$LIBSSH2_SRC/tests"
[ -f "$tests_src/test_simple.c" ] || { echo "no $tests_src/test_simple.c" >&2; exit 1; }

# The patched library with upstream's tests beside it, as in a libssh2 tree.
tree="$work/libssh2"
cp -a "$lib" "$tree"
rm -rf "$tree/tests"
cp -a "$tests_src" "$tree/tests"
build="$tree/tests"
# the headers the test fixtures include where libssh2_config.h (cmake) would say so
cflags=(-O1 "${defines[@]}" -DHAVE_NETINET_IN_H -DHAVE_ARPA_INET_H -DLIBSSH2_TESTS -I"$tree/include" -I"$tree/src" -I"$build")
libs=(-lssl -lcrypto -lz)

echo "building libssh2 (patched) ..."
mkdir -p "$work/obj"
for c in "$tree"/src/*.c; do
  gcc -c "${cflags[@]}" -o "$work/obj/$(basename "$c" .c).o" "$c" &
  # two cores: at most two compilers at a time
  [ "$(jobs -rp | wc -l)" -ge 2 ] && wait -n
done
wait
ar rcs "$work/libssh2.a" "$work"/obj/*.o

gcc "${cflags[@]}" -o "$build/test_simple" "$build/test_simple.c" "$work/libssh2.a" "${libs[@]}"
runner=("$build/runner.c" "$build/session_fixture.c" "$build/openssh_fixture.c")
sshd_tests=(test_ssh2 test_auth_pubkey_ok_ed25519_openssh test_read)
for t in "${sshd_tests[@]}"; do
  # test_ssh2 has its own main(); the others are a test() for runner.c.
  with=()
  grep -q '^int test(' "$build/$t.c" && with=("${runner[@]}")
  gcc "${cflags[@]}" -o "$build/$t" "$build/$t.c" "${with[@]}" "$work/libssh2.a" "${libs[@]}"
done

# test_read_algos.test runs test_read once per algorithm against libssh2's Docker image;
# the same runs go to test_sshd.test's local sshd (its config enables every algorithm and
# test_read logs in as $USER without Docker): one wrapper per algorithm, chosen the way
# test_read_algos.test chooses, with ~10 MB read each instead of ~140 MB.
runs=(./test_ssh2 ./test_auth_pubkey_ok_ed25519_openssh)
while read -r algo; do
  [ -n "$algo" ] || continue
  case "$algo" in
    *mac-*) var=FIXTURE_TEST_MAC ;;
    *-cert-*) var=FIXTURE_TEST_HOSTKEY ;;
    *) var=FIXTURE_TEST_CRYPT ;;
  esac
  printf '#!/bin/sh\nexec env %s=%s FIXTURE_XFER_COUNT=%s ./test_read\n' \
    "$var" "$algo" "${XFER_COUNT:-10000}" > "$build/test_read-$algo"
  chmod +x "$build/test_read-$algo"
  runs+=("./test_read-$algo")
done < <(tr -d '\r' < "$build/test_read_algos.txt")

failed=0
echo "test_simple:"
if (cd "$build" && ./test_simple); then echo "ok test_simple"; else echo "not ok test_simple"; failed=1; fi

echo "test_sshd.test (${runs[*]}):"
# Loopback only: test_sshd.test passes SSHD_FLAGS through to sshd. The tests log in as
# $USER (unset in CI and under sudo -i).
# TMPDIR: its sshd and ssh logs go under $work and are removed with it.
if (cd "$build" && export USER="${USER:-$(id -un)}" TMPDIR="$work" &&
  SSHD_FLAGS="-o ListenAddress=127.0.0.1" \
  bash ./test_sshd.test "${runs[@]}"); then
  echo "ok test_sshd.test"
else
  echo "not ok test_sshd.test"
  failed=1
fi
exit "$failed"
