#!/usr/bin/env bash
# The test command: every test of the workspace (the real release binary behind devkit's
# local Functions host on real Azurite, fakes for everything external) and the infra gate.
# Installs what it needs (pinned Azurite from npm, pinned checkov from PyPI) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-azurite.sh >/dev/null
# Release profile throughout: the tests run the release handler binary, and one profile
# means one build.
cargo test --release --workspace --all-targets "$@"
# Infra: checkov on the Bicep (parse errors and unskipped failures fail), and proof that the
# infra and package gates can fail.
bash scripts/check-infra.sh
bash scripts/check-infra.sh --self-test
bash scripts/check-package.sh --self-test
