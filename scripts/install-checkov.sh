#!/usr/bin/env bash
# Installs the pinned checkov from PyPI into tools/checkov-venv (idempotent: pip runs only when
# the pinned version is not already there). Prints the path of the checkov executable on stdout.
# The only network access is this pip install; the scan itself runs offline (--skip-download).
set -euo pipefail

CHECKOV_VERSION="3.3.30"   # the version flex-bicep.md §8 was verified with; bump deliberately

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/tools/checkov-venv"
exe="$venv/bin/checkov"
py="${PYTHON:-python3}"

installed_version() {
  [ -x "$venv/bin/python" ] || return 0
  "$venv/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import version, PackageNotFoundError
try:
    print(version("checkov"))
except PackageNotFoundError:
    pass
PY
}

current="$(installed_version)"
if [ "$current" = "$CHECKOV_VERSION" ] && [ -x "$exe" ]; then
  echo "install-checkov: checkov $CHECKOV_VERSION already installed in $venv" >&2
  echo "$exe"
  exit 0
fi

command -v "$py" >/dev/null 2>&1 || {
  echo "install-checkov: '$py' not found; install Python 3.9+ (or set PYTHON=/path/to/python3)" >&2
  exit 1
}
if [ ! -x "$venv/bin/python" ]; then
  echo "install-checkov: creating virtualenv $venv" >&2
  mkdir -p "$root/tools"
  "$py" -m venv "$venv" || {
    echo "install-checkov: '$py -m venv' failed; on Debian install python3-venv" >&2
    exit 1
  }
fi
echo "install-checkov: installing checkov==$CHECKOV_VERSION from PyPI into $venv (was: ${current:-none})" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
  "checkov==$CHECKOV_VERSION" >&2

current="$(installed_version)"
if [ "$current" != "$CHECKOV_VERSION" ] || [ ! -x "$exe" ]; then
  echo "install-checkov: after pip install, checkov version is '${current:-none}', expected $CHECKOV_VERSION" >&2
  exit 1
fi
echo "$exe"
