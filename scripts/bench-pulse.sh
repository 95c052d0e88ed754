#!/usr/bin/env bash
# Pulse benchmark (issue 18): one ops event naming 10,000 people → OpsEvents → PulseSender →
# the fake Qualtrics at the reference's rate limits (tests/e2e/pulse_bench.rs). Prints one
# `BENCH pulse:` line (total time, the minimum the limits allow for the calls made, their
# ratio, the handler's peak RSS, duplicate sends); fails on a duplicate send, an unreached
# person, poison, more than one distribution, a ratio over 1.2 or a peak RSS over 64 MiB.
# Env: PULSE_BENCH_N (10000).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test e2e pulse_bench:: --no-run || exit 1
cargo test --release --test e2e pulse_bench:: -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -oE "BENCH .*|test result.*|panicked.*|assert.*"
exit "${PIPESTATUS[0]}"
