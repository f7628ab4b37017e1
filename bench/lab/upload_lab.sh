#!/usr/bin/env bash
# Upload throughput lab (issue 3): dropship's transports (examples/upload_lab.rs) side by side
# with OpenSSH scp/sftp and curl -T, on throwaway sshd + vsftpd servers on 127.0.0.1.
#
#   bash bench/upload_lab.sh                 # all variants, 3 rounds, 1 GiB
#   RUNS=1 SIZE=256M ONLY='ftp' bash bench/upload_lab.sh
#   PERF_DIR=/tmp/p RUNS=1 ONLY='gcm 1M$' bash bench/upload_lab.sh   # + perf record -a per run
#
# Rounds are interleaved (every variant once per round) so baselines and our variants see
# the same background load; the table shows the median of the rounds and the ratio to the
# median of `scp` with OpenSSH's default cipher. Must run as root (sshd password/root login,
# vsftpd, a throwaway FTP user). Everything is torn down on exit.
set -euo pipefail

RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
ONLY=${ONLY:-.}          # regex on variant labels
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$ROOT/target/release/examples/upload_lab}
# Same program linked against the patched libssh2 (bench/build_patched_lab.sh); optional.
PLAB=${PLAB:-$ROOT/bench/patched-lab/target/release/upload_lab_patched}
[[ -x $LAB ]] || (cd "$ROOT" && cargo build --release --example upload_lab)

W=$(mktemp -d /tmp/upload_lab.XXXXXX)
chmod 755 "$W"
FTPUSER=uplab$$
FTPPASS=pw$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  id "$FTPUSER" >/dev/null 2>&1 && userdel "$FTPUSER" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

echo "# preparing $SIZE source file in $W" >&2
head -c "$SIZE" /dev/urandom >"$W/src.bin"
BYTES=$(stat -c %s "$W/src.bin")

# --- sshd -------------------------------------------------------------------------------
mkdir -p /run/sshd "$W/dst"
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$W/key"
cp "$W/key.pub" "$W/authorized_keys"
SSH_PORT=$(free_port)
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
Subsystem sftp internal-sftp
MaxStartups 200:30:400
EOF
/usr/sbin/sshd -D -e -f "$W/sshd_config" 2>"$W/sshd.log" &
SSHD_PID=$!
PIDS+=($SSHD_PID)

# --- vsftpd (plain FTP and explicit FTPS on one instance) --------------------------------
useradd -M -d "$W/ftp" -s /bin/bash "$FTPUSER"
usermod -p "$(openssl passwd -6 "$FTPPASS")" "$FTPUSER"
mkdir -p "$W/ftp" "$W/empty"
chown "$FTPUSER" "$W/ftp"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$W/ftp.key" -out "$W/ftp.crt" 2>/dev/null
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
ssl_ciphers=${SSL_CIPHERS:-HIGH}
require_ssl_reuse=${REQUIRE_SSL_REUSE:-NO}
EOF
/usr/sbin/vsftpd "$W/vsftpd.conf" 2>"$W/vsftpd.log" &
VSFTPD_PID=$!
PIDS+=($VSFTPD_PID)
wait_port "$SSH_PORT"
wait_port "$FTP_PORT"

SSHO=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -i "$W/key")
FTPURL="ftp://$FTPUSER:$FTPPASS@127.0.0.1:$FTP_PORT"
COMMON=(--port "$SSH_PORT" --key "$W/key" --src "$W/src.bin")
FCOMMON=(--port "$FTP_PORT" --user "$FTPUSER" --pass "$FTPPASS" --src "$W/src.bin")
GCM=aes128-gcm@openssh.com

# label | destination file | command (eval'd; $DST is the destination path)
VARIANTS=(
  "scp default (chacha20)|$W/dst/f|scp ${SSHO[*]} -P $SSH_PORT $W/src.bin root@127.0.0.1:\$DST"
  "scp -c aes128-gcm|$W/dst/f|scp ${SSHO[*]} -P $SSH_PORT -c $GCM $W/src.bin root@127.0.0.1:\$DST"
  "scp -O default (legacy scp)|$W/dst/f|scp -O ${SSHO[*]} -P $SSH_PORT $W/src.bin root@127.0.0.1:\$DST"
  "sftp default|$W/dst/f|echo 'put $W/src.bin '\$DST | sftp ${SSHO[*]} -b - -P $SSH_PORT root@127.0.0.1"
  "lab sftp libssh2-default 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M"
  "lab sftp chacha20 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher chacha20-poly1305@openssh.com"
  "lab sftp aes128-gcm 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM"
  "lab sftp aes256-gcm 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes256-gcm@openssh.com"
  "lab sftp aes128-ctr+sha2-256-etm 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes128-ctr --mac hmac-sha2-256-etm@openssh.com"
  "lab sftp aes128-ctr+sha2-256 1M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes128-ctr --mac hmac-sha2-256"
  "lab sftp aes128-gcm 32K|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 32K --cipher $GCM"
  "lab sftp aes128-gcm 256K|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 256K --cipher $GCM"
  "lab sftp aes128-gcm 4M|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 4M --cipher $GCM"
  "lab sftp aes128-gcm 1M x2|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM --streams 2"
  "lab sftp aes128-gcm 1M x3|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM --streams 3"
  "lab sftp aes128-gcm 1M x4|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM --streams 4"
  "lab sftp aes128-ctr+sha2-256-etm 1M x2|$W/dst/f|$LAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes128-ctr --mac hmac-sha2-256-etm@openssh.com --streams 2"
  "patched sftp aes128-gcm 1M|$W/dst/f|$PLAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM"
  "patched sftp aes256-gcm 1M|$W/dst/f|$PLAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes256-gcm@openssh.com"
  "patched sftp aes128-ctr+sha2-256-etm 1M|$W/dst/f|$PLAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher aes128-ctr --mac hmac-sha2-256-etm@openssh.com"
  "patched sftp aes128-gcm 4M|$W/dst/f|$PLAB sftp ${COMMON[*]} --dst \$DST --buf 4M --cipher $GCM"
  "patched sftp aes128-gcm 1M x2|$W/dst/f|$PLAB sftp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM --streams 2"
  "patched scp aes128-gcm 1M|$W/dst/f|$PLAB scp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM"
  "lab scp libssh2-default 1M|$W/dst/f|$LAB scp ${COMMON[*]} --dst \$DST --buf 1M"
  "lab scp aes128-gcm 32K|$W/dst/f|$LAB scp ${COMMON[*]} --dst \$DST --buf 32K --cipher $GCM"
  "lab scp aes128-gcm 1M|$W/dst/f|$LAB scp ${COMMON[*]} --dst \$DST --buf 1M --cipher $GCM"
  "curl -T ftp|$W/ftp/f|curl -sS -T $W/src.bin $FTPURL/f"
  "lab ftp io::copy (8K)|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --copy"
  "lab ftp 64K|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --buf 64K"
  "lab ftp 1M|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --buf 1M"
  "lab ftp 4M|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --buf 4M"
  "lab ftp sendfile|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --sendfile"
  "curl -T ftps|$W/ftp/f|curl -sS --ssl-reqd -k -T $W/src.bin $FTPURL/f"
  "lab ftps io::copy (8K)|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --tls --copy"
  "lab ftps 64K|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --tls --buf 64K"
  "lab ftps 1M|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --tls --buf 1M"
  "lab ftps 4M|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --tls --buf 4M"
  "lab ftps 4M tls1.2|$W/ftp/f|$LAB ftp ${FCOMMON[*]} --dst f --tls --tls12 --buf 4M"
)

# What gets negotiated (printed once, for the report).
{
  echo "# libssh2 algorithms vs this sshd:"
  "$LAB" algs "${COMMON[@]}" | sed 's/^/#   /'
  echo "# FTPS: cipher vsftpd picks for an OpenSSL client with default settings (native-tls):"
  echo QUIT | timeout 5 openssl s_client -connect 127.0.0.1:"$FTP_PORT" -starttls ftp 2>/dev/null \
    | grep -E '^(New|    Protocol|    Cipher)' | sed 's/^/#   /' || true
  echo "# FTPS capped at TLS 1.2 (ssl_ciphers=${SSL_CIPHERS:-HIGH}):"
  echo QUIT | timeout 5 openssl s_client -tls1_2 -connect 127.0.0.1:"$FTP_PORT" -starttls ftp 2>/dev/null \
    | grep -E '^(New|    Protocol|    Cipher)' | sed 's/^/#   /' || true
} >&2

# CPU seconds of a server's reaped descendants (per-connection processes end up in the
# listener's cutime+cstime once they exit), so a run's delta is the server's CPU cost.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($16+$17)/hz}' "/proc/$1/stat"; }
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

declare -A MBS CPU NEG PAIR CCPU SCPU
for round in $(seq "$RUNS"); do
  RS= RF= RFS=
  for v in "${VARIANTS[@]}"; do
    IFS='|' read -r label DST cmd <<<"$v"
    [[ $label =~ $ONLY ]] || continue
    [[ $label == patched* && ! -x $PLAB ]] && continue
    rm -f "$DST"
    read -r b0 t0 < <(busy_jiffies)
    s=$(date +%s.%N)
    srv=$SSHD_PID
    [[ $DST == "$W/ftp/"* ]] && srv=$VSFTPD_PID
    sc0=$(server_cpu "$srv"); rm -f "$W/time"
    if [[ -n ${PERF_DIR:-} ]]; then
      # System-wide profile (client + sshd/vsftpd), e.g. perf report --sort comm,dso,sym
      export DST
      slug=$(tr -c 'A-Za-z0-9\n' _ <<<"$label")
      out=$(perf record -a -g -F 499 -o "$PERF_DIR/$slug.data" -- bash -c "$cmd" 2>"$W/err") \
        || { echo "FAILED: $label: $(tail -3 "$W/err")" >&2; continue; }
    else
      # client CPU (user+sys, incl. children such as scp's ssh) via /usr/bin/time
      export DST
      out=$(/usr/bin/time -f 'CLIENTCPU %U %S' -o "$W/time" bash -c "$cmd" 2>"$W/err") \
        || { echo "FAILED: $label: $(tail -3 "$W/err")" >&2; continue; }
    fi
    e=$(date +%s.%N)
    read -r b1 t1 < <(busy_jiffies)
    sleep 0.3  # let the server reap the connection's processes
    ccpu=$(awk '/^CLIENTCPU/{print $2+$3}' "$W/time" 2>/dev/null || echo 0)
    scpu=$(awk -v a="$sc0" -v b="$(server_cpu "$srv")" 'BEGIN{print b-a}')
    got=$(stat -c %s "$DST" 2>/dev/null || echo 0)
    if [[ $got != "$BYTES" ]]; then echo "BAD SIZE: $label: $got" >&2; continue; fi
    if [[ $round == 1 && $label == lab* ]] && ! cmp -s "$W/src.bin" "$DST"; then
      echo "CORRUPT: $label" >&2; continue
    fi
    rm -f "$DST"
    mbs=$(awk -v b="$BYTES" -v s="$s" -v e="$e" 'BEGIN{printf "%.0f", b/(e-s)/1e6}')
    # cores busy machine-wide during the run (client + server + anyone else)
    cores=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN{printf "%.2f", t ? 2*b/t : 0}')
    MBS[$label]+="$mbs "
    # Paired ratio: against the baseline measured earlier in this same round.
    case $label in
      "scp default (chacha20)") RS=$mbs ;;
      "curl -T ftp") RF=$mbs ;;
      "curl -T ftps") RFS=$mbs ;;
    esac
    base=${RS:-0}
    [[ $label == "lab ftp"* ]] && base=${RF:-0}
    [[ $label == "lab ftps"* ]] && base=${RFS:-0}
    [[ $label == "curl -T ftp" ]] && base=${RF:-0}
    [[ $label == "curl -T ftps" ]] && base=${RFS:-0}
    PAIR[$label]+="$(awk -v m="$mbs" -v r="$base" 'BEGIN{printf r ? "%.3f" : "", m/r}') "
    CPU[$label]+="$cores "
    # CPU seconds per GiB moved, client and server: robust against other load on the box
    CCPU[$label]+="$(awk -v c="${ccpu:-0}" -v b="$BYTES" 'BEGIN{printf "%.2f", c*1073741824/b}') "
    SCPU[$label]+="$(awk -v c="$scpu" -v b="$BYTES" 'BEGIN{printf "%.2f", c*1073741824/b}') "
    [[ $out == RESULT* ]] && NEG[$label]=$(awk '{print $6}' <<<"$out")
    printf '# round %s  %-40s %5s MB/s  %s cores busy  cpu s/GiB client %s server %s\n' "$round" "$label" "$mbs" "$cores" "${CCPU[$label]##* }" "${SCPU[$label]##* }" >&2
  done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END{if(NR) print a[int((NR+1)/2)]; else print 0}'; }
printf '\n| %-40s | %9s | %-22s | %-15s | %-11s | %-12s | %s |\n' variant "MB/s med" "runs (MB/s)" "paired ratio" "cores busy" "CPU s/GiB c+s" negotiated
printf '|%s|\n' "------------------------------------------|-----------|------------------------|-----------------|-------------|--------------|-----------"
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r label _ _ <<<"$v"
  [[ -n ${MBS[$label]:-} ]] || continue
  m=$(median "${MBS[$label]}")
  c=$(median "${CPU[$label]}")
  r=$(median "${PAIR[$label]:-}")
  base="scp"
  [[ $label == "lab ftp"* || $label == "curl -T ftp" ]] && base="curl ftp"
  [[ $label == "lab ftps"* || $label == "curl -T ftps" ]] && base="curl ftps"
  cc=$(median "${CCPU[$label]:-}"); sc=$(median "${SCPU[$label]:-}")
  printf '| %-40s | %9s | %-22s | %-15s | %-11s | %-12s | %s |\n' "$label" "$m" "${MBS[$label]% }" "$(printf '%.2fx %s' "$r" "$base")" "$c" "$cc+$sc" "${NEG[$label]:-}"
done
echo
echo "paired ratio = median over rounds of (variant MB/s / baseline MB/s measured in the same round);"
echo "baseline: 'scp default (chacha20)' for SSH variants, 'curl -T ftp' / 'curl -T ftps' for FTP / FTPS."
echo "CPU s/GiB c+s = median CPU seconds per GiB, client (incl. children) + server (sshd/vsftpd session processes)."
echo "On 2 idle cores a single-stream upload is bounded by about 1 GiB / max(c, s, (c+s)/2) seconds."
