#!/usr/bin/env bash
# Throughput and setup time through sallyport (edge + gateway) against plain OpenSSH straight to
# the same node, on this machine over loopback. Prints MB/s and ratios; measures, asserts nothing.
#
#   bench/throughput.sh [SIZE_MB]        (default 256; needs openssh-server installed)
#
# It runs `sallyport demo` (release build) in a temp dir, logs in as the demo engineer, and for the
# baseline signs a key with the demo gateway's node CA so that ssh can reach the node directly.
set -euo pipefail
SIZE=${1:-256}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release -q
BIN=$ROOT/target/release/sallyport
DIR=$(mktemp -d -t sallyport-bench.XXXXXX)
"$BIN" demo --dir "$DIR" >"$DIR/demo.out" 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null; wait $DEMO 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 200); do [ -f "$DIR/demo.env" ] && break; sleep 0.1; done
set -a; . "$DIR/demo.env"; set +a
export SALLYPORT_HOME=$DIR/home
echo "$DEMO_PASSWORD" | "$BIN" login --user "$DEMO_ENGINEER" --password-stdin \
  --totp "$("$BIN" totp --secret "$DEMO_TOTP_SECRET")" --ticket "$DEMO_TICKET" --json >/dev/null
CFG=$SALLYPORT_HOME/ssh_config
# Baseline: straight to the node's sshd with a certificate from the node CA.
ssh-keygen -q -t ed25519 -N '' -f "$DIR/direct"
ssh-keygen -q -s "$DIR/gateway/node_ca" -I bench-direct -n "$DEMO_LOGIN" -V -1m:+1h "$DIR/direct.pub"
NODE_PORT=$(sed -n 's/^ListenAddress 127.0.0.1:\([0-9]*\)$/\1/p' "$DIR/node/sshd_config")
DIRECT=(ssh -F /dev/null -o BatchMode=yes -o LogLevel=ERROR -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o IdentitiesOnly=yes -i "$DIR/direct" -o "CertificateFile=$DIR/direct-cert.pub" -p "$NODE_PORT" "$DEMO_LOGIN@127.0.0.1")
VIA=(ssh -F "$CFG" -o BatchMode=yes node1.acme-prod)

calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); calc "$e - $s"; }
mbps() { calc "$SIZE / $1"; }
ratio() { calc "$1 / $2"; }

printf '%-28s %10s %10s %8s\n' "" "direct" "sallyport" "ratio"
d=$(secs "${DIRECT[@]}" true); v=$(secs "${VIA[@]}" true)
printf '%-28s %9.0fms %9.0fms %8s\n' "setup (ssh ... true)" "$(calc "$d*1000")" "$(calc "$v*1000")" "$(ratio "$v" "$d")"
up() { head -c "${SIZE}M" /dev/zero | "$@" 'cat > /dev/null'; }
down() { "$@" "head -c ${SIZE}M /dev/zero" >/dev/null; }
for dir in up down; do
  d=$(secs $dir "${DIRECT[@]}"); v=$(secs $dir "${VIA[@]}")
  printf '%-28s %8s/s %8s/s %8s\n' "$dir ${SIZE} MB (MB/s)" "$(mbps "$d")" "$(mbps "$v")" "$(ratio "$(mbps "$v")" "$(mbps "$d")")"
done
# Both ways at once through both stages, with the demo's resident memory (edge + gateway +
# broker live in that one process).
before=$(ps -o rss= -p $DEMO)
s=$(date +%s.%N)
n=$(head -c "${SIZE}M" /dev/zero | timeout 300 "${VIA[@]}" cat | wc -c)
e=$(date +%s.%N)
after=$(ps -o rss= -p $DEMO)
echo "both ways ${SIZE} MB at once: $n bytes back in $(calc "$e - $s")s; demo RSS ${before} KiB -> ${after} KiB"
