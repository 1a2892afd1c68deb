#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests: its own initdb in RUNDIR,
# run as the `postgres` OS user, on 127.0.0.1:$PG_PORT, trust authentication,
# with database `sallyport_test`. The superuser `postgres` may create further
# databases (tests that want one each connect to SALLYPORT_TEST_PG_ADMIN_URL).
#
# Independent of Debian's default cluster (5432), which is left alone whether or
# not it exists or runs.
#
# Usage: start-postgres.sh RUNDIR      (stop and remove: stop-postgres.sh RUNDIR)
# Env:   PG_PORT (5433)  PG_DB (sallyport_test)
#        PG_OPTIONS: more server options, after the defaults (`-c synchronous_commit=on` for a
#        test that kills the server and counts what it had acknowledged)
# RUNDIR/env also holds PGBIN and PG_SERVER_OPTIONS, to start it again on the same data with
# `pg_ctl -D RUNDIR/data -o "$PG_SERVER_OPTIONS" start` (as the postgres user).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

[ $# -eq 1 ] || die "usage: $0 RUNDIR"
D=$1
PORT=${PG_PORT:-5433}
DB=${PG_DB:-sallyport_test}
RUNAS=postgres # postgres refuses to run as root
[ "$(id -u)" = 0 ] || die "start-postgres.sh must run as root (it runs postgres as the $RUNAS user)"
id "$RUNAS" >/dev/null 2>&1 || die "no '$RUNAS' OS user (run tests/infra/install.sh)"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || die "PostgreSQL server is not installed (run tests/infra/install.sh)"
[ -e "$D/data" ] && die "$D already holds a cluster; stop-postgres.sh $D first"
port_free "$PORT" || die "cannot start PostgreSQL on 127.0.0.1:$PORT (PG_PORT=N picks another port)"

mkdir -p "$D"
D=$(cd "$D" && pwd)
chown "$RUNAS:" "$D"
chmod 755 "$D"
runuser -u "$RUNAS" -- "$PGBIN/initdb" -D "$D/data" -U postgres -A trust \
  -E UTF8 --no-locale --no-sync >"$D/initdb.log" 2>&1 ||
  { cat "$D/initdb.log" >&2; die "initdb failed"; }
# -k: unix socket in RUNDIR, not /var/run/postgresql. Durability off: faster tests.
OPTS="-p $PORT -k $D -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${PG_OPTIONS:-}"
if ! runuser -u "$RUNAS" -- "$PGBIN/pg_ctl" -D "$D/data" -l "$D/postgres.log" -w -t 60 \
  -o "$OPTS" \
  start >/dev/null; then
  tail -n 20 "$D/postgres.log" >&2
  die "PostgreSQL did not start on 127.0.0.1:$PORT"
fi
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"

cat >"$D/env" <<ENV
PG_PORT=$PORT
PG_URL=postgres://postgres@127.0.0.1:$PORT/$DB
PG_ADMIN_URL=postgres://postgres@127.0.0.1:$PORT/postgres
PG_PID=$(head -n 1 "$D/data/postmaster.pid")
PG_DIR=$D
PGBIN=$PGBIN
PG_SERVER_OPTIONS="$OPTS"
ENV
echo "$D"
