#!/usr/bin/env bash
# Installs the analytics tests' independent readers, pinned Python `deltalake` (delta-rs),
# `duckdb` and `pyarrow` (which deltalake hands its tables to), and `matplotlib` for the analytics
# demo's chart step (scripts/analytics-charts.py, also tested in CI), from PyPI into
# tools/oracles-venv (idempotent: pip runs only when a pinned version is missing). Prints the
# venv's python on stdout. tests/e2e/analytics_delta.rs runs that python (ANALYTICS_ORACLE_PYTHON
# overrides it).
set -euo pipefail

# Bump deliberately: the tests assert what these readers accept.
PINS=("deltalake==1.6.6" "duckdb==2.0.0" "pyarrow==26.0.1" "matplotlib==3.11.2")

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/tools/oracles-venv"
py="${PYTHON:-python3}"

missing() {
  [ -x "$venv/bin/python" ] || { echo all; return 0; }
  "$venv/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null || echo all
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            print(pin)
    except PackageNotFoundError:
        print(pin)
PY
}

if [ -z "$(missing)" ]; then
  echo "install-oracles: ${PINS[*]} already installed in $venv" >&2
  echo "$venv/bin/python"
  exit 0
fi
command -v "$py" >/dev/null 2>&1 || {
  echo "install-oracles: '$py' not found; install Python 3.9+ (or set PYTHON=/path/to/python3)" >&2
  exit 1
}
if [ ! -x "$venv/bin/python" ]; then
  echo "install-oracles: creating virtualenv $venv" >&2
  mkdir -p "$root/tools"
  "$py" -m venv "$venv" || {
    echo "install-oracles: '$py -m venv' failed; on Debian install python3-venv" >&2
    exit 1
  }
fi
echo "install-oracles: installing ${PINS[*]} from PyPI into $venv" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "${PINS[@]}" >&2
left="$(missing)"
if [ -n "$left" ]; then
  echo "install-oracles: after pip install, still missing: $left" >&2
  exit 1
fi
echo "$venv/bin/python"
