#!/usr/bin/env bash
# The test command: every test of the workspace (the real release binary behind devkit's
# local Functions host on real Azurite, fakes for everything external), a bounded fuzz run
# and the infra gate. Installs what it needs (pinned Azurite from npm, pinned checkov from
# PyPI, pinned cargo-fuzz from crates.io) on first use. FUZZ_SECONDS sets the fuzz time per
# target (default 20; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-azurite.sh >/dev/null
bash scripts/install-oracles.sh >/dev/null
# Release profile throughout: the tests run the release handler binary, and one profile
# means one build. Every local host leaves what its handler printed, and the secrets and
# respondent data the fakes handed out, in $out; the redaction scan then checks all of it,
# and the test log too.
out="target/test-output"
rm -rf "$out" && mkdir -p "$out"
BRIDGE_TEST_OUTPUT_DIR="$PWD/$out" cargo test --release --workspace --all-targets "$@" 2>&1 |
  tee "$out/cargo-test.log"
# A filtered run may start few hosts; the whole suite must have started many.
min_outputs=$([ $# -eq 0 ] && echo 25 || echo 0)
cargo run --release --quiet -p devkit -- scan-output "$out" --min-outputs "$min_outputs"
# Fuzzing needs nightly. Without it the committed corpus was still replayed above
# (tests/fuzz_corpus.rs), so only the search for new inputs is skipped.
fuzz_seconds="${FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" = 0 ]; then
  echo "test: fuzzing skipped (FUZZ_SECONDS=0)" >&2
elif ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "test: no nightly toolchain; fuzzing skipped (the corpus replay ran)" >&2
else
  # Unoptimised fuzz build: it is most of the time fuzzing adds here (docs/fuzzing.md).
  FUZZ_BUILD="${FUZZ_BUILD:-dev}" bash scripts/fuzz.sh "$fuzz_seconds"
fi
# Infra: checkov on the Bicep (parse errors and unskipped failures fail), and proof that the
# infra and package gates can fail.
bash scripts/check-infra.sh
bash scripts/check-infra.sh --self-test
bash scripts/check-package.sh --self-test
