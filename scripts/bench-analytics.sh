#!/usr/bin/env bash
# Analytics benchmark (issue 16, tests/e2e/analytics_bench.rs), one command:
#   1. ~1 GiB of wide export rows (~45 answer cells per response) in Azurite → the real
#      binary's `qualtrics-bridge analytics rebuild`, side by side with DuckDB unpivoting the
#      same NDJSON (from local disk) to Parquet; prints both wall times, the ratio and peak RSS;
#      fails if the bridge's peak RSS > 256 MiB or it takes longer than DuckDB;
#   2. one AnalyticsBuilder timer run after an export of 1,000 responses, at two table sizes:
#      its time and the storage requests it made (counted by a proxy in front of Azurite).
# Env: BENCH_ANALYTICS_MIB (1024), BENCH_BLOB_MIB (64), BENCH_RSS_LIMIT_MIB (256),
# BENCH_RATIO_LIMIT (1.0), BENCH_TABLE_SIZES ("10000 200000"), BENCH_ONLY (rebuild|incremental).
# Needs about 3× BENCH_ANALYTICS_MIB free on the temp disk, and tools/oracles-venv
# (scripts/install-oracles.sh, run by the test).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test e2e analytics_bench:: --no-run || exit 1
status=0
for t in rebuild_against_duckdb incremental_cost_does_not_grow_with_the_table; do
  case "${BENCH_ONLY:-}" in
    "" ) ;;
    rebuild) [ "$t" = rebuild_against_duckdb ] || continue ;;
    incremental) [ "$t" = incremental_cost_does_not_grow_with_the_table ] || continue ;;
  esac
  cargo test --release --test e2e "analytics_bench::$t" -- --exact --ignored --nocapture 2>&1 \
    | grep -E "^BENCH|test result|panicked|assert"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
