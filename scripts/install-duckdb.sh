#!/usr/bin/env bash
# Installs the pinned Python duckdb from PyPI into tools/duckdb-venv (pip runs only when that
# version is not there yet) and prints the venv's python on stdout. The analytics view test
# (tests/analytics_views.rs) runs the DuckDB views with it: a reader no one here wrote.
set -euo pipefail

DUCKDB_VERSION="2.0.0"

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/tools/duckdb-venv"
py="$venv/bin/python"

have="$("$py" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null || true)"
if [ "$have" != "$DUCKDB_VERSION" ]; then
  [ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv" || {
    echo "install-duckdb: cannot create $venv (on Debian install python3-venv)" >&2
    exit 1
  }
  echo "install-duckdb: installing duckdb==$DUCKDB_VERSION into $venv (was: ${have:-none})" >&2
  "$py" -m pip install --disable-pip-version-check --no-input --quiet "duckdb==$DUCKDB_VERSION" >&2
  have="$("$py" -c 'import duckdb; print(duckdb.__version__)')"
  [ "$have" = "$DUCKDB_VERSION" ] || {
    echo "install-duckdb: got duckdb '$have', expected $DUCKDB_VERSION" >&2
    exit 1
  }
fi
echo "$py"
