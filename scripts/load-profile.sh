#!/usr/bin/env bash
# Load profile (issue 9): 10,000 signed webhooks in bursts of 500 (64 connections) through the
# local host's front door to the real release handler, while a 60,000-response export
# runs and tickets drain at the fake ServiceNow's limit (100 requests/s). Prints webhook
# throughput and p50/p99 latency, the ticket drain time against its floor, the handler's peak
# RSS and the chaos audit row; fails on any lost, duplicated or unexplained item.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test e2e -- --ignored --exact chaos::load_profile --nocapture 2>&1 |
    grep -E -A1 "^LOAD|^CHAOS-AUDIT|test result|panicked"
