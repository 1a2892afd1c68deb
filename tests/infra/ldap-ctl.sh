#!/usr/bin/env bash
# Stop or (re)start the slapd set up by start-ldap.sh in RUNDIR, keeping its data.
# Tests use this to simulate the directory being down:
#
#   "$SALLYPORT_TEST_LDAP_CTL" stop  "$SALLYPORT_TEST_LDAP_RUNDIR"
#   "$SALLYPORT_TEST_LDAP_CTL" start "$SALLYPORT_TEST_LDAP_RUNDIR"
#
# start returns once slapd answers on its ports (ldap:// and, with a certificate
# checked against the run's CA, ldaps://); stop once the process is gone.
# Both are no-ops when slapd is already in the requested state.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

[ $# -eq 2 ] || die "usage: $0 stop|start|status RUNDIR"
CMD=$1
D=$2
[ -f "$D/slapd.conf" ] && [ -f "$D/env" ] || die "$D is not a slapd run directory (made by start-ldap.sh)"
D=$(cd "$D" && pwd)
. "$D/env"

running_pid() {
  local pid
  [ -f "$D/slapd.pid" ] || return 1
  pid=$(cat "$D/slapd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && owned_by "$pid" "$D/slapd.conf" && echo "$pid"
}

case $CMD in
  stop)
    if pid=$(running_pid); then
      stop_pid "$pid" TERM 10 # SIGTERM = clean shutdown
    fi
    rm -f "$D/slapd.pid"
    ;;
  start)
    if running_pid >/dev/null; then exit 0; fi
    port_free "$LDAP_PORT" || die "cannot start slapd on 127.0.0.1:$LDAP_PORT (LDAP_PORT=N start-ldap.sh picks another port)"
    port_free "$LDAPS_PORT" || die "cannot start slapd on 127.0.0.1:$LDAPS_PORT (LDAPS_PORT=N start-ldap.sh picks another port)"
    rm -f "$D/slapd.pid"
    # -d 256 (stats): stay in the foreground and log binds/searches to slapd.log.
    # setsid: own session, so signals for the caller's process group pass it by.
    setsid /usr/sbin/slapd -d 256 -f "$D/slapd.conf" -h "$LDAP_URI/ $LDAPS_URI/" \
      </dev/null >>"$D/slapd.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 200; i++)); do
      alive "$pid" || break
      # the port was free before, so an answer comes from this slapd
      if ldapsearch -x -H "$LDAP_URI" -s base -b "" namingContexts >/dev/null 2>&1 &&
        LDAPTLS_CACERT=$LDAP_TLS_CA LDAPTLS_REQCERT=demand \
          ldapsearch -x -H "$LDAPS_URI" -s base -b "" namingContexts >/dev/null 2>&1; then
        [ -s "$D/slapd.pid" ] || echo "$pid" >"$D/slapd.pid"
        exit 0
      fi
      sleep 0.05
    done
    echo "slapd did not come up on $LDAP_URI and $LDAPS_URI; last lines of $D/slapd.log:" >&2
    tail -n 20 "$D/slapd.log" >&2
    stop_pid "$pid" TERM 5
    exit 1
    ;;
  status)
    if pid=$(running_pid); then echo "running (pid $pid) on $LDAP_URI and $LDAPS_URI"; else echo "stopped"; exit 3; fi
    ;;
  *) die "usage: $0 stop|start|status RUNDIR" ;;
esac
