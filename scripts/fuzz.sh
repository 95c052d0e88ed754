#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [seconds-per-target]
# (default 20). Fails on any crash (an artifact lands in fuzz/artifacts/<target>/), prints
# executions/s per target. Needs the nightly toolchain; installs the pinned cargo-fuzz.
# New inputs are discarded unless FUZZ_NEW_INPUTS=<dir> keeps them in <dir>/<target>, to be
# merged into the committed corpus with `cargo fuzz cmin` (docs/fuzzing.md).
# FUZZ_BUILD=dev builds unoptimised: a much shorter build for short runs (scripts/test.sh),
# at a fraction of the executions/s of the default optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
case "$seconds" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2 ;; esac

rustup run nightly rustc --version >/dev/null 2>&1 \
  || { echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 1; }
cargo_fuzz="$(bash scripts/install-cargo-fuzz.sh)"
export RUSTUP_TOOLCHAIN=nightly
# No AddressSanitizer: the library and harness are safe Rust, where ASan finds little, and
# without it the build is shorter and each execution about twice as fast. Debug assertions
# and overflow checks stay on (cargo-fuzz's default).
flags=(--sanitizer none)
case "${FUZZ_BUILD:-release}" in
  release) ;;
  dev) flags+=(--dev) ;;
  *) echo "fuzz: FUZZ_BUILD must be release or dev" >&2; exit 2 ;;
esac
"$cargo_fuzz" fuzz build "${flags[@]}"

failed=0
for target in $("$cargo_fuzz" fuzz list); do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
  log="$(mktemp)"
  # New inputs go to a scratch directory: the committed corpus changes only by
  # `cargo fuzz cmin`, so a CI run leaves the work tree clean.
  if [ -n "${FUZZ_NEW_INPUTS:-}" ]; then
    scratch="$FUZZ_NEW_INPUTS/$target"
    mkdir -p "$scratch"
  else
    scratch="$(mktemp -d)"
  fi
  status=0
  "$cargo_fuzz" fuzz run "${flags[@]}" "$target" "$scratch" "$corpus" -- \
    -max_total_time="$seconds" -max_len=16384 \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}')"
  per_sec="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}')"
  kept="$(find "$scratch" -type f | wc -l)"
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "fuzz: $target FAILED (exit $status):" >&2
    grep -A3 -m1 'panicked at' "$log" >&2 || true
    grep -A2 -m1 'Failing input:' "$log" >&2 || tail -n 20 "$log" >&2
  fi
  printf 'fuzz: %-18s %4ss  %10s execs  %7s exec/s  corpus %s committed + %s new  %s\n' \
    "$target" "$seconds" "$execs" "$per_sec" "$(find "$corpus" -type f | wc -l)" "$kept" \
    "$([ "$status" -eq 0 ] && echo ok || echo CRASH)"
  rm -f "$log"
  [ -n "${FUZZ_NEW_INPUTS:-}" ] || rm -rf "$scratch"
done
exit "$failed"
