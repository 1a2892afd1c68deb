#!/usr/bin/env bash
# Throughput and setup time of sallyport (edge + gateway) against OpenSSH on this machine over
# loopback, three paths to the same node (the demo's sshd):
#
#   direct     ssh straight to the node
#   ssh -J     OpenSSH through a stock sshd jump host that this script starts on 127.0.0.1
#   sallyport  ssh with ProxyJump to the edge, through the gateway, as an engineer does
#
#   bench/throughput.sh [SIZE_MB]    (default 1024; needs openssh-server installed; run as root
#                                     or as a user that can start sshd on a loopback port)
#
# For each cipher of CIPHERS (default: aes128-gcm and chacha20-poly1305, set on both hops of
# every path) it moves SIZE_MB up (`cat > /dev/null` on the node), down (`head -c` on the node)
# and both ways at once (`cat` on the node), RUNS times each (default 3), and prints the median
# in MB/s (both ways: MB/s each way), side by side, with the ratio sallyport / ssh -J (> 1: faster
# than ssh -J). Then setup time (`ssh node true`, SETUP_RUNS times, default 50): p50 and p99, and
# the ratio (< 1: faster than ssh -J). Last, the cost of recording: the same transfers through a
# second gateway that skips the recorder — a bench build only (`--features bench-unrecorded` and
# SALLYPORT_BENCH_UNRECORDED=1; a normal build has no such switch).
#
# Beside the rates, the CPU seconds the whole machine spent per GiB moved on each path (every
# process: clients, jump host or edge and gateway, the node's sshd) and the share of the cores left
# idle (/proc/stat): on a small machine the path that needs less CPU per byte wins once the cores
# are busy. It measures and asserts nothing. Other work on the machine moves the numbers: compare the
# columns of one run, not runs. Env: RUNS, SETUP_RUNS (0: no setup runs), CIPHERS,
# DIRS (default "up down both"), SKIP_UNRECORDED=1, KEEP=1.
set -euo pipefail
SIZE=${1:-1024}
RUNS=${RUNS:-3}
SETUP_RUNS=${SETUP_RUNS:-50}
CIPHERS=${CIPHERS:-aes128-gcm@openssh.com chacha20-poly1305@openssh.com}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release -q --features bench-unrecorded
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/sallyport
DIR=$(mktemp -d -t sallyport-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; else echo "kept $DIR" >&2; fi
}
trap cleanup EXIT

# A demo (broker, edge, gateway, node) in $1, logged in as its engineer; prints nothing.
start_demo() {
  local d=$1
  mkdir -p "$d"
  "$BIN" demo --dir "$d" >"$d/demo.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do [ -f "$d/demo.env" ] && break; sleep 0.1; done
  [ -f "$d/demo.env" ] || { cat "$d/demo.out" >&2; echo "the demo did not start" >&2; exit 1; }
  (
    set -a; . "$d/demo.env"; set +a
    export SALLYPORT_HOME=$d/home
    echo "$DEMO_PASSWORD" | "$BIN" login --user "$DEMO_ENGINEER" --password-stdin \
      --totp "$("$BIN" totp --secret "$DEMO_TOTP_SECRET")" --ticket "$DEMO_TICKET" --json >/dev/null
  )
}

start_demo "$DIR/rec"
set -a; . "$DIR/rec/demo.env"; set +a
NODE_PORT=$(sed -n 's/^ListenAddress 127.0.0.1:\([0-9]*\)$/\1/p' "$DIR/rec/node/sshd_config")
# The recording-off gateway: a second demo, its own node.
if [ -z "${SKIP_UNRECORDED:-}" ]; then
  SALLYPORT_BENCH_UNRECORDED=1 start_demo "$DIR/unrec"
fi

# Direct and ssh -J: a certificate from the demo gateway's node CA, as the gateway's own.
ssh-keygen -q -t ed25519 -N '' -f "$DIR/direct"
ssh-keygen -q -s "$DIR/rec/gateway/node_ca" -I bench-direct -n "$DEMO_LOGIN" -V -1m:+2h "$DIR/direct.pub"
# The jump host: a stock sshd on loopback that admits one key and forwards TCP.
mkdir -p "$DIR/jump"
ssh-keygen -q -t ed25519 -N '' -f "$DIR/jump/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$DIR/jump/user_key"
cp "$DIR/jump/user_key.pub" "$DIR/jump/authorized_keys"
JUMP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/jump/sshd_config" <<EOF
ListenAddress 127.0.0.1:$JUMP_PORT
HostKey $DIR/jump/host_key
PidFile $DIR/jump/sshd.pid
AuthorizedKeysFile $DIR/jump/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding yes
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$DIR/jump/sshd_config" 2>"$DIR/jump/sshd.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q 'Server listening' "$DIR/jump/sshd.log" && break; sleep 0.05; done

# One ssh_config per cipher (the first value ssh reads wins, and the ProxyJump ssh reads the same
# file, so both hops of every path use the cipher).
common() {
  cat <<EOF
Host direct jumped
    HostName 127.0.0.1
    Port $NODE_PORT
    User $DEMO_LOGIN
    IdentityFile $DIR/direct
    CertificateFile $DIR/direct-cert.pub
Host jumped
    ProxyJump jumphost
Host jumphost
    HostName 127.0.0.1
    Port $JUMP_PORT
    User $(id -un)
    IdentityFile $DIR/jump/user_key
Host *
    BatchMode yes
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
EOF
}
for c in $CIPHERS; do
  for d in rec unrec; do
    [ -f "$DIR/$d/home/ssh_config" ] || continue
    { echo "Ciphers $c"; cat "$DIR/$d/home/ssh_config"; common; } >"$DIR/$d-$c.conf"
  done
done
# ssh -F <file> <host> for a path and cipher.
target() {
  case $1 in
    direct) echo "-F $DIR/rec-$2.conf direct" ;;
    jump) echo "-F $DIR/rec-$2.conf jumped" ;;
    sallyport) echo "-F $DIR/rec-$2.conf node1.acme-prod" ;;
    unrecorded) echo "-F $DIR/unrec-$2.conf node1.acme-prod" ;;
  esac
}

calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# The machine's CPU time so far, busy and idle, in clock ticks (all cores).
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Seconds of one transfer ($1: up, down, both; then the ssh arguments: -F file host).
transfer() {
  local s e n c0 c1 dir=$1
  shift
  c0=$(cpu_ticks)
  s=$(now)
  case $dir in
    up) head -c "${SIZE}M" /dev/zero | ssh "$@" 'cat > /dev/null' ;;
    down) n=$(ssh "$@" "head -c ${SIZE}M /dev/zero" | wc -c) ;;
    both) n=$(head -c "${SIZE}M" /dev/zero | ssh "$@" cat | wc -c) ;;
  esac
  e=$(now)
  c1=$(cpu_ticks)
  # CPU seconds (all processes, all cores) per GiB moved, and the share of the cores left idle.
  echo "$c0 $c1" | awk -v hz="$(getconf CLK_TCK)" -v gib="$(calc "$SIZE / 1024" 4)" -v k="$key" \
    '{ b = ($3 - $1) / hz; i = ($4 - $2) / hz; printf "%s %.2f %.0f\n", k, b / gib, 100 * i / (b + i) }' >>"$DIR/cpu"
  if [ "$dir" != up ] && [ "$n" != $((SIZE * 1024 * 1024)) ]; then
    echo "$dir through ${*: -1}: $n bytes back, not $((SIZE * 1024 * 1024))" >&2
  fi
  calc "$e - $s" 3
}
# Median MB/s of RUNS transfers (MiB, as `head -c SIZEM` counts).
rate() {
  local i key="$2 $3 $1"
  for i in $(seq 1 "$RUNS"); do transfer "$1" $(target "$2" "$3"); done |
    median | awk -v s="$SIZE" '{ printf "%.0f", s * 1.048576 / $1 }'
}

PATHS="direct jump sallyport"
[ -z "${SKIP_UNRECORDED:-}" ] && PATHS="$PATHS unrecorded"
echo "sallyport throughput bench: $SIZE MiB per transfer, median of $RUNS; $(nproc) cores, $(uname -r)"
echo "MB/s (10^6 bytes/s; both ways: each way)"
for c in $CIPHERS; do
  echo
  printf '%-38s %8s %8s %10s %10s' "$c" direct "ssh -J" sallyport "sp / -J"
  [ -z "${SKIP_UNRECORDED:-}" ] && printf ' %11s %11s' unrecorded "rec / unrec"
  echo
  for dir in ${DIRS:-up down both}; do
    declare -A r=()
    for p in $PATHS; do r[$p]=$(rate $dir $p "$c"); done
    printf '%-38s %8s %8s %10s %10s' "$dir" "${r[direct]}" "${r[jump]}" "${r[sallyport]}" \
      "$(calc "${r[sallyport]} / ${r[jump]}")"
    [ -z "${SKIP_UNRECORDED:-}" ] &&
      printf ' %11s %11s' "${r[unrecorded]}" "$(calc "${r[sallyport]} / ${r[unrecorded]}")"
    echo
  done
done
# What each transfer cost the machine: a path that needs more CPU per byte than the cores have
# to spare runs slower on a small machine, whatever its pacing.
echo
echo "CPU seconds per GiB (every process on the machine, median of $RUNS) / share of the cores idle"
# The median of column $2 (4: CPU seconds per GiB, 5: idle %) of the transfers named $1.
cpu_median() { awk -v k="$1" -v f="$2" '$1 " " $2 " " $3 == k { print $f }' "$DIR/cpu" | median; }
for c in $CIPHERS; do
  printf '%-38s %12s %12s %12s\n' "$c" direct "ssh -J" sallyport
  for dir in ${DIRS:-up down both}; do
    printf '%-38s' "$dir"
    for p in direct jump sallyport; do
      printf ' %12s' "$(calc "$(cpu_median "$p $c $dir" 4)") / $(calc "$(cpu_median "$p $c $dir" 5)" 0)%"
    done
    echo
  done
done

[ "$SETUP_RUNS" = 0 ] && exit 0
# Setup: `ssh node true`, wall time of each run, p50 and p99 (nearest rank).
c=${CIPHERS%% *}
echo
printf '%-38s %8s %8s %10s %10s\n' "setup, ms ($SETUP_RUNS runs, $c)" direct "ssh -J" sallyport "sp / -J"
declare -A p50=() p99=()
for p in direct jump sallyport; do
  for i in $(seq 1 "$SETUP_RUNS"); do
    s=$(now); ssh $(target $p "$c") true; e=$(now); calc "($e - $s) * 1000" 1; echo
  done | sort -g >"$DIR/setup-$p"
  p50[$p]=$(awk -v n="$SETUP_RUNS" 'NR == int((n * 50 + 99) / 100)' "$DIR/setup-$p")
  p99[$p]=$(awk -v n="$SETUP_RUNS" 'NR == int((n * 99 + 99) / 100)' "$DIR/setup-$p")
done
printf '%-38s %8s %8s %10s %10s\n' p50 "${p50[direct]}" "${p50[jump]}" "${p50[sallyport]}" \
  "$(calc "${p50[sallyport]} / ${p50[jump]}")"
printf '%-38s %8s %8s %10s %10s\n' p99 "${p99[direct]}" "${p99[jump]}" "${p99[sallyport]}" \
  "$(calc "${p99[sallyport]} / ${p99[jump]}")"
echo
echo "demo RSS (broker + edge + gateway in one process): $(ps -o rss= -p "${PIDS[0]}") KiB"
