#!/usr/bin/env bash
# Stop the cluster started by start-postgres.sh RUNDIR and remove RUNDIR (KEEP=1 keeps it).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
[ $# -eq 1 ] || die "usage: $0 RUNDIR"
D=$1
[ -d "$D" ] || exit 0
D=$(cd "$D" && pwd)
if [ -f "$D/data/postmaster.pid" ]; then
  pid=$(head -n 1 "$D/data/postmaster.pid")
  # SIGINT = "fast" shutdown (pg_ctl -m fast); only if it is really this cluster's postmaster
  if [ -n "$pid" ] && owned_by "$pid" "$D/data"; then
    stop_pid "$pid" INT 30
  fi
fi
[ -n "${KEEP:-}" ] || rm -rf "$D"
