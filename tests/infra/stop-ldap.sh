#!/usr/bin/env bash
# Stop the slapd started by start-ldap.sh RUNDIR and remove RUNDIR (KEEP=1 keeps it).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
[ $# -eq 1 ] || die "usage: $0 RUNDIR"
D=$1
[ -d "$D" ] || exit 0
if [ -f "$D/slapd.conf" ] && [ -f "$D/env" ]; then
  "$HERE/ldap-ctl.sh" stop "$D"
fi
[ -n "${KEEP:-}" ] || rm -rf "$D"
