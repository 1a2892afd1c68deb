#!/usr/bin/env bash
# Certificate issuance (POST /v1/certificates at 1, 8 and 64 in flight; `sallyport login` end to
# end) beside the raw signing rate, with the broker as its own release process and the test
# slapd as its directory. Measures, asserts nothing. Run it through the test runner (slapd):
#
#   tests/infra/run-tests.sh bench/issuance.sh
#
# Knobs (environment): REQUESTS=2000 (per level), RAW=20000 (certificates signed in process).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q --bench issuance
