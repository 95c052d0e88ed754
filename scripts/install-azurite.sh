#!/usr/bin/env bash
# Installs the pinned Azurite into tools/azurite (idempotent; offline once installed).
# Prints the path of azurite's entry script on stdout.
set -euo pipefail
# 3.37.0 is the first Azurite that accepts service version 2026-04-06, the x-ms-version that
# azure_storage_blob 1.1.0 and azure_storage_queue 1.1.0 (Cargo.lock) send; older ones answer
# 400 InvalidHeaderValue ("The API version 2026-04-06 is not supported by Azurite"). Azurite
# runs without --skipApiVersionCheck, so bump this pin together with those crates.
AZURITE_VERSION="3.37.0"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/tools/azurite"
entry="$dir/node_modules/azurite/dist/src/azurite.js"
installed=""
if [ -f "$dir/node_modules/azurite/package.json" ]; then
  installed="$(node -p "require('$dir/node_modules/azurite/package.json').version")"
fi
if [ "$installed" != "$AZURITE_VERSION" ]; then
  command -v npm >/dev/null || { echo "install-azurite: npm not found; install Node.js 20+" >&2; exit 1; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name":"bridge-tools","private":true}' > "$dir/package.json"
  echo "install-azurite: installing azurite@$AZURITE_VERSION into $dir" >&2
  (cd "$dir" && npm install "azurite@$AZURITE_VERSION" --no-audit --no-fund --loglevel=error >&2)
fi
echo "$entry"
