#!/usr/bin/env bash
# Chaos (issue 9): every scenario of tests/e2e/chaos.rs — the bounded ones CI runs and the long
# `everything_long` — one after the other, then a per-scenario audit table. Each scenario drives
# the real release handler behind devkit's local host on Azurite (on disk) with the fake
# Qualtrics, ServiceNow and Zendesk while it injects faults, and fails on any lost, duplicated
# or unexplained item. Exit status: cargo's.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --test e2e chaos:: -- --include-ignored --skip load_profile --nocapture \
    --test-threads=1 2>&1 | tee "$log" | grep -E "^test |test result|panicked"
status=${PIPESTATUS[0]}
echo
printf '%-18s %9s %8s %5s %8s %7s %7s %10s %5s %5s %5s %11s %8s %5s\n' \
    scenario responses exported live ticketed lookup parked superseded lost dup extra unexplained restarts secs
grep '^CHAOS-AUDIT|' "$log" | while IFS='|' read -r _ name resp exp live tick look park sup lost dup extra unexp rest secs; do
    printf '%-18s %9s %8s %5s %8s %7s %7s %10s %5s %5s %5s %11s %8s %5s\n' \
        "$name" "$resp" "$exp" "$live" "$tick" "$look" "$park" "$sup" "$lost" "$dup" "$extra" "$unexp" "$rest" "$secs"
done
cat <<'LEGEND'

responses: in the fake Qualtrics (history + live); exported: in the export blobs exactly once;
live: recorded while the bridge ran (each needs one ticket or an explained poison entry);
ticketed: exactly one ticket; lookup: ticket found by lookup after a crash; parked: poison entry,
no ticket, ledger failed with a reason; superseded: a poison copy whose response another copy
ticketed (ledger: created); lost/dup/extra/unexplained must be 0.
LEGEND
exit "$status"
