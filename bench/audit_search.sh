#!/usr/bin/env bash
# Full-text search over the audit log at scale: seeds EVENTS audit events (default 1,000,000:
# 10,000 sessions of 100 events, 60% with text) into a fresh SQLite store, and into a fresh
# PostgreSQL database when one is available, then prints p50/p99 latency of text searches (a rare
# word, a common word, a fragment, a short word, text with a filter) and of a filter-only search
# as the reference, one page of 50 newest first. Measures, asserts nothing.
#
#   bench/audit_search.sh [EVENTS]
#   tests/infra/run-tests.sh bench/audit_search.sh [EVENTS]    # with PostgreSQL too
#
# PostgreSQL: a database is created (and dropped) through SALLYPORT_TEST_PG_ADMIN_URL, which
# tests/infra/run-tests.sh sets, or SALLYPORT_BENCH_PG_ADMIN_URL.
set -euo pipefail
EVENTS=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release -q -p sallyport-broker --example audit_search_bench
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/audit_search_bench
DIR=$(mktemp -d -t sallyport-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
"$BIN" "sqlite://$DIR/broker.db" "$EVENTS"
echo "SQLite file: $(du -sh "$DIR/broker.db" | cut -f1)"
ADMIN=${SALLYPORT_BENCH_PG_ADMIN_URL:-${SALLYPORT_TEST_PG_ADMIN_URL:-}}
if [ -n "$ADMIN" ]; then
  DB=sp_bench_$$
  psql -q "$ADMIN" -c "CREATE DATABASE $DB"
  trap 'psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1; rm -rf "$DIR"' EXIT
  echo
  "$BIN" "${ADMIN%/*}/$DB" "$EVENTS"
else
  echo "(no PostgreSQL: set SALLYPORT_BENCH_PG_ADMIN_URL or run through tests/infra/run-tests.sh)"
fi
