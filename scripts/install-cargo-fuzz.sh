#!/usr/bin/env bash
# Installs the pinned cargo-fuzz into tools/cargo-fuzz (idempotent; offline once installed).
# Prints the path of the cargo-fuzz binary on stdout. Fuzzing itself needs the nightly
# toolchain (`rustup toolchain install nightly`); installing cargo-fuzz does not.
set -euo pipefail
CARGO_FUZZ_VERSION="0.13.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/tools/cargo-fuzz"
bin="$dir/bin/cargo-fuzz"
installed=""
if [ -x "$bin" ]; then
  # `cargo-fuzz --version` prints "cargo-fuzz 0.13.2".
  installed="$("$bin" --version 2>/dev/null | awk '{print $2}')"
fi
if [ "$installed" != "$CARGO_FUZZ_VERSION" ]; then
  echo "install-cargo-fuzz: installing cargo-fuzz@$CARGO_FUZZ_VERSION into $dir" >&2
  # --debug: an unoptimised build installs in about half the time, and cargo-fuzz only
  # drives cargo and libFuzzer, so its own speed does not matter.
  cargo install --locked --quiet --debug --root "$dir" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2
fi
echo "$bin"
