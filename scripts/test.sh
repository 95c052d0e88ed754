#!/usr/bin/env bash
# The test command: every test of the workspace (the real release binary behind devkit's
# local Functions host on real Azurite, fakes for everything external) and the infra gate.
# Installs what it needs (pinned Azurite from npm, pinned checkov from PyPI) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-azurite.sh >/dev/null
# Release profile throughout: the tests run the release handler binary, and one profile
# means one build.
# Every local host leaves what its handler printed, and the secrets and respondent data the
# fakes handed out, in $out; the redaction scan then checks all of it, and the test log too.
out="target/test-output"
rm -rf "$out" && mkdir -p "$out"
BRIDGE_TEST_OUTPUT_DIR="$PWD/$out" cargo test --release --workspace --all-targets "$@" 2>&1 |
  tee "$out/cargo-test.log"
# A filtered run may start few hosts; the whole suite must have started many.
min_outputs=$([ $# -eq 0 ] && echo 25 || echo 0)
cargo run --release --quiet -p devkit -- scan-output "$out" --min-outputs "$min_outputs"
# Infra: checkov on the Bicep (parse errors and unskipped failures fail), and proof that the
# infra and package gates can fail.
bash scripts/check-infra.sh
bash scripts/check-infra.sh --self-test
bash scripts/check-package.sh --self-test
