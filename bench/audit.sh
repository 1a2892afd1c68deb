#!/usr/bin/env bash
# Durable audit events per second: the gateway's spool (appends by 1, 16 and 64 writers; batches)
# beside raw write + fdatasync on the same filesystem, and the broker's ingest of signed batches
# (its own release process). Measures, asserts nothing. Run it through the test runner:
#
#   tests/infra/run-tests.sh bench/audit.sh
#   SALLYPORT_TEST_STORE=postgres tests/infra/run-tests.sh bench/audit.sh
#
# Knobs (environment): EVENTS=5000 (per spool row), INGEST=20000 (records per ingest row),
# SPOOL_DIR=/var/tmp (where the spool is written: put it on the filesystem a gateway would use).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q --bench audit
