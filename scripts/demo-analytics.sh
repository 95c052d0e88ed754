#!/usr/bin/env bash
# The analytics demo: builds the Delta tables from devkit's sandbox dataset through the real
# release binary (`devkit demo-analytics`: Azurite, fake Qualtrics and ServiceNow, then
# ExportPoller → TicketCreator → LoopCloser → AnalyticsBuilder), and draws the charts from those
# tables with standard readers — delta-rs and DuckDB running analytics/sql/duckdb/views.sql,
# matplotlib (scripts/analytics-charts.py, pinned by scripts/install-oracles.sh) — into
# target/demo/: analytics.html and three PNGs (NPS trend, response volume per week, detractors
# by the state of their ticket). Prints the page's path.
#
# Needs: cargo, Node (Azurite, scripts/install-azurite.sh), Python 3.11+ with venv. Loopback only.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${DEMO_OUT:-$root/target/demo}"
cd "$root"
python="$(bash scripts/install-oracles.sh)"
cargo build --release -p qualtrics-bridge -p devkit >&2
mkdir -p "$out"
target/release/devkit demo-analytics --binary target/release/qualtrics-bridge -- \
  "$python" scripts/analytics-charts.py --out "$out" --azurite-from-env
