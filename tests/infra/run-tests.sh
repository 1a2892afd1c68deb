#!/usr/bin/env bash
# Run sallyport's checks and tests on a Debian machine, as root:
#
#   tests/infra/run-tests.sh                 # everything (what CI runs, via .ci/run)
#   tests/infra/run-tests.sh CMD [ARGS...]   # start the services, run CMD with the
#                                            # SALLYPORT_TEST_* env set, stop them
#                                            # e.g. tests/infra/run-tests.sh cargo test --test ldap
#
# 1. installs what is missing (install.sh; a no-op on a prepared machine),
# 2. starts a throwaway slapd (127.0.0.1:$LDAP_PORT, default 3890, plain and StartTLS;
#    LDAPS on 127.0.0.1:$LDAPS_PORT, default 3891) and PostgreSQL
#    (127.0.0.1:$PG_PORT, default 5433) in a fresh temp dir; services left behind
#    by a crashed earlier run are found through /tmp/sallyport-test-infra/last-rundir
#    and stopped first; a port held by anything else makes it fail with a clear message,
# 3. exports for the tests:
#      SALLYPORT_TEST_LDAP_URI            ldap://127.0.0.1:3890 (also offers StartTLS)
#      SALLYPORT_TEST_LDAP_LDAPS_URI      ldaps://127.0.0.1:3891
#      SALLYPORT_TEST_LDAP_CA_FILE        PEM of the throwaway CA that signed slapd's TLS
#                                         certificate, which names IP:127.0.0.1 only (so
#                                         ldaps://localhost:3891 is a wrong host name)
#      SALLYPORT_TEST_LDAP_OTHER_CA_FILE  PEM of another CA, which signed nothing slapd
#                                         serves (a wrong CA)
#      SALLYPORT_TEST_LDAP_BASE           dc=example,dc=com
#      SALLYPORT_TEST_LDAP_BIND_DN        cn=sallyport,ou=services,dc=example,dc=com
#      SALLYPORT_TEST_LDAP_BIND_PASSWORD  svc-pw
#      SALLYPORT_TEST_LDAP_ADMIN_DN       cn=admin,dc=example,dc=com (may modify the directory)
#      SALLYPORT_TEST_LDAP_ADMIN_PASSWORD admin-pw
#      SALLYPORT_TEST_LDAP_RUNDIR         slapd's run dir, for
#      SALLYPORT_TEST_LDAP_CTL            .../tests/infra/ldap-ctl.sh (stop|start RUNDIR: LDAP down/up)
#      SALLYPORT_TEST_PG_URL              postgres://postgres@127.0.0.1:5433/sallyport_test
#      SALLYPORT_TEST_PG_ADMIN_URL        postgres://postgres@127.0.0.1:5433/postgres (superuser,
#                                         may CREATE DATABASE)
#      SALLYPORT_TEST_STORE               sqlite | postgres (per run, below)
# 4. runs, continuing after a failure so that one run shows everything:
#      cargo fmt --all --check
#      cargo clippy --workspace --all-targets -- -D warnings
#      cargo test --workspace                 with SALLYPORT_TEST_STORE=sqlite
#      cargo test --workspace --test '*'      with SALLYPORT_TEST_STORE=postgres (integration tests)
# 5. stops everything it started (also on failure or Ctrl-C) and prints, last,
#      N passed, M failed
#    summed over cargo test's "test result:" lines of both runs; a step that failed
#    without a failing test to show for it (fmt, clippy, a build error) adds 1 to M.
#    Exit status 0 only when every step succeeded. A run whose failures are at most
#    five tests runs those tests once more; tests that pass then count as passed and
#    are named as flaky in the summary (a test that fails twice fails the run).
#
# KEEP=1 keeps the service directories (logs: slapd.log, postgres.log) for inspection.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || die "run-tests.sh must run as root (it installs packages, runs PostgreSQL as the postgres user and sshd)"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
if ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  command -v rustup >/dev/null || die "cargo fmt and cargo clippy are needed (rustfmt, clippy)"
  rustup component add rustfmt clippy || die "cannot add the rustfmt and clippy components"
fi

export LDAP_PORT=${LDAP_PORT:-3890} LDAPS_PORT=${LDAPS_PORT:-3891} PG_PORT=${PG_PORT:-5433}

# One run at a time (the ports are fixed). The lock dies with its holder, so a
# crashed run never blocks the next one.
STATE=/tmp/sallyport-test-infra
mkdir -p "$STATE"
exec 9>"$STATE/lock"
if ! flock -n 9; then
  echo "run-tests.sh: another run is in progress; waiting for it to finish" >&2
  flock 9
fi
# Children must not inherit fd 9: a daemon holding it would keep the lock forever.
# Every command below runs with `9>&-`.

# Services of an earlier run that died without cleaning up.
if [ -f "$STATE/last-rundir" ]; then
  old=$(cat "$STATE/last-rundir")
  if [ -n "$old" ] && [ -d "$old" ]; then
    echo "run-tests.sh: stopping services left by an earlier run in $old" >&2
    "$HERE/stop-ldap.sh" "$old/ldap" 9>&-
    "$HERE/stop-postgres.sh" "$old/pg" 9>&-
    rm -rf "$old"
  fi
  rm -f "$STATE/last-rundir"
fi

"$HERE/install.sh" 9>&- || die "installing the test dependencies failed"

RUN=$(mktemp -d -t sallyport-it.XXXXXX)
chmod 755 "$RUN" # the postgres user must reach $RUN/pg
echo "$RUN" >"$STATE/last-rundir"
cleanup() {
  "$HERE/stop-ldap.sh" "$RUN/ldap" 9>&-
  "$HERE/stop-postgres.sh" "$RUN/pg" 9>&-
  if [ -n "${KEEP:-}" ]; then
    echo "run-tests.sh: kept $RUN" >&2
  else
    rm -rf "$RUN"
    rm -f "$STATE/last-rundir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$HERE/start-ldap.sh" "$RUN/ldap" >/dev/null 9>&- || die "starting slapd failed"
"$HERE/start-postgres.sh" "$RUN/pg" >/dev/null 9>&- || die "starting PostgreSQL failed"
. "$RUN/ldap/env"
. "$RUN/pg/env"

export SALLYPORT_TEST_LDAP_URI=$LDAP_URI
export SALLYPORT_TEST_LDAP_LDAPS_URI=$LDAPS_URI
export SALLYPORT_TEST_LDAP_CA_FILE=$LDAP_TLS_CA
export SALLYPORT_TEST_LDAP_OTHER_CA_FILE=$LDAP_TLS_OTHER_CA
export SALLYPORT_TEST_LDAP_BASE=$LDAP_BASE
export SALLYPORT_TEST_LDAP_BIND_DN=$LDAP_SERVICE_DN
export SALLYPORT_TEST_LDAP_BIND_PASSWORD=$LDAP_SERVICE_PW
export SALLYPORT_TEST_LDAP_ADMIN_DN=$LDAP_ADMIN_DN
export SALLYPORT_TEST_LDAP_ADMIN_PASSWORD=$LDAP_ADMIN_PW
export SALLYPORT_TEST_LDAP_RUNDIR=$RUN/ldap
export SALLYPORT_TEST_LDAP_CTL=$HERE/ldap-ctl.sh
export SALLYPORT_TEST_PG_URL=$PG_URL
export SALLYPORT_TEST_PG_ADMIN_URL=$PG_ADMIN_URL
echo "run-tests.sh: slapd on $LDAP_URI and $LDAPS_URI, PostgreSQL on 127.0.0.1:$PG_PORT (run dir $RUN)"

cd "$ROOT" || die "cannot cd to $ROOT"

# A command given on the command line: run just that with the services up.
if [ $# -gt 0 ]; then
  "$@" 9>&-
  exit $?
fi

PASSED=0
FAILED=0
STEPS=()

# step NAME CMD...: run a check; record its outcome.
step() {
  local name=$1 rc
  shift
  echo
  echo "==> $name: $*"
  "$@" 9>&-
  rc=$?
  if [ $rc -eq 0 ]; then
    STEPS+=("ok      $name")
  else
    STEPS+=("FAILED  $name (exit $rc)")
    FAILED=$((FAILED + 1))
  fi
}

# test_step NAME CMD...: run cargo test; add up its "test result:" lines.
test_step() {
  local name=$1 rc log counts p f
  shift
  log="$RUN/$name.log"
  echo
  echo "==> $name: $*"
  "$@" 2>&1 9>&- | tee "$log" 9>&-
  rc=${PIPESTATUS[0]}
  counts=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
    /test result:/ {
      if (match($0, /[0-9]+ passed/)) p += substr($0, RSTART, RLENGTH - 7)
      if (match($0, /[0-9]+ failed/)) f += substr($0, RSTART, RLENGTH - 7)
    }
    END { printf "%d %d\n", p, f }')
  read -r p f <<<"$counts"
  # A test that failed is run once more, alone with the others that failed. One
  # that passes then is reported as flaky, by name, in the summary (and still
  # needs its cause found); one that fails again fails the step.
  local names flaky=""
  names=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '/^test .* \.\.\. FAILED$/ { print $2 }' | sort -u)
  if [ $rc -ne 0 ] && [ "$f" -gt 0 ] && [ -n "$names" ] && [ "$(wc -l <<<"$names")" -le 5 ]; then
    echo
    echo "==> $name: running the failed tests once more:" $names
    # shellcheck disable=SC2086
    "$@" -- --exact $names 2>&1 9>&- | tee "$log.rerun" 9>&-
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then
      rc=0
      p=$((p + f))
      f=0
      flaky="; flaky, passed when run again: $(tr '\n' ' ' <<<"$names" | sed 's/ $//')"
    fi
  fi
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  if [ $rc -eq 0 ]; then
    STEPS+=("ok      $name ($p passed$flaky)")
  else
    STEPS+=("FAILED  $name (exit $rc; $p passed, $f failed)")
    # a build error or a crashed test binary: count the step itself as a failure
    [ "$f" -gt 0 ] || FAILED=$((FAILED + 1))
  fi
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
test_step test-sqlite env SALLYPORT_TEST_STORE=sqlite cargo test --workspace --no-fail-fast
test_step test-postgres env SALLYPORT_TEST_STORE=postgres cargo test --workspace --no-fail-fast --test '*'

echo
echo "==> summary"
for s in "${STEPS[@]}"; do echo "  $s"; done
echo "$PASSED passed, $FAILED failed"
failed_steps=0
for s in "${STEPS[@]}"; do case $s in FAILED*) failed_steps=1 ;; esac; done
exit $failed_steps
