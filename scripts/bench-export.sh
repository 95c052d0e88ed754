#!/usr/bin/env bash
# Export benchmark (issue 5): ≥ 1 GiB from the fake Qualtrics through the real release handler
# into Azurite, side by side with the SDK's own block upload of the same bytes.
# Prints MB/s, responses/s, the ratio and the handler's peak RSS; fails if RSS > 64 MiB or
# the export takes > 1.5× the SDK upload.
# Env: BENCH_RESPONSES (500000), BENCH_RESPONSE_BYTES (2200), BENCH_DEFLATE_LEVEL (1).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test export_bench -- --ignored --nocapture 2>&1 | grep -E "^BENCH|test result|panicked|assert"
