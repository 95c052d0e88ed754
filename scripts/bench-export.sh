#!/usr/bin/env bash
# Export benchmark (issues 5, 19): the fake Qualtrics → the real release handler → Azurite
# (on disk), side by side with the SDK's block upload of the same bytes, then the same export
# by `qualtrics-bridge export`. Runs 1 GiB and 4 GiB, each with direct uploads and with
# uploads paced below the download (tests/e2e/export_bench.rs), and fails if any run's peak RSS
# passes the bound of docs/export.md ("Memory", 48 MiB) or the export takes > 1.1× the SDK.
# Env: BENCH_SIZES ("500000 2000000" responses of 2.2 KB), BENCH_SLOW_MBPS (20),
# BENCH_RUNS (3), BENCH_CLI_RUNS (1), BENCH_RESPONSE_BYTES, BENCH_DEFLATE_LEVEL.
# Needs about 3× the largest size free on the temp disk.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test e2e export_bench:: --no-run || exit 1
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for responses in ${BENCH_SIZES:-500000 2000000}; do
  for mbps in 0 "${BENCH_SLOW_MBPS:-20}"; do
    BENCH_RESPONSES=$responses BENCH_UPLOAD_MBPS=$mbps \
      cargo test --release --test e2e export_bench:: -- --ignored --nocapture 2>&1 \
      | grep -E "^BENCH|test result|panicked|assert" | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  done
done
# The bound holds only if it holds for the maximum over every run of every configuration.
awk '/^BENCH max peak RSS/ { if ($6 > h) h = $6; if ($9 > b) b = $9 }
  END { printf "BENCH overall max peak RSS: handler %.1f MiB, backfill %.1f MiB\n", h, b }' "$log"
exit $status
