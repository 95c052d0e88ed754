#!/usr/bin/env bash
# Closing-the-loop benchmark (issue 17): 1,000 signed Zendesk resolution events → TicketEvents →
# LoopCloser → the fake Qualtrics at its documented per-endpoint rate limits
# (tests/e2e/loop_bench.rs). Prints one `BENCH loop:` line; fails on a lost write-back, a duplicate
# follow-up, poison, or a total time over 1.2× the minimum the limits allow.
# Env: LOOP_BENCH_N (1000).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test e2e loop_bench:: --no-run || exit 1
cargo test --release --test e2e loop_bench:: -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -oE "BENCH .*|test result.*|panicked.*|assert.*"
exit "${PIPESTATUS[0]}"
